"""The CLI on the base install alone (no ``web`` or ``postgres`` extra), in a venv built once for this module."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from conveyor.backends.base import ClaimParams, FinishParams, Lease

ROOT = Path(__file__).resolve().parents[2]
BASE_DEPENDENCIES = ["pydantic>=2.6", "click>=8.1", "rich>=13", "cronsim>=2.5"]  # pyproject.toml's [project] dependencies


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A venv holding Conveyor (editable, from this checkout) and only its base dependencies."""
    venv = tmp_path_factory.mktemp("base-install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *BASE_DEPENDENCIES], check=True, timeout=600, capture_output=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True, timeout=600, capture_output=True)
    yield venv


@pytest.mark.timeout(1200)
def test_the_cli_read_commands_work_without_the_web_extra(base_venv: Path, tmp_path: Path) -> None:
    python = base_venv / "bin" / "python"
    missing = subprocess.run([str(python), "-c", "import fastapi"], capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and "No module named 'fastapi'" in missing.stderr  # truly the base install

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    app = Conveyor(url)
    try:
        @app.job(queue="email", max_attempts=1)
        def send_email(p: dict) -> None:  # type: ignore[type-arg]
            return None

        ids = app.enqueue_many([("send_email", {"n": i}) for i in range(3)])
        (job, *_) = app.backend.jobs_claim(ClaimParams("w", ("email",), 1, 30))
        app.backend.jobs_finish([FinishParams(Lease(job.id, job.lease_token), JobState.DEAD, error="mail server said no")])
    finally:
        app.close()

    env = {**os.environ, "CONVEYOR_DATABASE_URL": url, "COLUMNS": "120", "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    env.pop("VIRTUAL_ENV", None)

    def cli(*args: str) -> str:
        out = subprocess.run([str(base_venv / "bin" / "conveyor"), *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                             timeout=120, check=False)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return out.stdout

    assert "Jobs by state" in cli("status") and "email" in cli("status")
    assert cli("jobs").count("send_email") == 3
    assert "Workers" in cli("workers")
    assert "mail server said no" in cli("dlq", "list") and f"job {ids[0]}" in cli("dlq", "show", str(ids[0]))
    assert "nightly-digest" in cli("cron", "list", "--app", "tests.cli.cliapp:app")
    assert "Audit log" in cli("audit")
    no_web = subprocess.run([str(base_venv / "bin" / "conveyor"), "dashboard"], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=120, check=False)
    assert no_web.returncode == 1 and "conveyor[web]" in no_web.stderr  # a clear word, not a traceback
