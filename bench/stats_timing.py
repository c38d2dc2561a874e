"""How long the dashboard's reads take with a million finished jobs in the table.

    python bench/stats_timing.py --backend sqlite|postgres [--finished 1000000] [--repeats 15]

Seeds a fresh scratch database (Conveyor's own migrations) with ``--finished`` jobs finished
over the last 7 days across 4 queues and 12 types (96% completed, 3% dead, 1% cancelled), plus
a live backlog, then times each read the dashboard, API, metrics and pruner make. Prints one
line per read (median and p95 in ms) and, last, one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import Scratch
from conveyor import Conveyor, JobState

# Seeding only (not measured): finished rows spread evenly over a week (about 100 a minute
# for a million), so the 15-minute windows have real work to do.
SEED = {
    "sqlite": """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1),
        base(t) AS (SELECT (julianday('now') - 2440587.5) * 86400.0)
        INSERT INTO conveyor_jobs (type, queue, state, payload, attempt, max_attempts, run_at, created_at,
                                   attempted_at, finished_at, lease_token, errors)
        SELECT 'type_' || (i % 12), 'queue_' || (i % 4),
               CASE WHEN i % 100 < 96 THEN 'completed' WHEN i % 100 < 99 THEN 'dead' ELSE 'cancelled' END,
               '{"i":' || i || '}', 1, 1, f - 2.5, f - 3, f - 0.5, f, 1,
               CASE WHEN i % 100 BETWEEN 96 AND 98 THEN '[{"attempt":1,"at":0,"error":"boom"}]' ELSE '[]' END
        FROM (SELECT i, t - i * 604800.0 / ?1 AS f FROM n, base)
    """,
    "postgres": """
        INSERT INTO conveyor_jobs (type, queue, state, payload, attempt, max_attempts, run_at, created_at,
                                   attempted_at, finished_at, lease_token, errors)
        SELECT 'type_' || (i %% 12), 'queue_' || (i %% 4),
               CASE WHEN i %% 100 < 96 THEN 'completed' WHEN i %% 100 < 99 THEN 'dead' ELSE 'cancelled' END,
               jsonb_build_object('i', i), 1, 1, f - interval '2.5 s', f - interval '3 s', f - interval '0.5 s', f, 1,
               CASE WHEN i %% 100 BETWEEN 96 AND 98 THEN '[{"attempt":1,"at":0,"error":"boom"}]'::jsonb ELSE '[]'::jsonb END
        FROM generate_series(1, %s) AS i,
             LATERAL (SELECT now() - make_interval(secs => i * 7 * 86400.0 / %s) AS f) AS ft
    """,
}
BACKLOG = {
    "sqlite": """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?),
        now(t) AS (SELECT (julianday('now') - 2440587.5) * 86400.0)
        INSERT INTO conveyor_jobs (type, queue, state, payload, run_at, created_at)
        SELECT 'type_' || (i % 12), 'queue_' || (i % 4), CASE WHEN i % 5 = 0 THEN 'scheduled' ELSE 'pending' END,
               '{}', CASE WHEN i % 5 = 0 THEN t + 3600 ELSE t - (i % 120) END, t - (i % 120)
        FROM n, now
    """,
    "postgres": """
        INSERT INTO conveyor_jobs (type, queue, state, payload, run_at, created_at)
        SELECT 'type_' || (i %% 12), 'queue_' || (i %% 4), CASE WHEN i %% 5 = 0 THEN 'scheduled' ELSE 'pending' END,
               '{}', CASE WHEN i %% 5 = 0 THEN now() + interval '1 hour' ELSE now() - make_interval(secs => i %% 120) END,
               now() - make_interval(secs => i %% 120)
        FROM generate_series(1, %s) AS i
    """,
}


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    fn()  # warm caches and connections
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 2), "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 2)}


def recount(app: Conveyor) -> None:
    """Forget the cached completed/cancelled totals so the next snapshot counts them again."""
    app.insights.finished_counts._cached = None  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--backlog", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)

    with Scratch.create(args.backend) as scratch:
        start = time.perf_counter()
        if args.backend == "sqlite":
            scratch.query(SEED["sqlite"], args.finished)
        else:
            scratch.query(SEED["postgres"], args.finished, args.finished)
        scratch.query(BACKLOG[args.backend], args.backlog)
        scratch.query("VACUUM ANALYZE conveyor_jobs" if args.backend == "postgres" else "ANALYZE")  # as autovacuum would
        seeded = time.perf_counter() - start
        print(f"seeded {args.finished:,} finished + {args.backlog:,} backlog jobs in {seeded:.1f} s", flush=True)

        app = Conveyor(scratch.url)
        try:
            reads: dict[str, Callable[[], Any]] = {
                "stats (snapshot + shaping)": app.admin.stats,
                "stats, completed totals recounted": lambda: (recount(app), app.admin.stats()),
                "health": app.admin.health,
                "list 50 jobs (newest)": lambda: app.admin.jobs.list(limit=50),
                "list 50 dead jobs": lambda: app.admin.jobs.list(limit=50, state=JobState.DEAD),
                "list 50 jobs of one type and queue": lambda: app.admin.jobs.list(limit=50, type="type_3", queue="queue_3"),
                "count dead jobs": lambda: app.admin.jobs.count(state=JobState.DEAD),
                "count pending jobs": lambda: app.admin.jobs.count(state=JobState.PENDING),
                "prune batch, nothing due (policy: 30 days)": lambda: app.insights.jobs_prune(
                    app.admin.prune_policy(completed_older_than=30 * 86400.0, cancelled_older_than=30 * 86400.0)
                ),
            }
            figures = {name: timed(fn, args.repeats) for name, fn in reads.items()}
            # One real retention batch: 1,000 completed jobs older than 6 days go.
            figures["prune batch of 1,000 (older than 6 days)"] = timed(
                lambda: app.insights.jobs_prune(app.admin.prune_policy(completed_older_than=6 * 86400.0, limit=1000)), 5
            )
            for name, f in figures.items():
                print(f"{name:48s} median {f['median_ms']:8.2f} ms   p95 {f['p95_ms']:8.2f} ms")
            total = app.admin.jobs.count()
        finally:
            app.close()
    print(json.dumps({"backend": args.backend, "finished": args.finished, "backlog": args.backlog, "rows": total, "reads": figures}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
