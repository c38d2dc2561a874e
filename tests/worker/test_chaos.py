"""A short run of bench/chaos.py: workers SIGKILLed while draining; nothing lost, no overlapping runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_short_chaos_run_loses_nothing(backend: str) -> None:
    run = subprocess.run(
        [sys.executable, "bench/chaos.py", "--backend", backend, "--jobs", "300", "--kills", "3", "--interval", "0.7", "--timeout", "90"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, result
    assert result["kills"] == 3
    assert result["completed"] == 300 and result["lost"] == 0
    assert result["overlapping_runs"] == 0
    assert result["runs"] >= 300
