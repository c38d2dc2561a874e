"""Migrations and indexes: applied once, safe when processes start together, claim stays indexed."""

from __future__ import annotations

import subprocess
import sys
import threading

import psycopg

from conveyor import Conveyor, Selection
from conveyor.backends import from_url
from conveyor.backends.migrate import load


def test_first_use_migrates_and_records_versions(app: Conveyor) -> None:
    app.admin.jobs.count()
    expected = [m.version for m in load(app.backend.flavour)]  # type: ignore[attr-defined]
    assert app.backend.migrations_applied() == expected  # type: ignore[attr-defined]
    assert app.backend.migrate() == []  # nothing left to apply


def test_concurrent_migrations_agree(database_url: str) -> None:
    errors: list[BaseException] = []
    applied: list[list[int]] = []
    start = threading.Barrier(4)

    def migrate() -> None:
        backend = from_url(database_url)
        try:
            start.wait()
            applied.append(backend.migrate())
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
        finally:
            backend.close()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    versions = [v for a in applied for v in a]
    assert sorted(versions) == sorted(set(versions))  # each applied exactly once
    assert from_url(database_url).migrations_applied() == [m.version for m in load(from_url(database_url).flavour)]  # type: ignore[attr-defined]


def test_cli_migrate(database_url: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "conveyor", "migrate", "--database-url", database_url], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert "applied migrations [1" in run.stdout
    again = subprocess.run(
        [sys.executable, "-m", "conveyor", "migrate", "--database-url", database_url], capture_output=True, text=True, timeout=60, check=False
    )
    assert "up to date" in again.stdout


def test_claim_uses_the_partial_index_however_many_jobs_are_finished(app: Conveyor) -> None:
    @app.job()
    def noop(p: dict) -> None:  # type: ignore[type-arg]
        return None

    app.enqueue_many([("noop", {}) for _ in range(3000)])
    app.admin.jobs.cancel(Selection.matching(type="noop"), actor="test")  # 3,000 finished rows the claim must not read
    app.enqueue_many([("noop", {}) for _ in range(3000)])  # a backlog: the index must give the order
    if hasattr(app.backend, "analyze"):
        app.backend.analyze()
    plan = app.backend.explain_claim(["default"])  # type: ignore[attr-defined]
    assert "conveyor_jobs_claim" in plan, plan
    assert "SCAN conveyor_jobs\n" not in plan + "\n" and "Seq Scan" not in plan, plan


def test_staging_due_jobs_reads_the_due_index(app: Conveyor) -> None:
    """Every claim first makes due scheduled jobs pending: with many delayed jobs that must stay a
    range of the due index, not a read of every scheduled job. On SQLite even with no statistics
    (it never gathers its own); on PostgreSQL with the statistics autovacuum keeps."""
    from conveyor.backends.postgres import backend as postgres
    from conveyor.backends.sqlite import backend as sqlite

    @app.job()
    def later(p: dict) -> None:  # type: ignore[type-arg]
        return None

    app.enqueue_many([("later", {}) for _ in range(2000)], delay=3600)
    if app.backend.flavour == "sqlite":  # type: ignore[attr-defined]
        rows = app.backend.conn.execute("EXPLAIN QUERY PLAN " + sqlite.STAGE_DUE).fetchall()  # type: ignore[attr-defined]
        plan = " | ".join(str(r[-1]) for r in rows)
        assert "conveyor_jobs_due" in plan and "TEMP B-TREE" not in plan, plan
    else:
        with psycopg.connect(app.backend.url, autocommit=True) as conn:
            conn.execute("ANALYZE conveyor_jobs")
            plan = " | ".join(str(r[0]) for r in conn.execute("EXPLAIN " + postgres.STAGE_DUE, ("channel",)))
        assert "conveyor_jobs_due" in plan and "Seq Scan" not in plan, plan
