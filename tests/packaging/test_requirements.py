"""What the suite needs besides Python, and what it does without it: skip on a developer's machine, fail in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ONE_CONTRACT_TEST = "tests/contract/test_insights.py::test_prune_keeps_newest_n_per_type"


def pytest_without_postgres(ci: bool) -> subprocess.CompletedProcess[str]:
    """One contract test (SQLite and PostgreSQL) with PostgreSQL pointed at a port nobody listens on."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS")}
    env["CONVEYOR_TEST_PG"] = "postgresql://root@127.0.0.1:9/test"
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-rs", ONE_CONTRACT_TEST],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_without_postgres_its_tests_skip_locally_and_say_why() -> None:
    local = pytest_without_postgres(ci=False)
    assert local.returncode == 0, local.stdout
    assert "1 passed, 1 skipped" in local.stdout
    assert "PostgreSQL at postgresql://root@127.0.0.1:9/test is missing" in local.stdout


def test_without_postgres_ci_fails() -> None:
    ci = pytest_without_postgres(ci=True)
    assert ci.returncode == 1, ci.stdout
    assert "1 passed, 1 error" in ci.stdout and "missing in CI" in ci.stdout
