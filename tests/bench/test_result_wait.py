"""bench/result_wait.py runs on both backends and prints its wake-up figures (not judged here: timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_result_wait_bench_prints_wake_up_figures_for_both_backends() -> None:
    done = subprocess.run(
        [sys.executable, "bench/result_wait.py", "--jobs", "20"], cwd=ROOT, check=False, capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert [f["backend"] for f in figures] == ["sqlite", "postgres"]
    for f in figures:
        assert f["jobs"] == 20 and 0 < f["wake_p50_ms"] <= f["wake_p95_ms"] <= f["wake_max_ms"]
