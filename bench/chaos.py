"""Chaos: worker processes killed with SIGKILL while they drain jobs; prove nothing is lost or overlaps.

    python bench/chaos.py --backend sqlite|postgres [--jobs 5000] [--workers 4] [--kills 10]

The last line printed is one JSON object; the exit status is non-zero if a job was lost or two
runs of one job overlapped in time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conveyor import Conveyor, JobState  # noqa: E402

PG_BASE = os.environ.get("CONVEYOR_TEST_PG", "postgresql://root@127.0.0.1:5432/test")


def fresh_database(backend: str) -> tuple[str, Any]:
    """A new SQLite file or PostgreSQL schema, and how to drop it afterwards."""
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="conveyor-chaos-"))
        return f"sqlite:///{folder / 'chaos.db'}", lambda: None
    import psycopg
    from urllib.parse import quote

    schema = f"chaos_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")

    def drop() -> None:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")

    sep = "&" if "?" in PG_BASE else "?"
    return f"{PG_BASE}{sep}options={quote(f'-csearch_path={schema}')}", drop


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=60) as conn:
            return conn.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(url) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def start_worker(env: dict[str, str], concurrency: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", "--log-level", "WARNING", "worker", "bench.chaos_app:app", "--concurrency", str(concurrency)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def overlaps(runs: list[tuple[int, int, float, float | None]], killed_at: dict[int, float]) -> int:
    """Pairs of runs of the same job whose [start, end] intervals intersect.

    A run without an end was killed: it ended when its process was killed.
    """
    by_job: dict[int, list[tuple[float, float]]] = {}
    for job_id, pid, started, ended in runs:
        end = ended if ended is not None else killed_at.get(pid, float("inf"))
        by_job.setdefault(job_id, []).append((started, end))
    count = 0
    for intervals in by_job.values():
        intervals.sort()
        for (_, prev_end), (next_start, _) in zip(intervals, intervals[1:]):
            if next_start < prev_end:
                count += 1
    return count


def run(backend: str, jobs: int, workers: int, kills: int, interval: float, concurrency: int, lease: float, timeout: float) -> dict[str, Any]:
    url, drop = fresh_database(backend)
    env = {
        **os.environ,
        "CONVEYOR_DATABASE_URL": url,
        "CONVEYOR_LEASE_SECONDS": str(lease),
        "CONVEYOR_RESCUE_INTERVAL": str(max(0.2, lease / 3)),
        "CONVEYOR_POLL_INTERVAL": "0.1",
        "PYTHONPATH": str(ROOT),
    }
    os.environ["CONVEYOR_DATABASE_URL"] = url
    from bench.chaos_app import CREATE, app  # noqa: PLC0415 - needs the URL in the environment first

    app.backend.migrate()
    query(url, CREATE[app.backend.flavour])  # type: ignore[attr-defined]
    client = Conveyor(url)
    client.job(name="chaos_job", max_attempts=25, backoff=0.05)(app.registry.get("chaos_job").func)
    client.enqueue_many([("chaos_job", {"n": i}) for i in range(jobs)])
    procs = [start_worker(env, concurrency) for _ in range(workers)]
    killed_at: dict[int, float] = {}
    started = time.monotonic()
    try:
        while len(killed_at) < kills and time.monotonic() - started < timeout:
            time.sleep(interval * random.uniform(0.6, 1.4))
            victim = random.randrange(len(procs))
            proc = procs[victim]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at[proc.pid] = time.time()
            procs[victim] = start_worker(env, concurrency)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and client.admin.jobs.count(state=JobState.COMPLETED) < jobs:
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
    completed = client.admin.jobs.count(state=JobState.COMPLETED)
    dead = client.admin.jobs.count(state=JobState.DEAD)
    runs = query(url, "SELECT job_id, pid, started, ended FROM chaos_runs")
    per_job: dict[int, int] = {}
    for job_id, *_ in runs:
        per_job[job_id] = per_job.get(job_id, 0) + 1
    result = {
        "backend": backend,
        "jobs": jobs,
        "workers": workers,
        "kills": len(killed_at),
        "completed": completed,
        "dead": dead,
        "lost": jobs - completed - dead,
        "runs": len(runs),
        "duplicate_runs": sum(n - 1 for n in per_job.values() if n > 1),
        "overlapping_runs": overlaps(runs, killed_at),
        "seconds": round(elapsed, 2),
    }
    client.close()
    app.close()
    drop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0, help="mean seconds between kills")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--lease", type=float, default=3.0, help="lease seconds (rescue comes soon after)")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    result = run(args.backend, args.jobs, args.workers, args.kills, args.interval, args.concurrency, args.lease, args.timeout)
    print(json.dumps(result))
    sys.exit(0 if result["lost"] == 0 and result["overlapping_runs"] == 0 and result["dead"] == 0 else 1)


if __name__ == "__main__":
    main()
