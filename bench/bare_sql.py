"""The bare-SQL limit: Conveyor's claims and completions with no Conveyor code on the hot path.

    python bench/bare_sql.py --backend sqlite|postgres [--count 20000] [--claim 100] [--finish 100]
    python bench/bare_sql.py --backend sqlite|postgres --sweep

The schema is made by Conveyor's migrations and the jobs queued by Conveyor (set-up, not
timed). The timed loop then uses the same driver (sqlite3, psycopg 3), the same statements
as conveyor/backends (kept textually in step with them, one queue) and the same batch sizes:
claim up to ``claim`` pending jobs in one transaction, write their completions back in
transactions of ``finish``, until the queue is empty. ``--sweep`` varies the batch sizes and
the statement shapes to show what bounds the limit itself.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import Scratch

NOW = "((julianday('now') - 2440587.5) * 86400.0)"
COLUMNS = (
    "id, type, queue, state, payload, priority, attempt, max_attempts, run_at, created_at, "
    "attempted_at, finished_at, lease_token, lease_expires_at, worker_id, timeout, unique_key, "
    "workflow_id, parent_id, progress, result, errors, backoff"
)
PG_COLUMNS = ", ".join(f"j.{c.strip()}" for c in COLUMNS.split(","))

SQLITE_STAGE = f"""
UPDATE conveyor_jobs SET state = 'pending'
WHERE id IN (SELECT id FROM conveyor_jobs INDEXED BY conveyor_jobs_due
             WHERE state = 'scheduled' AND run_at <= {NOW} ORDER BY run_at LIMIT 1000)
"""
SQLITE_CLAIM = f"""
UPDATE conveyor_jobs SET state = 'running', attempt = attempt + 1, lease_token = lease_token + 1,
       worker_id = ?, attempted_at = {NOW}, lease_expires_at = {NOW} + ?
WHERE id IN (SELECT id FROM (SELECT * FROM (SELECT id, priority FROM conveyor_jobs WHERE state = 'pending' AND queue = ?
             ORDER BY priority DESC, id LIMIT ?)) ORDER BY priority DESC, id LIMIT ?)
RETURNING {COLUMNS}
"""
SQLITE_FINISH = f"""
UPDATE conveyor_jobs SET
    state = CASE WHEN o.state = 'pending' AND o.delay > 0 THEN 'scheduled' ELSE o.state END,
    run_at = CASE WHEN o.state = 'pending' THEN {NOW} + o.delay ELSE run_at END,
    finished_at = CASE WHEN o.state IN ('completed','dead','cancelled') THEN {NOW} ELSE NULL END,
    attempt = attempt - o.refund,
    result = o.result,
    errors = CASE WHEN o.error IS NULL THEN errors ELSE json_insert(errors, '$[#]', json_object(
        'attempt', attempt, 'at', {NOW}, 'error', o.error, 'traceback', o.traceback, 'worker_id', o.worker_id)) END,
    worker_id = NULL,
    lease_expires_at = NULL
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS token, json_extract(value, '$[2]') AS state,
             json_extract(value, '$[3]') AS delay, json_extract(value, '$[4]') AS refund, json_extract(value, '$[5]') AS result,
             json_extract(value, '$[6]') AS error, json_extract(value, '$[7]') AS traceback,
             json_extract(value, '$[8]') AS worker_id
      FROM json_each(?)) AS o
