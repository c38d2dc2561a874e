"""What retention costs a running queue: seed finished jobs, drain, prune them all, drain on.

    python bench/retention.py --backend postgres [--seed 10000000] [--rate 300] [--phase 60]

Seeds ``--seed`` completed jobs finished two days ago (older than the default one-day
retention), then runs a producer at ``--rate`` jobs/s and one ``conveyor worker`` for three
phases: ``--phase`` seconds before retention, while ``app.admin.prune()`` removes every seeded job
(the worker pruner's own call, in ``prune_batch`` batches), and ``--phase`` seconds after.
Per phase: jobs completed per second, claim latency p50/p99 (timed in the worker,
bench/health_app.py) and the largest backlog; for the removal: its time, and the WAL the
server wrote meanwhile (``pg_current_wal_lsn``: the whole server's, other databases' writes
included). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.app import declare
from bench.health import Claims, Producer, percentile
from bench.scratch import Scratch
from bench.workers import WorkerProcess
from conveyor import Conveyor

SEED = """
INSERT INTO conveyor_jobs (type, queue, state, payload, attempt, max_attempts, run_at, created_at,
                           attempted_at, finished_at, lease_token)
SELECT 'noop', 'bench', 'completed', jsonb_build_object('i', i), 1, 1, t, t, t, t, 1
FROM generate_series(%s::int8, %s::int8) AS i, (SELECT now() - interval '2 days' AS t) AS s
"""


def phase(name: str, seconds: float, scratch: Scratch, claims: Claims, producer: Producer, work: Any = None) -> dict[str, Any]:
    """Run for ``seconds`` (or while ``work`` runs, if given) and report the phase's figures."""
    claims.since_last()
    done_before = producer.sent - unfinished(scratch)
    started = time.monotonic()
    backlog = 0
    result: dict[str, Any] = {}
    thread = None
    if work is not None:
        thread = threading.Thread(target=lambda: result.update(work()), daemon=True)
        thread.start()
    while (thread.is_alive() if thread is not None else time.monotonic() - started < seconds):
        time.sleep(1.0)
        backlog = max(backlog, int(scratch.query("SELECT count(*) FROM conveyor_jobs WHERE state = 'pending'")[0][0]))
    elapsed = time.monotonic() - started
    ms = [s * 1000 for s, _ in claims.since_last()]
    row = {
        "phase": name,
        "seconds": round(elapsed, 1),
        "completed_per_s": round((producer.sent - unfinished(scratch) - done_before) / elapsed),
        "claim_p50_ms": round(percentile(ms, 0.5), 2),
        "claim_p99_ms": round(percentile(ms, 0.99), 2),
        "backlog_max": backlog,
        **result,
    }
    print(json.dumps(row), flush=True)
    return row


def unfinished(scratch: Scratch) -> int:
    return int(scratch.query("SELECT count(*) FROM conveyor_jobs WHERE state IN ('pending', 'running')")[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgres"], default="postgres")
    parser.add_argument("--seed", type=int, default=10_000_000)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--phase", type=float, default=60.0)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="conveyor-retention-")
    stop = threading.Event()
    with Scratch.create(args.backend) as scratch:
        t = time.monotonic()
        for start in range(1, args.seed + 1, 1_000_000):
            scratch.query(SEED, start, min(start + 999_999, args.seed))
        scratch.query("VACUUM ANALYZE conveyor_jobs")
        size = scratch.query("SELECT pg_total_relation_size('conveyor_jobs')")[0][0]
        print(f"seeded {args.seed:,} completed jobs in {time.monotonic() - t:.0f} s; jobs table + indexes {size / 2**20:.0f} MB", flush=True)
        # The worker's own pruner is off: the removal is the one timed here, not one that starts at a
        # random point of the worker's prune interval.
        env = {"CONVEYOR_HEALTH_CLAIMS": folder, "CONVEYOR_RETAIN_COMPLETED": "off", "CONVEYOR_RETAIN_CANCELLED": "off"}
        worker = WorkerProcess(scratch.url, concurrency=20, app="bench.health_app:app", env=env)
        producer = Producer(scratch.url, args.rate, stop)
        claims = Claims(folder)
        app = declare(Conveyor(scratch.url, prune_batch=1000))

        def prune() -> dict[str, Any]:
            lsn = scratch.query("SELECT pg_current_wal_lsn()")[0][0]
            began = time.monotonic()
            removed = app.admin.prune(actor="bench/retention.py")
            wal = scratch.query("SELECT pg_current_wal_lsn() - %s::pg_lsn", lsn)[0][0]
            return {"removed": removed, "removal_s": round(time.monotonic() - began, 1), "wal_mb": round(float(wal) / 2**20, 1)}

        try:
            while not os.listdir(folder):
                worker.check()
                time.sleep(0.1)
            producer.start()
            rows = [
                phase("before", args.phase, scratch, claims, producer),
                phase("during", 0, scratch, claims, producer, work=prune),
                phase("after", args.phase, scratch, claims, producer),
            ]
        finally:
            stop.set()
            worker.stop()
            app.close()
            shutil.rmtree(folder, ignore_errors=True)
        size_after = scratch.query("SELECT pg_total_relation_size('conveyor_jobs')")[0][0]
    print(json.dumps({"backend": args.backend, "seed": args.seed, "rate": args.rate, "phases": rows,
                      "size_before_mb": round(size / 2**20), "size_after_mb": round(size_after / 2**20)}))  # fmt: skip


if __name__ == "__main__":
    main()
