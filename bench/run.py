"""Conveyor's benchmark: throughput, latency and memory on one backend, against the bare-SQL limit.

    python bench/run.py --backend sqlite|postgres [--json] [--quick]

Every workload runs against a fresh scratch database (a temp SQLite file or its own
PostgreSQL schema) with real ``conveyor worker`` processes; each runs 3 times (once with
--quick) and the median is kept. Figures go to bench/results/<backend>.json (--quick:
<backend>-quick.json) and a markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bare_sql
from bench.app import declare
from bench.scratch import Scratch
from bench.workers import WorkerProcess
from conveyor import Conveyor

RESULTS = Path(__file__).resolve().parent / "results"
CONCURRENCY = 100  # drain workers: a claim asks for up to this many jobs
FINISH_BATCH = 100  # the worker's default finish_batch: outcomes per completion write
FAST_POLL = 0.01  # --poll-interval for the second pickup measurement


@dataclass(frozen=True)
class Sizes:
    """How much work each workload does; --quick shrinks everything but the shape."""

    repeats: int
    singles: int
    bulk: int
    drain: int
    pickups: int
    naps: int
    growth: tuple[int, ...]
    memory: int
    drain_c10: int  # jobs of the concurrency-10 drain (slower per job: smaller in quick mode)
    contended: int  # jobs queued for the enqueue-while-draining measurement (must outlast the window)
    contended_s: float

    @classmethod
    def full(cls) -> Sizes:
        return cls(
            repeats=3,
            singles=2_000,
            bulk=20_000,
            drain=20_000,
            pickups=200,
            naps=1_000,
            growth=(0, 100_000, 1_000_000),
            memory=100_000,
            drain_c10=20_000,
            contended=200_000,
            contended_s=5.0,
        )

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            repeats=1,
            singles=100,
            bulk=5_000,
            drain=3_000,
            pickups=30,
            naps=1_000,
            growth=(0, 20_000),
            memory=5_000,
            drain_c10=1_000,
            contended=80_000,  # two quiet workers drain 25,000+ a second: the queue must outlast the start and the window
            contended_s=1.0,
        )


def median_of(repeats: int, measure: Callable[[], float]) -> dict[str, Any]:
    runs = [measure() for _ in range(repeats)]
    return {"median": statistics.median(runs), "runs": runs}


def wait_for(check: Callable[[], bool], timeout: float, what: str, worker: WorkerProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if worker is not None:
            worker.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def enqueue_noops(app: Conveyor, count: int, job_type: str = "noop") -> None:
    for start in range(0, count, 1000):
        app.enqueue_many([(job_type, {"i": i}) for i in range(start, min(start + 1000, count))])


def bench_app(url: str) -> Conveyor:
    """The bench app's declarations on a client of ``url`` (the enqueuing side)."""
    return declare(Conveyor(url))


# -- 1. enqueue -----------------------------------------------------------------------------


BLOCK = 100  # single enqueues per alternated block: Conveyor's and the bare insert's take turns


def bare_target(db: Scratch) -> str:
    return db.url.removeprefix("sqlite:///") if db.backend == "sqlite" else db.url


