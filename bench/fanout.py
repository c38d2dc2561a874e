"""Large fan-out: one job enqueues N children and a callback that waits for all of them.

    python bench/fanout.py --backend sqlite|postgres [--children 10000] [--concurrency 50]

Prints the seconds from enqueueing the root to the callback's completion, and the callback's
check that it saw every child's result; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.chaos import fresh_database  # noqa: E402
from conveyor import Conveyor, JobContext  # noqa: E402
from conveyor.testing import running_worker, wait_until  # noqa: E402


def run(backend: str, children: int, concurrency: int) -> dict[str, object]:
    url, drop = fresh_database(backend)
    app = Conveyor(url, poll_interval=0.05)
    fanned: dict[str, float] = {}

    @app.job()
    def fan_out(p: dict[str, int], ctx: JobContext) -> None:
        started = time.perf_counter()
        kids = [ctx.enqueue("leaf", {"n": i}) for i in range(p["children"])]
        ctx.enqueue("total", {}, depends_on=kids)
        fanned["build_s"] = time.perf_counter() - started

    @app.job()
    async def leaf(p: dict[str, int]) -> int:
        return p["n"]

    @app.job()
    def total(p: dict[str, int], ctx: JobContext) -> int:
        return sum(ctx.parent_results().values())

    app.backend.migrate()
    logging.getLogger("conveyor").setLevel(logging.WARNING)
    started = time.perf_counter()
    app.enqueue("fan_out", {"children": children})
    with running_worker(app, concurrency=concurrency):
        wait_until(lambda: app.admin.jobs.count(type="leaf") == children, timeout=600, interval=0.01)
        children_stored = time.perf_counter() - started
        (callback,) = wait_until(lambda: app.admin.jobs.list(type="total", state="completed"), timeout=600, interval=0.05)
    elapsed = time.perf_counter() - started
    result = {
        "backend": backend,
        "children": children,
        "children_stored_s": round(children_stored, 2),
        "total_s": round(elapsed, 2),
        "callback_result_ok": callback.result == sum(range(children)),
    }
    app.close()
    drop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    result = run(args.backend, args.children, args.concurrency)
    print(json.dumps(result))
    sys.exit(0 if result["callback_result_ok"] else 1)


if __name__ == "__main__":
    main()
