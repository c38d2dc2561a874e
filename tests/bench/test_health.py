"""A short health run (a minute, a low rate, one pinning transaction) runs end to end on both backends."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_short_health_run_reports_each_minute_and_draws_the_chart(backend: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/health.py", "--backend", backend, "--minutes", "1", "--rate", "100", "--workers", "1",
         "--pins", "1", "--pin-first", "10", "--pin-seconds", "30", "--label", "suite", "--out", str(tmp_path)],
        cwd=ROOT, check=False, capture_output=True, text=True, timeout=220,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[1].startswith("min  1 pinned")
    summary = json.loads(lines[-1])
    assert summary["enqueued"] > 0 and summary["completed"] > 0
    (minute,) = summary["per_minute"]
    assert minute["pinned"] and minute["claims"] > 0 and minute["claim_p99_ms"] >= minute["claim_p50_ms"] > 0
    if backend == "postgres":
        assert summary["dead_max"] > 0  # every claim and completion leaves a row version behind
        assert "conveyor_jobs_claim" in minute["sizes_mb"] or "conveyor_jobs" in minute["sizes_mb"]
    svg = ET.parse(tmp_path / f"health-{backend}-suite.svg").getroot()
    assert len(svg.findall("{http://www.w3.org/2000/svg}polyline")) == 4  # p99, p50, backlog, dead tuples
    kept = json.loads((tmp_path / f"health-{backend}-suite.json").read_text())
    assert len(kept["samples"]) == 6
