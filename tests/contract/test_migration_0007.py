"""Migration 0007 (job control) on a database that already holds jobs, on both backends: rows, ids
and indexes survive, the new state is accepted, and ids of deleted jobs are never handed out again."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import psycopg

from conveyor import Conveyor, JobState
from conveyor.backends import migrate
from conveyor.backends.base import ClaimParams
from conveyor.backends.sqlite.backend import path_from_url, split_statements


def migrate_up_to(database_url: str, version: int) -> None:
    """Apply the shipped migrations up to ``version`` by hand, as an older Conveyor did."""
    flavour = "sqlite" if database_url.startswith("sqlite") else "postgres"
    older = [m for m in migrate.load(flavour) if m.version <= version]
    if flavour == "sqlite":
        conn = sqlite3.connect(path_from_url(database_url), isolation_level=None)
        conn.execute("CREATE TABLE conveyor_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)")
        for m in older:
            for statement in split_statements(m.sql):
                conn.execute(statement)
            conn.execute("INSERT INTO conveyor_migrations VALUES (?, ?, 0)", (m.version, m.name))
        conn.execute(
            "INSERT INTO conveyor_jobs (id, type, queue, state, payload, run_at, created_at) VALUES "
            "(1, 'plain', 'default', 'pending', '{\"n\": 1}', 0, 0), (2, 'plain', 'default', 'completed', '{}', 0, 0)"
        )
        conn.execute("DELETE FROM conveyor_jobs WHERE id = 2")  # the newest id is gone, never to be reused
        conn.close()
        return
    with psycopg.connect(database_url, autocommit=True) as pg:
        pg.execute("CREATE TABLE conveyor_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for m in older:
            pg.execute(m.sql.encode())
            pg.execute("INSERT INTO conveyor_migrations (version, name) VALUES (%s, %s)", (m.version, m.name))
        pg.execute(
            "INSERT INTO conveyor_jobs (type, queue, state, payload, run_at, created_at) VALUES "
            "('plain', 'default', 'pending', '{\"n\": 1}', now(), now()), ('plain', 'default', 'completed', '{}', now(), now())"
        )
        pg.execute("DELETE FROM conveyor_jobs WHERE id = 2")


def test_job_control_migration_keeps_rows_and_ids(database_url: str) -> None:
    migrate_up_to(database_url, 4)
    app = Conveyor(database_url)
    try:

        @app.job()
        def plain(p: dict) -> None:  # type: ignore[type-arg]
            return None

        assert 7 in app.backend.migrate()
        kept = app.admin.jobs.get(1)
        assert (kept.state, kept.payload, kept.expires_at) == (JobState.PENDING, {"n": 1}, None)
        assert app.enqueue("plain", {}) == 3  # not 2: that id belonged to a deleted job
        stale = app.enqueue("plain", {}, expires_at=app.now() - timedelta(seconds=1))
        claimed = app.backend.jobs_claim(ClaimParams("w", ("default",), 10, 30.0))
        assert sorted(j.id for j in claimed) == [1, 3]  # the expired job is ended by the claim, not started
        assert app.admin.jobs.get(stale).state is JobState.EXPIRED
    finally:
        app.close()