WHERE conveyor_jobs.id = o.id AND conveyor_jobs.lease_token = o.token AND +conveyor_jobs.state = 'running'
"""

PG_STAGE = """
UPDATE conveyor_jobs SET state = 'pending'
WHERE id IN (SELECT id FROM conveyor_jobs WHERE state = 'scheduled' AND run_at <= now()
             ORDER BY run_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
"""
PG_CLAIM = f"""
UPDATE conveyor_jobs j SET state = 'running', attempt = j.attempt + 1, lease_token = j.lease_token + 1,
       worker_id = %s, attempted_at = now(), lease_expires_at = now() + make_interval(secs => %s)
FROM (SELECT id FROM ((SELECT id, priority FROM conveyor_jobs WHERE state = 'pending' AND queue = %s
      ORDER BY priority DESC, id LIMIT %s FOR UPDATE SKIP LOCKED)) AS c ORDER BY priority DESC, id LIMIT %s) AS picked
WHERE j.id = picked.id
RETURNING {PG_COLUMNS}
"""
PG_FINISH = """
UPDATE conveyor_jobs j SET
    state = CASE WHEN o.state = 'pending' AND o.delay > 0 THEN 'scheduled' ELSE o.state END,
    run_at = CASE WHEN o.state = 'pending' THEN now() + make_interval(secs => o.delay) ELSE j.run_at END,
    finished_at = CASE WHEN o.state IN ('completed','dead','cancelled') THEN now() ELSE NULL END,
    attempt = j.attempt - o.refund,
    result = o.result::jsonb,
    errors = CASE WHEN o.error IS NULL THEN j.errors ELSE j.errors || jsonb_build_array(jsonb_build_object(
        'attempt', j.attempt, 'at', extract(epoch FROM now()), 'error', o.error,
        'traceback', o.traceback, 'worker_id', o.worker_id)) END,
    worker_id = NULL,
    lease_expires_at = NULL
FROM unnest(%s::int8[], %s::int8[], %s::text[], %s::float8[], %s::int4[], %s::text[], %s::text[], %s::text[], %s::text[])
     AS o(id, token, state, delay, refund, result, error, traceback, worker_id)
WHERE j.id = o.id AND j.lease_token = o.token AND coalesce(j.state, '') = 'running'
RETURNING j.id
"""

WORKER = "bare-sql"
LEASE = 15.0


def completions(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """One completed outcome per claimed row: id, lease token, state, delay, refund, result, error, traceback, worker."""
    return [[r[0], r[12], "completed", 0.0, 0, None, None, None, WORKER] for r in rows]


# -- SQLite ---------------------------------------------------------------------------------


def sqlite_loop(path: str, claim: int, finish: int) -> int:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    done = 0
    try:
        while True:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(SQLITE_STAGE)
            rows = conn.execute(SQLITE_CLAIM, (WORKER, LEASE, "bench", claim, claim)).fetchall()
            conn.execute("COMMIT")
            if not rows:
                return done
            for start in range(0, len(rows), finish):
                batch = rows[start : start + finish]
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("SAVEPOINT finish")  # as Conveyor: every lease held, so the count of changed rows says all won
                assert conn.execute(SQLITE_FINISH, (json.dumps(completions(batch)),)).rowcount == len(batch)
                conn.execute("RELEASE finish")
                conn.execute("COMMIT")
            done += len(rows)
    finally:
        conn.close()


# -- PostgreSQL -----------------------------------------------------------------------------


def postgres_loop(url: str, claim: int, finish: int) -> int:
    done = 0
    with psycopg.connect(url, autocommit=False) as conn:
        while True:
            with conn.transaction():
                conn.execute(PG_STAGE)
                rows = conn.execute(PG_CLAIM, (WORKER, LEASE, "bench", claim, claim)).fetchall()
            if not rows:
                return done
            for start in range(0, len(rows), finish):
                with conn.transaction():
                    conn.execute(
                        PG_FINISH, [list(column) for column in zip(*completions(rows[start : start + finish]))]
                    ).fetchall()
            done += len(rows)


LOOPS: dict[str, Callable[[str, int, int], int]] = {"sqlite": sqlite_loop, "postgres": postgres_loop}


# -- enqueue counterparts -------------------------------------------------------------------
# The row an ``enqueue("noop", {"i": n})`` writes (its columns, the same indexes), written with
# nothing around it: one statement per job in autocommit (single), or COPY (bulk).

SQLITE_INSERT = f"""
INSERT INTO conveyor_jobs (type, queue, state, payload, priority, max_attempts, run_at, created_at)
VALUES ('noop', 'bench', 'pending', ?, 0, 1, {NOW}, {NOW}) RETURNING id
"""
PG_INSERT = """
INSERT INTO conveyor_jobs (type, queue, state, payload, priority, max_attempts, run_at, created_at)
VALUES ('noop', 'bench', 'pending', %s::jsonb, 0, 1, now(), now()) RETURNING id
"""
PG_COPY = "COPY conveyor_jobs (type, queue, state, payload, priority, max_attempts, run_at, created_at) FROM STDIN"


def insert_single(backend: str, target: str, count: int) -> float:
    """Jobs/s of ``INSERT … RETURNING`` + commit, one job a transaction, on one connection."""
    if backend == "sqlite":
        conn = sqlite3.connect(target, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        try:
            started = time.perf_counter()
            for i in range(count):
                conn.execute(SQLITE_INSERT, (json.dumps({"i": i}),)).fetchall()
            return count / (time.perf_counter() - started)
        finally:
            conn.close()
    with psycopg.connect(target, autocommit=True) as pg:
        pg.execute(PG_INSERT, ('{"i": -1}',), prepare=True).fetchall()  # prepared, as psycopg does by the fifth run
        started = time.perf_counter()
        for i in range(count):
            pg.execute(PG_INSERT, (json.dumps({"i": i}),)).fetchall()
        return count / (time.perf_counter() - started)


async def ainsert_single(target: str, count: int) -> float:
    """``insert_single`` on PostgreSQL with psycopg's async connection."""
    async with await psycopg.AsyncConnection.connect(target, autocommit=True) as pg:
        await (await pg.execute(PG_INSERT, ('{"i": -1}',), prepare=True)).fetchall()
        started = time.perf_counter()
        for i in range(count):
            await (await pg.execute(PG_INSERT, (json.dumps({"i": i}),))).fetchall()
        return count / (time.perf_counter() - started)


def insert_bulk(backend: str, target: str, count: int, per_transaction: int = 1000) -> float:
    """Jobs/s of COPY (PostgreSQL) or one ``executemany`` (SQLite), ``per_transaction`` rows a transaction."""
    started = time.perf_counter()
    if backend == "sqlite":
        conn = sqlite3.connect(target, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        try:
            started = time.perf_counter()
            for start in range(0, count, per_transaction):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    SQLITE_INSERT.replace(" RETURNING id", ""),
                    [(json.dumps({"i": i}),) for i in range(start, min(start + per_transaction, count))],
                )
                conn.execute("COMMIT")
            return count / (time.perf_counter() - started)
        finally:
            conn.close()
    with psycopg.connect(target, autocommit=False) as pg:
        started = time.perf_counter()
        for start in range(0, count, per_transaction):
            with pg.transaction(), pg.cursor().copy(PG_COPY) as copy:
                for i in range(start, min(start + per_transaction, count)):
                    copy.write_row(("noop", "bench", "pending", json.dumps({"i": i}), 0, 1, "now", "now"))
        return count / (time.perf_counter() - started)


def measure(backend: str, count: int, claim: int, finish: int) -> float:
    """Jobs/s of the bare loop over ``count`` queued no-op jobs on a fresh scratch database."""
    return measure_with_cpu(backend, count, claim, finish)[0]


def measure_with_cpu(backend: str, count: int, claim: int, finish: int) -> tuple[float, float]:
    """``measure``, and the loop's CPU per job in µs (this process: with SQLite, its work too)."""
    from conveyor import Conveyor

    with Scratch.create(backend) as db:
        app = Conveyor(db.url)
        try:
            app.job(name="noop", queue="bench", max_attempts=1)(lambda p: None)
            for start in range(0, count, 1000):
                app.enqueue_many([("noop", {"i": i}) for i in range(start, min(start + 1000, count))])
        finally:
            app.close()
        target = db.url.removeprefix("sqlite:///") if backend == "sqlite" else db.url
        started, cpu = time.perf_counter(), time.process_time()
        done = LOOPS[backend](target, claim, finish)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert done == count, (done, count)
        return count / elapsed, cpu / count * 1e6


def sweep(backend: str, count: int, batches: Sequence[int]) -> list[tuple[int, float]]:
    return [(size, measure(backend, count, size, size)) for size in batches]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--claim", type=int, default=100, help="jobs per claim (the worker's concurrency)")
    parser.add_argument("--finish", type=int, default=100, help="completions per transaction (finish_batch)")
    parser.add_argument("--sweep", action="store_true", help="batch sizes 1, 10, 100, 1000")
    args = parser.parse_args(argv)
    if args.sweep:
        print(f"| {args.backend} batch | bare-SQL jobs/s |\n|---|---|")
        for size, rate in sweep(args.backend, args.count, (1, 10, 100, 1000)):
            print(f"| {size} | {rate:,.0f} |")
        return 0
    print(f"{measure(args.backend, args.count, args.claim, args.finish):,.0f} jobs/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
