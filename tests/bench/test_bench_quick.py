"""The benchmark's quick mode runs end to end on both backends and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = (
    "enqueue_single_per_s",
    "enqueue_bulk_per_s",
    "drain_per_s",
    "drain_cpu_us_per_job",
    "drain_2proc_per_s",
    "pickup_p50_ms",
    "pickup_p99_ms",
    "pickup_fast_poll_p50_ms",
    "pickup_fast_poll_p99_ms",
    "sleep_workload_s",
    "bare_sql_per_s",
    "bare_sql_cpu_us_per_job",
    "enqueue_single_bare_per_s",
    "enqueue_bulk_bare_per_s",
    "drain_c10_per_s",
    "bare_sql_c10_per_s",
    "drain_c10_cpu_us_per_job",
    "bare_sql_c10_cpu_us_per_job",
    "idle_rss_mb",
    "peak_rss_mb",
    "rss_growth_mb",
)


@pytest.mark.slow
@pytest.mark.timeout(620)  # ~50 s alone; a loaded machine (the whole suite beside it) took over 85
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_quick_bench_reports_every_figure(backend: str, tmp_path: Path) -> None:
    out = tmp_path / f"{backend}.json"
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--backend", backend, "--quick", "--json", "--out", str(out)],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,  # what it proves is that every figure is reported, not how fast
    )
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text())
    assert printed["backend"] == backend
    figures = printed["figures"]
    for name in FIGURES:
        assert figures[name]["median"] >= 0, name
        assert len(figures[name]["runs"]) == 1, name
    for name in ("enqueue_single_per_s", "enqueue_bulk_per_s", "drain_per_s", "drain_2proc_per_s", "bare_sql_per_s"):
        assert figures[name]["median"] > 0, name
    assert set(figures["growth_per_s"]) == {"0", "20000"}
    assert all(v["median"] > 0 for v in figures["growth_per_s"].values())
    for ratio in ("drain_over_bare_sql", "drain_c10_over_bare_sql", "enqueue_single_over_bare", "enqueue_bulk_over_bare"):
        assert printed["ratios"][ratio] > 0, ratio
    if backend == "postgres":
        assert printed["ratios"]["aenqueue_single_over_bare"] > 0
    else:  # the enqueuer that ran while two workers drained: every call timed, the drain measured both ways
        assert figures["contended_enqueue_enqueues"]["median"] > 0
        assert figures["contended_enqueue_p50_ms"]["median"] <= figures["contended_enqueue_max_ms"]["median"]
        assert printed["ratios"]["contended_drain_over_alone"] > 0
    assert 0 < printed["ratios"]["growth_largest_over_empty"]
    assert figures["pickup_p50_ms"]["median"] <= figures["pickup_p99_ms"]["median"]
    assert figures["sleep_workload_s"]["median"] >= 0.95  # 1,000 × 50 ms over 50 slots cannot beat 1 s
    assert set(printed["targets"]) and all(isinstance(v, bool) for v in printed["targets"].values())
