"""Wake-up of a caller waiting for a job's result, measured from the job's completion.

    python bench/result_wait.py [--backend sqlite|postgres|both] [--jobs 200]

The waiter (this process) enqueues a job and blocks in ``app.result(job_id)``; another process
claims the job, waits a few milliseconds so the waiter is asleep, writes the completion the way
a worker does (``jobs_finish``) and notes the time its commit returned. The figure is the time
from that commit to the waiter's return: how long a finished job's caller sleeps on. The
last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos import fresh_database
from conveyor import Conveyor, JobState
from conveyor.backends.base import ClaimParams, FinishParams, Lease

TARGET_MS = {"postgres": 10.0, "sqlite": 20.0}
ASLEEP = 0.02  # seconds the completer waits before finishing, so the waiter is in its wait


def declare(app: Conveyor) -> None:
    @app.job()
    def answer(p: dict[str, int]) -> int:
        return p["n"]


def completer(url: str, conn: Connection) -> None:
    """Claim each announced job, then complete it; send back when the commit returned."""
    app = Conveyor(url)
    declare(app)
    while True:
        job_id = conn.recv()
        if job_id is None:
            break
        (job,) = app.backend.jobs_claim(ClaimParams("bench-completer", ("default",), 1, 30.0))
        assert job.id == job_id
        time.sleep(ASLEEP)
        app.backend.jobs_finish([FinishParams(Lease(job.id, job.lease_token), JobState.COMPLETED, result=json.dumps(job_id))])
        conn.send(time.time())
    app.close()


def run(backend: str, jobs: int) -> dict[str, object]:
    url, drop = fresh_database(backend)
    app = Conveyor(url)
    declare(app)
    app.admin.jobs.count()  # migrate before the completer starts
    here, there = mp.Pipe()
    child = mp.get_context("spawn").Process(target=completer, args=(url, there), daemon=True)
    child.start()
    latencies = []
    try:
        for n in range(jobs + 5):
            job_id = app.enqueue("answer", {"n": n})
            here.send(job_id)
            assert app.admin.jobs.result(job_id, timeout=10) == job_id
            returned = time.time()
            committed = here.recv()
            if n >= 5:  # the first waits open connections and start the listener
                latencies.append((returned - committed) * 1000)
        here.send(None)
        child.join(10)
    finally:
        app.close()
        drop()
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    figures = {
        "backend": backend,
        "jobs": jobs,
        "wake_p50_ms": round(p50, 2),
        "wake_p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "wake_max_ms": round(ordered[-1], 2),
        "target_p50_ms": TARGET_MS[backend],
        "met": p50 < TARGET_MS[backend],
    }
    print(f"{backend:9s} wake-up after completion: p50 {figures['wake_p50_ms']} ms, p95 {figures['wake_p95_ms']} ms, "
          f"max {figures['wake_max_ms']} ms (target p50 < {TARGET_MS[backend]:g} ms: {'met' if figures['met'] else 'MISSED'})")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(json.dumps([run(b, args.jobs) for b in backends]))


if __name__ == "__main__":
    main()
