"""The real ``conveyor`` command in subprocesses, against a database on both backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from conveyor import Conveyor, JobState
from conveyor.backends import location
from conveyor.testing import running_worker, wait_until

CONVEYOR = str(Path(sys.executable).parent / "conveyor")
ROOT = Path(__file__).resolve().parents[2]
APP = "tests.cli.cliapp:app"


def run(database_url: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONVEYOR_DATABASE_URL": database_url, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([CONVEYOR, *args], capture_output=True, text=True, env=env, input=input, timeout=120, cwd=ROOT, check=False)


@pytest.fixture
def seeded(app: Conveyor) -> Conveyor:
    @app.job(queue="email", max_attempts=1)
    def send_email(p: dict) -> None:  # type: ignore[type-arg]
        return None

    @app.job(queue="billing", max_attempts=1)
    def charge(p: dict) -> None:  # type: ignore[type-arg]
        raise RuntimeError(f"card declined for {p['order']}")

    app.enqueue_many([("send_email", {"n": i}) for i in range(3)])
    app.enqueue_many([("charge", {"order": f"o{i}"}) for i in range(4)])
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.count(state=[JobState.COMPLETED, JobState.DEAD]) == 7, message="seed jobs to finish")
    app.enqueue("send_email", {"n": 99}, queue="idle")
    return app


def test_status_shows_queues_states_and_health(seeded: Conveyor, database_url: str) -> None:
    out = run(database_url, "status")
    assert out.returncode == 0, out.stderr
    assert "Jobs by state" in out.stdout and "Queues" in out.stdout
    assert "billing" in out.stdout and "email" in out.stdout
    assert "degraded" in out.stdout and "workers:idle" in out.stdout  # a due job and nobody to run it
    as_json = run(database_url, "status", "--json")
    assert '"dead": 4' in as_json.stdout


def test_jobs_filters(seeded: Conveyor, database_url: str) -> None:
    out = run(database_url, "jobs", "--state", "dead", "--queue", "billing", "-n", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("charge") == 2 and "card declined" in out.stdout and "send_email" not in out.stdout
    bad = run(database_url, "jobs", "--state", "exploded")
    assert bad.returncode == 2 and "exploded" in bad.stderr


def test_dlq_list_show_retry_purge_with_audit(seeded: Conveyor, database_url: str) -> None:
    dead = sorted(j.id for j in seeded.admin.dead_letters.list())
    listing = run(database_url, "dlq", "list")
    assert "Dead letters: 4" in listing.stdout
    shown = run(database_url, "dlq", "show", str(dead[0]))
    assert "card declined for o0" in shown.stdout and "Traceback" in shown.stdout
    assert run(database_url, "dlq", "show", "999999").returncode == 1
    assert run(database_url, "dlq", "retry").returncode == 2  # no scope given: refuse
    refused = run(database_url, "dlq", "purge", "--all", input="n\n")
    assert refused.returncode == 1 and seeded.admin.jobs.count(state=JobState.DEAD) == 4
    retried = run(database_url, "dlq", "retry", str(dead[0]), str(dead[1]))
    assert retried.returncode == 0 and "Retried 2 dead jobs" in retried.stdout
    purged = run(database_url, "dlq", "purge", "--all", "--yes")
    assert purged.returncode == 0 and "Purged 2 dead jobs" in purged.stdout
    assert seeded.admin.jobs.count(state=JobState.DEAD) == 0 and seeded.admin.jobs.count(state=JobState.PENDING) == 3
    actions = [(e.action, e.detail["count"]) for e in reversed(seeded.admin.audit.list())]
    assert actions == [("dlq.retry", 2), ("dlq.purge", 2)]
    assert all(e.actor.startswith("cli") for e in seeded.admin.audit.list())
    assert "dlq.purge" in run(database_url, "audit").stdout


def test_prune_and_workers(seeded: Conveyor, database_url: str) -> None:
    dry = run(database_url, "prune", "--keep", "1", "--dry-run")
    assert dry.returncode == 0 and "2 jobs would be pruned" in dry.stdout
    done = run(database_url, "prune", "--keep", "1", "--batch", "1")
    assert done.returncode == 0 and "Pruned 2 jobs" in done.stdout
    assert seeded.admin.jobs.count(state=JobState.COMPLETED) == 1 and seeded.admin.jobs.count(state=JobState.DEAD) == 4
    assert "bad" not in run(database_url, "prune", "--older-than", "bad").stdout
    assert run(database_url, "prune", "--older-than", "bad").returncode == 2
    with running_worker(seeded) as worker:
        out = run(database_url, "workers")
        assert worker.id in out.stdout and "live" in out.stdout


def test_cron_list_pause_resume_trigger(seeded: Conveyor, database_url: str) -> None:
    listing = run(database_url, "cron", "list", "--app", APP)  # the app declares the schedule
    assert listing.returncode == 0, listing.stderr
    assert "nightly-digest" in listing.stdout and "0 3 * * *" in listing.stdout
    assert run(database_url, "cron", "pause", "nightly-digest").returncode == 0
    assert next(s for s in seeded.admin.schedules.list() if s.name == "nightly-digest").paused
    assert run(database_url, "cron", "resume", "nightly-digest").returncode == 0
    assert not next(s for s in seeded.admin.schedules.list() if s.name == "nightly-digest").paused
    before = seeded.admin.jobs.count(type="send_email")
    assert run(database_url, "cron", "trigger", "nightly-digest", "--app", APP).returncode == 0
    assert seeded.admin.jobs.count(type="send_email") == before + 1
    missing = run(database_url, "cron", "pause", "no-such-schedule")
    assert missing.returncode == 1 and "no-such-schedule" in missing.stderr
    assert [e.action for e in reversed(seeded.admin.audit.list())] == ["cron.pause", "cron.resume", "cron.trigger"]


def bare_env(**extra: str) -> dict[str, str]:
    """The environment without any database configured (nor an app), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("CONVEYOR_DATABASE_URL", "DATABASE_URL", "CONVEYOR_APP")}
    return {**env, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONPATH": str(ROOT), **extra}


def test_read_commands_refuse_a_missing_database_and_create_nothing(tmp_path: Path) -> None:
    for command in (["status"], ["jobs"], ["workers"], ["dlq", "list"], ["cron", "list"], ["audit"]):
        out = subprocess.run([CONVEYOR, *command], capture_output=True, text=True, env=bare_env(), cwd=tmp_path, timeout=120, check=False)
        assert out.returncode == 1, (command, out.stdout, out.stderr)
        assert f"no Conveyor database at {tmp_path / 'conveyor.db'}" in out.stderr and "--database-url" in out.stderr
    assert list(tmp_path.iterdir()) == []  # no empty conveyor.db left behind
    for command in (["--help"], ["status", "--help"], ["worker", "--help"], ["migrate", "--help"]):
        shown = subprocess.run([CONVEYOR, *command], capture_output=True, text=True, env=bare_env(), cwd=tmp_path, timeout=120, check=False)
        assert "CONVEYOR_DATABASE_URL" in shown.stdout and "DATABASE_URL" in shown.stdout.replace("CONVEYOR_DATABASE_URL", "")
        assert "--database-url" in shown.stdout and "--app" in shown.stdout


def test_status_names_its_database_fits_80_columns_and_json_is_iso(seeded: Conveyor, database_url: str) -> None:
    env = {**os.environ, "CONVEYOR_DATABASE_URL": database_url, "COLUMNS": "80", "NO_COLOR": "1"}
    out = subprocess.run([CONVEYOR, "status"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(line for line in lines if len(line) > 80)
    assert "…" not in out.stdout  # nothing cut short: every figure readable
    for figure in ("billing", "email", "idle", "done/min", "run p95", "oldest due", "workers:idle"):
        assert figure in out.stdout, figure
    shown = location(database_url)
    assert shown.replace(" ", "") in "".join(out.stdout.split()) and (not shown.startswith("sqlite") or str(ROOT) not in shown)
    as_json = json.loads(run(database_url, "status", "--json").stdout)
    assert as_json["database"] == shown and as_json["total"]["counts"]["dead"] == 4
    assert datetime.fromisoformat(as_json["at"]).tzinfo is not None and "T" in as_json["at"]
    (job,) = json.loads(run(database_url, "jobs", "--json", "-n", "1").stdout)
    assert "T" in job["created_at"] and datetime.fromisoformat(job["created_at"]).tzinfo is not None


def test_worker_takes_database_url_and_its_start_line_names_the_database(app: Conveyor, database_url: str, tmp_path: Path) -> None:
    @app.job(queue="email", max_attempts=1)
    def send_email(p: dict) -> None:  # type: ignore[type-arg]
        return None

    app.backend.migrate()
    job_id = app.enqueue("send_email", {"n": 1})
    log, elsewhere = tmp_path / "worker.log", tmp_path / "elsewhere"
    elsewhere.mkdir()
    with log.open("w") as stderr:
        worker = subprocess.Popen([CONVEYOR, "worker", "--app", APP, "--database-url", database_url], env=bare_env(), cwd=elsewhere,
                                  stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_until(lambda: app.admin.jobs.get(job_id).state is JobState.COMPLETED, timeout=60, message="the CLI worker to run the job")
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    text = log.read_text()
    assert "INFO conveyor.worker worker" in text and f"database={location(database_url)}" in text, text
    assert list(elsewhere.iterdir()) == []  # it opened the given database, not ./conveyor.db


def test_run_worker_logs_like_the_cli_worker(database_url: str, tmp_path: Path) -> None:
    script = tmp_path / "plain_worker.py"
    script.write_text(
        "import sys\nfrom conveyor import Conveyor\napp = Conveyor(sys.argv[1])\n"
        "@app.job()\ndef hello(p: dict) -> None:\n    raise RuntimeError('hello failed')\n"
        "app.run_worker(concurrency=1)\n"
    )
    app = Conveyor(database_url)
    try:
        log = tmp_path / "worker.log"
        with log.open("w") as stderr:
            worker = subprocess.Popen([sys.executable, str(script), database_url], env=bare_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                wait_until(lambda: "started" in log.read_text(), timeout=60, message="the worker's start-up line")
            finally:
                worker.terminate()
                worker.wait(timeout=60)
        text = log.read_text()
        assert " INFO conveyor.worker worker " in text and f"database={location(database_url)}" in text, text
    finally:
        app.close()