def ratio_of(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """Conveyor's rate, the bare rate and their ratio over alternated blocks (total jobs over total time)."""
    conveyor = len(pairs) / sum(1 / c for c, _ in pairs)
    bare = len(pairs) / sum(1 / b for _, b in pairs)
    return {"conveyor_per_s": conveyor, "bare_per_s": bare, "ratio": conveyor / bare}


def enqueue_single(backend: str, count: int) -> dict[str, Any]:
    """``app.enqueue`` against a bare ``INSERT … RETURNING`` + commit on one connection, in
    alternated blocks of ``BLOCK`` on the same database, so both see the same load and table."""
    with Scratch.create(backend) as db:
        app = bench_app(db.url)
        try:
            for i in range(10):  # the connection opened and the statement prepared, outside the timing
                app.enqueue("noop", {"i": -i})
            pairs = []
            for _ in range(max(count // BLOCK, 1)):
                bare = bare_sql.insert_single(backend, bare_target(db), BLOCK)
                started = time.perf_counter()
                for i in range(BLOCK):
                    app.enqueue("noop", {"i": i})
                pairs.append((BLOCK / (time.perf_counter() - started), bare))
            return ratio_of(pairs)
        finally:
            app.close()


def aenqueue_single(backend: str, count: int) -> dict[str, Any]:
    """``await app.aenqueue`` against the same insert on psycopg's async connection (PostgreSQL)."""

    async def blocks(db: Scratch, app: Conveyor) -> list[tuple[float, float]]:
        for i in range(10):
            await app.aenqueue("noop", {"i": -i})
        pairs = []
        for _ in range(max(count // BLOCK, 1)):
            bare = await bare_sql.ainsert_single(bare_target(db), BLOCK)
            started = time.perf_counter()
            for i in range(BLOCK):
                await app.aenqueue("noop", {"i": i})
            pairs.append((BLOCK / (time.perf_counter() - started), bare))
        return pairs

    with Scratch.create(backend) as db:
        app = bench_app(db.url)
        try:
            return ratio_of(asyncio.run(blocks(db, app)))
        finally:
            app.close()


def enqueue_bulk(backend: str, count: int) -> dict[str, Any]:
    """``enqueue_many`` of 1,000 a call against COPY (PostgreSQL) or ``executemany`` (SQLite) of
    the same rows, 1,000 a transaction, alternated on the same database."""
    with Scratch.create(backend) as db:
        app = bench_app(db.url)
        try:
            app.enqueue("noop", {"i": -1})
            pairs = []
            for _ in range(max(count // 5_000, 1)):
                bare = bare_sql.insert_bulk(backend, bare_target(db), 5_000)
                started = time.perf_counter()
                enqueue_noops(app, 5_000)
                pairs.append((5_000 / (time.perf_counter() - started), bare))
            return ratio_of(pairs)
        finally:
            app.close()


# -- 2, 6, 7. drain -------------------------------------------------------------------------


@dataclass(frozen=True)
class Drain:
    rate: float  # jobs/s from the first claim to the last completion, on the database's clock
    wall: float  # seconds from starting the worker process to seeing every job completed
    peak_rss_mb: float
    cpu_us_per_job: float  # the worker's CPU time (all threads) per job, while it was draining


def drain(db: Scratch, count: int, processes: int = 1, job_type: str = "noop", concurrency: int = CONCURRENCY) -> Drain:
    """Queue ``count`` jobs, then start the worker and time it until all are completed."""
    after = db.last_id()
    app = bench_app(db.url)
    try:
        enqueue_noops(app, count, job_type)
    finally:
        app.close()
    with WorkerProcess(db.url, concurrency=concurrency, processes=processes) as worker:
        first: tuple[int, float] | None = None  # (jobs completed, CPU seconds) when the first completions showed
        deadline = time.monotonic() + 300
        while db.unfinished_after(after):  # cheap to ask: the poll must not take CPU from the worker
            worker.check()
            if first is None and (done := db.completed_after(after)):  # counted only until the first show
                first = (done, worker.cpu_seconds())
            if time.monotonic() > deadline:
                raise TimeoutError(f"{db.completed_after(after)} of {count} jobs completed after 300 s")
            time.sleep(0.02)
        wall = time.monotonic() - worker.started
        cpu = worker.cpu_seconds()
        peak = worker.memory_mb("VmHWM")
    done, first_claim, last_finish = db.window(after)
    assert done == count, (done, count)
    seen, cpu_then = first or (0, cpu)
    cpu_per_job = (cpu - cpu_then) / max(count - seen, 1) * 1e6
    return Drain(count / max(last_finish - first_claim, 1e-6), wall, peak, cpu_per_job)


def drain_rate(backend: str, count: int, processes: int, cpu: list[float] | None = None, concurrency: int = CONCURRENCY) -> float:
    with Scratch.create(backend) as db:
        result = drain(db, count, processes, concurrency=concurrency)
    if cpu is not None:
        cpu.append(result.cpu_us_per_job)
    return result.rate


def growth(backend: str, sizes: Sizes) -> dict[str, Any]:
    """The drain rate with N finished jobs left in the table: the claim must not notice them."""
    out: dict[str, Any] = {}
    for finished in sizes.growth:
        with Scratch.create(backend) as db:
            db.seed_finished(finished)
            out[str(finished)] = median_of(sizes.repeats, lambda: drain(db, sizes.drain).rate)
    return out


def memory(backend: str, count: int) -> dict[str, float]:
    """Idle RSS, then RSS through a ``count``-job drain: peak, and growth from 20% done to the end."""
    with Scratch.create(backend) as db, WorkerProcess(db.url, concurrency=CONCURRENCY) as worker:
        wait_for(lambda: bool(db.query("SELECT count(*) FROM conveyor_workers")[0][0]), 30, "the worker to register", worker)
        time.sleep(1.0)
        idle = worker.memory_mb()
        after = db.last_id()
        app = bench_app(db.url)
        try:
            enqueue_noops(app, count)
        finally:
            app.close()
        early = 0.0
        while (done := db.completed_after(after)) < count:
            worker.check()
            if not early and done >= count // 5:
                early = worker.memory_mb()
            time.sleep(0.05)
        time.sleep(0.5)
        end = worker.memory_mb()
        return {"idle_rss_mb": idle, "peak_rss_mb": worker.memory_mb("VmHWM"), "rss_growth_mb": end - (early or end)}


# -- 3. pickup latency ------------------------------------------------------------------------


def pickup(backend: str, count: int, poll_interval: float | None = None) -> dict[str, float]:
    """An idle worker; jobs enqueued one at a time 20 ms apart; enqueue-to-claim in ms.

    The enqueuing process is not the worker's, so on SQLite (whose wake-up is in-process
    only) the worker finds each job by polling; ``poll_interval`` shortens that poll.
    """
    with Scratch.create(backend) as db, WorkerProcess(db.url, concurrency=10, poll_interval=poll_interval) as worker:
        wait_for(lambda: bool(db.query("SELECT count(*) FROM conveyor_workers")[0][0]), 30, "the worker to register", worker)
        time.sleep(0.5)
        after = db.last_id()
        app = bench_app(db.url)
        try:
            for i in range(count):
                app.enqueue("noop", {"i": i})
                time.sleep(0.02)
        finally:
            app.close()
        wait_for(lambda: db.completed_after(after) >= count, 60, "the pickups", worker)
        waits = db.waits_ms(after)
    return {"p50": percentile(waits, 50), "p99": percentile(waits, 99)}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# -- enqueue while workers drain (SQLite: one file, one writer at a time) ---------------------


def contended_enqueue(backend: str, queued: int, seconds: float, probe: bool) -> dict[str, Any]:
    """Two worker processes (concurrency 50 each) drain ``queued`` no-op jobs; meanwhile this
    process, when ``probe``, enqueues one job every 10 ms and times each call. The drain rate over
    the same window, with and without the probe, is the probe's cost to the workers."""
    with Scratch.create(backend) as db:
        after = db.last_id()
        app = bench_app(db.url)
        try:
            enqueue_noops(app, queued)
            app.enqueue("noop", {"i": -1})  # the probe's connection opened before the window
            with WorkerProcess(db.url, concurrency=50, processes=2) as worker:
                wait_for(lambda: db.completed_after(after) > 0, 60, "the drain to start", worker)
                done_before, started = db.completed_after(after), time.monotonic()
                latencies: list[float] = []
                while (now := time.monotonic()) < started + seconds:
                    if probe:
                        t0 = time.perf_counter()
                        app.enqueue("noop", {"i": len(latencies)})
                        latencies.append((time.perf_counter() - t0) * 1000)
                    time.sleep(max(0.0, 0.01 - (time.monotonic() - now)))
                done = db.completed_after(after) - done_before
                window = time.monotonic() - started
        finally:
            app.close()
    if done + done_before >= queued:
        raise RuntimeError(f"the queue ran dry within the window: queue more than {queued:,} jobs")
    out: dict[str, Any] = {"drain_per_s": done / window}
    if probe:
        out |= {
            "enqueues": len(latencies),
            "planned": round(seconds / 0.01),
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies),
        }
    return out


# -- 4. concurrency ---------------------------------------------------------------------------


def naps(backend: str, count: int) -> float:
    """``count`` jobs that each sleep 50 ms, concurrency 50: seconds from first claim to last completion."""
    with Scratch.create(backend) as db:
        after = db.last_id()
        result = drain(db, count, job_type="nap", concurrency=50)
        _, first, last = db.window(after)
        del result
        return last - first


# -- the suite --------------------------------------------------------------------------------


def run(backend: str, sizes: Sizes, log: Callable[[str], None]) -> dict[str, Any]:
    figures: dict[str, Any] = {}

    def step(name: str, fn: Callable[[], Any]) -> None:
        started = time.monotonic()
        figures[name] = fn()
        log(f"  {name}: {short(figures[name])}  ({time.monotonic() - started:.1f} s)")

    ratios: dict[str, float] = {}

    def against_bare(name: str, measure: Callable[[], dict[str, Any]]) -> None:
        """Conveyor's rate and its bare counterpart's, alternated inside each run; the ratio is the runs' median."""
        started = time.monotonic()
        runs = [measure() for _ in range(sizes.repeats)]
        figures[f"{name}_per_s"] = {
            "median": statistics.median(r["conveyor_per_s"] for r in runs),
            "runs": [r["conveyor_per_s"] for r in runs],
        }
        figures[f"{name}_bare_per_s"] = {
            "median": statistics.median(r["bare_per_s"] for r in runs),
            "runs": [r["bare_per_s"] for r in runs],
        }
        ratios[f"{name}_over_bare"] = statistics.median(r["ratio"] for r in runs)
        log(
            f"  {name}_per_s: {short(figures[f'{name}_per_s'])}  bare: {short(figures[f'{name}_bare_per_s'])}  "
            f"ratios {', '.join(format(r['ratio'], '.2f') for r in runs)}  ({time.monotonic() - started:.1f} s)"
        )

    against_bare("enqueue_single", lambda: enqueue_single(backend, sizes.singles))
    if backend == "postgres":
        against_bare("aenqueue_single", lambda: aenqueue_single(backend, sizes.singles))
    against_bare("enqueue_bulk", lambda: enqueue_bulk(backend, sizes.bulk))
    # The drain and its bare-SQL limit run in alternation, so each ratio compares the two under
    # the same load on this shared machine; the ratio reported is the median of those pairs.
    # At concurrency 10 a claim takes up to 10 jobs and a completion batch holds at most 10: the
    # bare loop runs with the same batches (``--claim 10 --finish 10``).
    for suffix, concurrency, finish, count in (("", CONCURRENCY, FINISH_BATCH, sizes.drain), ("_c10", 10, 10, sizes.drain_c10)):
        cpu: list[float] = []
        bare_cpu: list[float] = []
        drains: list[float] = []
        bares: list[float] = []
        started = time.monotonic()
        for _ in range(sizes.repeats):
            drains.append(drain_rate(backend, count, 1, cpu, concurrency))
            rate, cpu_us = bare_sql.measure_with_cpu(backend, count, concurrency, finish)
            bares.append(rate)
            bare_cpu.append(cpu_us)
        figures[f"drain{suffix}_per_s"] = {"median": statistics.median(drains), "runs": drains}
        figures[f"bare_sql{suffix}_per_s"] = {"median": statistics.median(bares), "runs": bares}
        figures[f"drain{suffix}_cpu_us_per_job"] = {"median": statistics.median(cpu), "runs": cpu}
        figures[f"bare_sql{suffix}_cpu_us_per_job"] = {"median": statistics.median(bare_cpu), "runs": bare_cpu}
        pairs = [d / b for d, b in zip(drains, bares, strict=True)]
        ratios[f"drain{suffix}_over_bare_sql"] = statistics.median(pairs)
        log(
            f"  drain{suffix}_per_s (concurrency {concurrency}): {short(figures[f'drain{suffix}_per_s'])}  "
            f"bare_sql{suffix}_per_s: {short(figures[f'bare_sql{suffix}_per_s'])}  "
            f"ratios {', '.join(f'{r:.2f}' for r in pairs)}  ({time.monotonic() - started:.1f} s)"
        )
    step("drain_2proc_per_s", lambda: median_of(sizes.repeats, lambda: drain_rate(backend, sizes.drain, 2)))
    pickups = [pickup(backend, sizes.pickups) for _ in range(sizes.repeats)]
    figures["pickup_p50_ms"] = {"median": statistics.median(p["p50"] for p in pickups), "runs": [p["p50"] for p in pickups]}
    figures["pickup_p99_ms"] = {"median": statistics.median(p["p99"] for p in pickups), "runs": [p["p99"] for p in pickups]}
    log(f"  pickup_p50_ms: {short(figures['pickup_p50_ms'])}  pickup_p99_ms: {short(figures['pickup_p99_ms'])}")
    fast = [pickup(backend, sizes.pickups, FAST_POLL) for _ in range(sizes.repeats)]
    figures["pickup_fast_poll_p50_ms"] = {"median": statistics.median(p["p50"] for p in fast), "runs": [p["p50"] for p in fast]}
    figures["pickup_fast_poll_p99_ms"] = {"median": statistics.median(p["p99"] for p in fast), "runs": [p["p99"] for p in fast]}
    log(
        f"  with --poll-interval {FAST_POLL}: p50 {short(figures['pickup_fast_poll_p50_ms'])}  p99 {short(figures['pickup_fast_poll_p99_ms'])}"
    )
    if backend == "sqlite":
        started = time.monotonic()
        runs = []
        for _ in range(sizes.repeats):  # alternated: the drain alone, then with the probing enqueuer
            alone = contended_enqueue(backend, sizes.contended, sizes.contended_s, probe=False)
            runs.append(contended_enqueue(backend, sizes.contended, sizes.contended_s, probe=True) | {"alone": alone})
        for key in ("p50_ms", "p99_ms", "max_ms", "enqueues"):
            figures[f"contended_enqueue_{key}"] = {
                "median": statistics.median(r[key] for r in runs),
                "runs": [r[key] for r in runs],
            }
        ratios["contended_drain_over_alone"] = statistics.median(r["drain_per_s"] / r["alone"]["drain_per_s"] for r in runs)
        log(
            f"  enqueue while 2 workers drain: p50 {short(figures['contended_enqueue_p50_ms'])} ms  "
            f"p99 {short(figures['contended_enqueue_p99_ms'])} ms  max {short(figures['contended_enqueue_max_ms'])} ms  "
            f"drain with / without {ratios['contended_drain_over_alone']:.2f}  ({time.monotonic() - started:.1f} s)"
        )
    step("sleep_workload_s", lambda: median_of(sizes.repeats, lambda: naps(backend, sizes.naps)))
    step("growth_per_s", lambda: growth(backend, sizes))
    mems = [memory(backend, sizes.memory) for _ in range(sizes.repeats)]
    for key in ("idle_rss_mb", "peak_rss_mb", "rss_growth_mb"):
        figures[key] = {"median": statistics.median(m[key] for m in mems), "runs": [m[key] for m in mems]}
    log(
        f"  memory: idle {figures['idle_rss_mb']['median']:.1f} MB, peak {figures['peak_rss_mb']['median']:.1f} MB, "
        f"growth {figures['rss_growth_mb']['median']:+.1f} MB"
    )

    growth_rates = figures["growth_per_s"]
    sizes_seen = sorted(growth_rates, key=int)
    ratios |= {
        "drain_2proc_over_bare_sql": figures["drain_2proc_per_s"]["median"] / figures["bare_sql_per_s"]["median"],
        "growth_largest_over_empty": growth_rates[sizes_seen[-1]]["median"] / growth_rates[sizes_seen[0]]["median"],
    }
    return {
        "backend": backend,
        "quick": sizes.repeats == 1,
        "sizes": sizes.__dict__ | {"growth": list(sizes.growth)},
        "batch": {"claim": CONCURRENCY, "finish": FINISH_BATCH},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "figures": figures,
        "ratios": ratios,
        "targets": targets(backend, figures, ratios),
    }


def targets(backend: str, f: dict[str, Any], r: dict[str, float]) -> dict[str, bool]:
    """The targets of issues 13 and 20; ratios hold anywhere, absolute figures on this machine."""
    med = {k: v["median"] for k, v in f.items() if isinstance(v, dict) and "median" in v}
    out = {
        "drain >= 80% of bare SQL, concurrency 100": r["drain_over_bare_sql"] >= 0.8,
        "drain >= 80% of bare SQL, concurrency 10": r["drain_c10_over_bare_sql"] >= 0.8,
        "sleep workload <= 1.03 s": med["sleep_workload_s"] <= 1.03,
        "growth within 20%": r["growth_largest_over_empty"] >= 0.8,
        "idle RSS < 80 MB": med["idle_rss_mb"] < 80,
        "no RSS growth over the drain (< 5 MB)": med["rss_growth_mb"] < 5,
    }
    if backend == "postgres":
        out |= {
            "single enqueue >= 80% of a bare INSERT": r["enqueue_single_over_bare"] >= 0.8,
            "aenqueue >= 80% of a bare INSERT (async driver)": r["aenqueue_single_over_bare"] >= 0.8,
            "bulk enqueue >= 60% of COPY": r["enqueue_bulk_over_bare"] >= 0.6,
            "2 processes >= 1.8x one": med["drain_2proc_per_s"] >= 1.8 * med["drain_per_s"],
            "pickup p50 < 2 ms, p99 < 5 ms": med["pickup_p50_ms"] < 2 and med["pickup_p99_ms"] < 5,
        }
    else:
        out |= {
            "worker CPU per job <= 2x the bare loop's": med["drain_cpu_us_per_job"] <= 2 * med["bare_sql_cpu_us_per_job"],
            "pickup p99 < 10 ms": med["pickup_p99_ms"] < 10,
            "enqueue while draining: p99 < 20 ms, max < 200 ms": med["contended_enqueue_p99_ms"] < 20
            and med["contended_enqueue_max_ms"] < 200,
            "enqueue while draining: drain >= 90% of the drain alone": r["contended_drain_over_alone"] >= 0.9,
        }
    return out


def short(value: Any) -> str:
    if isinstance(value, dict) and "median" in value:
        return f"{value['median']:,.1f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {short(v)}" for k, v in value.items())
    return str(value)


def table(result: dict[str, Any]) -> str:
    f, r = result["figures"], result["ratios"]
    bare_bulk = "COPY" if result["backend"] == "postgres" else "executemany"

    def versus(name: str, label: str, bare: str) -> tuple[str, str]:
        return (
            label,
            (
                f"{f[f'{name}_per_s']['median']:,.0f} jobs/s; {bare} {f[f'{name}_bare_per_s']['median']:,.0f}/s; "
                f"**{r[f'{name}_over_bare']:.0%}**"
            ),
        )

    rows = [
        versus("enqueue_single", "single enqueue / bare INSERT … RETURNING + commit", "bare"),
        *([versus("aenqueue_single", "aenqueue / bare INSERT, async driver", "bare")] if "aenqueue_single_per_s" in f else []),
        versus("enqueue_bulk", f"bulk enqueue (1,000 a call) / {bare_bulk}, 1,000 a transaction", bare_bulk),
    ]
    for suffix, concurrency in (("", CONCURRENCY), ("_c10", 10)):
        rows += [
            (
                f"drain, 1 process, concurrency {concurrency} / bare-SQL loop (same batches)",
                (
                    f"{f[f'drain{suffix}_per_s']['median']:,.0f} / {f[f'bare_sql{suffix}_per_s']['median']:,.0f} jobs/s; "
                    f"**{r[f'drain{suffix}_over_bare_sql']:.0%}**"
                ),
            ),
            (
                f"CPU per job, concurrency {concurrency}: worker / bare loop",
                f"{f[f'drain{suffix}_cpu_us_per_job']['median']:.1f} / {f[f'bare_sql{suffix}_cpu_us_per_job']['median']:.1f} µs",
            ),
        ]
    rows += [
        (
            "drain, 2 processes",
            (
                f"{f['drain_2proc_per_s']['median']:,.0f} jobs/s "
                f"({f['drain_2proc_per_s']['median'] / f['drain_per_s']['median']:.2f}x one; "
                f"{r['drain_2proc_over_bare_sql']:.0%} of the bare loop)"
            ),
        ),
        (
            "pickup latency p50 / p99 (default poll 0.5 s)",
            f"{f['pickup_p50_ms']['median']:.1f} ms / {f['pickup_p99_ms']['median']:.1f} ms",
        ),
        (
            f"pickup latency p50 / p99 (--poll-interval {FAST_POLL})",
            f"{f['pickup_fast_poll_p50_ms']['median']:.1f} ms / {f['pickup_fast_poll_p99_ms']['median']:.1f} ms",
        ),
        *(
            [
                (
                    "enqueue every 10 ms while 2 workers drain: p50 / p99 / max (enqueues done); drain with / alone",
                    (
                        f"{f['contended_enqueue_p50_ms']['median']:.1f} / {f['contended_enqueue_p99_ms']['median']:.1f} / "
                        f"{f['contended_enqueue_max_ms']['median']:.1f} ms ({f['contended_enqueue_enqueues']['median']:.0f}); "
                        f"{r['contended_drain_over_alone']:.0%}"
                    ),
                )
            ]
            if "contended_drain_over_alone" in r
            else []
        ),
        ("1,000 × 50 ms sleeps, concurrency 50", f"{f['sleep_workload_s']['median']:.2f} s"),
    ]
    for size, value in f["growth_per_s"].items():
        rows.append((f"drain with {int(size):,} finished rows", f"{value['median']:,.0f} jobs/s"))
    rows += [
        ("largest / empty table drain", f"{r['growth_largest_over_empty']:.0%}"),
        ("worker RSS idle / peak", f"{f['idle_rss_mb']['median']:.1f} MB / {f['peak_rss_mb']['median']:.1f} MB"),
        ("worker RSS growth over the drain", f"{f['rss_growth_mb']['median']:+.1f} MB"),
    ]
    lines = [f"| {result['backend']} | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    lines += ["", "| target | met |", "|---|---|", *(f"| {k} | {'yes' if v else 'NO'} |" for k, v in result["targets"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of the table")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each (about a minute)")
    parser.add_argument("--out", type=Path, help="where to write the JSON (default bench/results/<backend>[-quick].json)")
    args = parser.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    log: Callable[[str], None] = (
        (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))
    )
    log(f"conveyor bench: {args.backend}{' (quick)' if args.quick else ''}")
    result = run(args.backend, sizes, log)
    out = args.out or RESULTS / f"{args.backend}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        print()
        print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
