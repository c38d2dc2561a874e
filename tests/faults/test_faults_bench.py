"""A short run of bench/faults.py on both backends, each scenario alone (proxy outages only: a real
PostgreSQL restart would break the other tests running in parallel)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("scenario", ["outage", "hostile", "corrupt", "skew"])
def test_fault_scenario_loses_nothing(backend: str, scenario: str) -> None:
    done = subprocess.run(
        [sys.executable, "bench/faults.py", "--backend", backend, "--quick", "--outage", "proxy", "--only", scenario],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "{}"
    result = json.loads(last)[scenario]
    assert done.returncode == 0 and result["pass"], f"{result}\n{done.stderr[-3000:]}"
    assert result["lost"] == 0 and result["overlapping_runs"] == 0
    if scenario == "outage" and backend == "postgres":
        assert result["answers_503_clear"] and result["worker_logged_outage"]
        assert result["orders_half_saved"] == 0 and result["acknowledged_but_missing"] == 0
    if scenario == "outage" and backend == "sqlite":
        assert set(result["http_answers"]) == {"201"} and result["locked_in_logs"] == 0
    if scenario == "hostile":
        assert {name: r["state"] for name, r in result["hostile"].items()} == dict.fromkeys(result["hostile"], "dead")
    if scenario == "skew":
        assert result["worker_clock_offsets"] == [-30, 30] and result["cron_double_fires"] == 0 and result["double_runs"] == 0
