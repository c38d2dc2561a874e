"""Queue health under a pinned MVCC horizon: a sustained load while long transactions stop vacuum.

    python bench/health.py --backend postgres [--minutes 15] [--rate 800] [--label NAME]

A producer enqueues ``noop`` jobs at a fixed rate (in a batch every 50 ms: single enqueues at
800/s would take a core of this 2-core machine by themselves); real ``conveyor worker``
processes drain them. Meanwhile another connection pins the horizon: ``--pins`` REPEATABLE READ
transactions of ``--pin-seconds`` each on an unrelated table, staggered ``--pin-gap`` apart
(PlanetScale's test: three of 120 s), so vacuum can remove no row version younger than the
oldest of them. On SQLite the same readers hold WAL snapshots, which stop checkpoints.

Claim latency is timed in the workers around the backend's claim call (bench/health_app.py).
Every 10 s it samples the backlog (due jobs not yet claimed), and from the catalogue the live
and dead tuples, sizes and autovacuum runs of Conveyor's tables; each minute it prints a line;
the last line is one JSON object. The run is drawn as an SVG (``--chart``; default
bench/results/health-<backend>-<label>.svg) and its samples kept next to it as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from bench.app import declare
from bench.scratch import Scratch
from bench.workers import WorkerProcess
from conveyor import Conveyor

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE = 10.0  # seconds between samples (the chart's resolution); lines are printed each minute

UNFINISHED = "SELECT state, count(*) FROM conveyor_jobs WHERE state IN ('pending', 'running', 'scheduled') GROUP BY state"
PG_RELATIONS = """
SELECT c.relname, c.relkind, coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
       coalesce(s.autovacuum_count, 0) + coalesce(s.vacuum_count, 0), pg_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE n.nspname = current_schema() AND c.relname LIKE 'conveyor%%' AND c.relkind IN ('r', 'i', 'p', 't')
"""


@dataclass
class Sample:
    t: float  # seconds since the start
    claims: int  # claim statements in the window
    claimed: int  # jobs they claimed
    claim_p50_ms: float
    claim_p99_ms: float
    claim_max_ms: float
    enqueued: int  # jobs enqueued so far
    backlog: int  # due jobs waiting for a claim
    running: int
    completed: int  # enqueued - unfinished (noop jobs cannot fail)
    live: int  # live tuples in Conveyor's tables
    dead: int  # dead tuples in Conveyor's tables
    vacuums: int  # (auto)vacuum runs of Conveyor's tables so far
    sizes: dict[str, int] = field(default_factory=dict)  # bytes per table and index
    pinned: int = 0  # long transactions open at the sample


class Claims:
    """The workers' claim timings, read incrementally from their files."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.offsets: dict[str, int] = {}

    def since_last(self) -> list[tuple[float, int]]:
        out: list[tuple[float, int]] = []
        for name in os.listdir(self.folder):
            path = os.path.join(self.folder, name)
            with open(path) as f:
                f.seek(self.offsets.get(name, 0))
                data = f.read()
            complete = data[: data.rfind("\n") + 1]  # a line being written is read next time
            self.offsets[name] = self.offsets.get(name, 0) + len(complete.encode())
            for line in complete.splitlines():
                _, seconds, rows = line.split()
                out.append((float(seconds), int(rows)))
        return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


class Producer(threading.Thread):
    """Enqueue ``rate`` jobs a second, one batch every 50 ms, on the schedule (not after the last batch)."""

    def __init__(self, url: str, rate: float, stop: threading.Event) -> None:
        super().__init__(name="producer", daemon=True)
        self.app = declare(Conveyor(url))
        self.rate, self.stop, self.sent, self.late = rate, stop, 0, 0.0

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            due = int(self.rate * (time.monotonic() - start)) - self.sent
            if due > 0:
                self.app.enqueue_many([("noop", {})] * due)
                self.sent += due
            self.late = max(self.late, due / self.rate)
            self.stop.wait(0.05)
        self.app.close()


class Pinner(threading.Thread):
    """Hold one long REPEATABLE READ transaction (a snapshot, on SQLite) from ``at`` for ``seconds``.

    ``held`` is when it really held the snapshot (a busy server may refuse a connection for a
    while: it retries, and the summary and chart show the actual period)."""

    def __init__(self, scratch: Scratch, at: float, seconds: float, stop: threading.Event, start: float) -> None:
        super().__init__(name=f"pin@{at:g}", daemon=True)
        self.scratch, self.at, self.seconds, self.stop, self.start_time = scratch, at, seconds, stop, start
        self.open = False
        self.held: tuple[float, float] | None = None

    def run(self) -> None:
        if self.stop.wait(max(0.0, self.start_time + self.at - time.monotonic())):
            return
        while not self.stop.is_set():
            try:
                self.pin()
                return
            except (psycopg.OperationalError, sqlite3.OperationalError) as exc:
                print(f"pin at {self.at:g} s: {exc}; retrying", file=sys.stderr, flush=True)
                self.stop.wait(1.0)

    def pin(self) -> None:
        if self.scratch.backend == "postgres":
            with psycopg.connect(self.scratch.url) as conn:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                conn.execute("SELECT count(*) FROM health_unrelated").fetchone()  # takes the snapshot
                self.hold()
                conn.rollback()
        else:
            conn = sqlite3.connect(self.scratch.url.removeprefix("sqlite:///"), isolation_level=None)
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM health_unrelated").fetchone()
            self.hold()
            conn.execute("COMMIT")
            conn.close()

    def hold(self) -> None:
        began = time.monotonic() - self.start_time
        self.open = True
        self.stop.wait(self.seconds)
        self.open = False
        self.held = (round(began, 1), round(time.monotonic() - self.start_time, 1))


def table_stats(scratch: Scratch) -> tuple[int, int, int, dict[str, int]]:
    """Live tuples, dead tuples, vacuum runs and sizes of Conveyor's relations."""
    if scratch.backend == "sqlite":
        path = scratch.url.removeprefix("sqlite:///")
        sizes = {name: os.path.getsize(path + suffix) for name, suffix in (("db", ""), ("wal", "-wal")) if os.path.exists(path + suffix)}
        live = int(scratch.query("SELECT count(*) FROM conveyor_jobs")[0][0])
        return live, 0, 0, sizes
    live = dead = vacuums = 0
    sizes: dict[str, int] = {}
    for name, kind, n_live, n_dead, runs, size in scratch.query(PG_RELATIONS):
        sizes[name] = int(size)
        if kind in ("r", "p"):
            live, dead, vacuums = live + int(n_live), dead + int(n_dead), vacuums + int(runs)
    return live, dead, vacuums, sizes


def sample(scratch: Scratch, t: float, claims: Claims, producer: Producer, pinners: list[Pinner]) -> tuple[Sample, list[float]]:
    """The state now, and the durations (ms) of the claims made since the last sample."""
    timings = claims.since_last()
    ms = [s * 1000 for s, _ in timings]
    states = dict(scratch.query(UNFINISHED))
    unfinished = sum(int(v) for v in states.values())
    live, dead, vacuums, sizes = table_stats(scratch)
    return Sample(
        t=round(t, 1),
        claims=len(timings),
        claimed=sum(n for _, n in timings),
        claim_p50_ms=round(percentile(ms, 0.5), 3),
        claim_p99_ms=round(percentile(ms, 0.99), 3),
        claim_max_ms=round(max(ms, default=0.0), 3),
        enqueued=producer.sent,
        backlog=int(states.get("pending", 0)),
        running=int(states.get("running", 0)),
        completed=producer.sent - unfinished,
        live=live,
        dead=dead,
        vacuums=vacuums,
        sizes=sizes,
        pinned=sum(p.open for p in pinners),
    ), ms


def minute_line(minute: int, window: list[Sample], claims_ms: list[float], args: argparse.Namespace) -> dict[str, Any]:
    last, rate = window[-1], args.rate
    start, end = (minute - 1) * 60, minute * 60
    pins = [(args.pin_first + i * args.pin_gap, args.pin_first + i * args.pin_gap + args.pin_seconds) for i in range(args.pins)]
    row = {
        "minute": minute,
        "claim_p50_ms": round(percentile(claims_ms, 0.5), 2),
        "claim_p99_ms": round(percentile(claims_ms, 0.99), 2),
        "claims": len(claims_ms),
        "backlog_max": max(s.backlog for s in window),
        "backlog_max_s": round(max(s.backlog for s in window) / rate, 2),
        "completed": last.completed,
        "live": last.live,
        "dead": last.dead,
        "vacuums": last.vacuums,
        "sizes_mb": {k: round(v / 2**20, 2) for k, v in sorted(last.sizes.items()) if v >= 2**16},
        "pinned": any(a < end and b > start for a, b in pins),
    }
    sizes = ", ".join(f"{k.removeprefix('conveyor_')} {v}" for k, v in row["sizes_mb"].items())
    print(
        f"min {minute:2d}{' pinned' if row['pinned'] else '       '} | claim p50 {row['claim_p50_ms']:7.2f} ms "
        f"p99 {row['claim_p99_ms']:8.2f} ms ({len(claims_ms)} claims) | backlog max {row['backlog_max']:7d} "
        f"({row['backlog_max_s']:.2f} s) | completed {last.completed:9d} | tuples live {last.live:8d} dead {last.dead:8d} "
        f"| vacuums {last.vacuums:3d} | MB: {sizes}",
        flush=True,
    )
    return row


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    stop = threading.Event()
    folder = tempfile.mkdtemp(prefix="conveyor-health-")
    scratch = Scratch.create(args.backend)
    scratch.query("CREATE TABLE health_unrelated (id INTEGER PRIMARY KEY, note TEXT)")
    scratch.query("INSERT INTO health_unrelated (id, note) VALUES (1, 'analytics')")
    env = {"CONVEYOR_HEALTH_CLAIMS": folder}
    workers = [
        WorkerProcess(scratch.url, concurrency=args.concurrency, app="bench.health_app:app", env=env) for _ in range(args.workers)
    ]
    pinners: list[Pinner] = []
    producer = Producer(scratch.url, args.rate, stop)
    claims = Claims(folder)
    samples: list[Sample] = []
    minutes: list[dict[str, Any]] = []
    print(
        f"health: {args.backend}, {args.rate:g} jobs/s for {args.minutes:g} min, {args.workers} worker processes x "
        f"concurrency {args.concurrency}; {args.pins} pinning transactions of {args.pin_seconds:g} s from "
        f"{args.pin_first:g} s, {args.pin_gap:g} s apart; label {args.label!r}",
        flush=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(os.listdir(folder)) and time.monotonic() < deadline:  # the workers' first claim
            for w in workers:
                w.check()
            time.sleep(0.1)
        start = time.monotonic()
        producer.start()
        pinners += [Pinner(scratch, args.pin_first + i * args.pin_gap, args.pin_seconds, stop, start) for i in range(args.pins)]
        for p in pinners:
            p.start()
        minute_ms: list[float] = []
        window: list[Sample] = []
        for n in range(1, int(args.minutes * 60 / SAMPLE) + 1):
            time.sleep(max(0.0, start + n * SAMPLE - time.monotonic()))
            for w in workers:
                w.check()
            s, ms = sample(scratch, time.monotonic() - start, claims, producer, pinners)
            samples.append(s)
            window.append(s)
            minute_ms += ms
            if n % int(60 / SAMPLE) == 0:
                minutes.append(minute_line(len(minutes) + 1, window, minute_ms, args))
                window, minute_ms = [], []
    finally:
        stop.set()
        for p in pinners:
            p.join(timeout=10)
        for w in workers:
            w.stop()
        scratch.close()
        shutil.rmtree(folder, ignore_errors=True)
    return summarise(args, samples, minutes, producer, pinners), [asdict(s) for s in samples]


def summarise(
    args: argparse.Namespace, samples: list[Sample], minutes: list[dict[str, Any]], producer: Producer, pinners: list[Pinner]
) -> dict[str, Any]:
    pin_windows = [list(p.held) for p in pinners if p.held is not None]  # when each really held its snapshot
    pin_end = max((w[1] for w in pin_windows), default=0.0)
    dead_after = [s for s in samples if s.t >= pin_end]
    cleared = next((s.t - pin_end for s in dead_after if s.dead <= max(1000, samples[0].dead * 2)), None)
    summary = {
        "backend": args.backend,
        "label": args.label,
        "rate": args.rate,
        "minutes": args.minutes,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "pins": pin_windows,
        "enqueued": producer.sent,
        "producer_max_late_s": round(producer.late, 3),
        "completed": samples[-1].completed if samples else 0,
        "backlog_max": max((s.backlog for s in samples), default=0),
        "backlog_max_s": round(max((s.backlog for s in samples), default=0) / args.rate, 2),
        "claim_p99_first_ms": minutes[0]["claim_p99_ms"] if minutes else None,
        "claim_p99_last_ms": minutes[-1]["claim_p99_ms"] if minutes else None,
        "claim_p99_max_ms": max((m["claim_p99_ms"] for m in minutes), default=None),
        "dead_max": max((s.dead for s in samples), default=0),
        "dead_end": samples[-1].dead if samples else 0,
        "dead_cleared_after_pins_s": cleared,
        "size_max_mb": round(max((sum(s.sizes.values()) for s in samples), default=0) / 2**20, 1),
        "size_end_mb": round(sum(samples[-1].sizes.values()) / 2**20, 1) if samples else 0,
        "per_minute": minutes,
    }
    return summary


def chart(path: Path, summary: dict[str, Any], samples: list[dict[str, Any]]) -> None:
    """Claim latency (log scale), backlog and dead tuples over time; pinned periods shaded."""
    w, h, left, right, top, gap = 900, 170, 70, 20, 40, 40
    end = max((s["t"] for s in samples), default=60.0)
    panels = [
        ("claim latency, ms (log)", [("p99", "#c0392b", "claim_p99_ms"), ("p50", "#2471a3", "claim_p50_ms")], True),
        ("backlog, due jobs", [("backlog", "#7d3c98", "backlog")], False),
        ("dead tuples in Conveyor's tables", [("dead", "#b9770e", "dead")], False),
    ]
    height = top + len(panels) * (h + gap) + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        (
            f'<text x="{left}" y="20" font-size="14">{summary["backend"]} – {summary["label"]}: {summary["rate"]:g} jobs/s, '
            f"{summary['workers']} workers x {summary['concurrency']}; shaded: long transactions pinning the horizon</text>"
        ),
    ]

    def x(t: float) -> float:
        return left + (w - left - right) * t / end

    for i, (title, series, log) in enumerate(panels):
        y0 = top + i * (h + gap)
        for a, b in summary["pins"]:
            out.append(f'<rect x="{x(a):.1f}" y="{y0}" width="{x(min(b, end)) - x(a):.1f}" height="{h}" fill="#999" opacity="0.18"/>')
        out.append(f'<rect x="{left}" y="{y0}" width="{w - left - right}" height="{h}" fill="none" stroke="#444"/>')
        out.append(f'<text x="{left}" y="{y0 - 6}" font-size="12">{title}</text>')
        values = [s[key] for _, _, key in series for s in samples]
        if log:
            lo = math.floor(math.log10(max(min((v for v in values if v > 0), default=0.1), 0.01)))
            hi = max(lo + 1, math.ceil(math.log10(max(max(values, default=1.0), 0.1))))

            def y(v: float, lo: float = lo, hi: float = hi, y0: float = y0) -> float:
                return y0 + h - h * (math.log10(max(v, 10**lo)) - lo) / (hi - lo)

            ticks = [10.0**e for e in range(int(lo), int(hi) + 1)]
        else:
            top_value = max(max(values, default=1.0), 1.0) * 1.1

            def y(v: float, top_value: float = top_value, y0: float = y0) -> float:
                return y0 + h - h * v / top_value

            step = 10.0 ** math.floor(math.log10(top_value))
            while top_value / step < 4:
                step /= 2
            ticks = [k * step for k in range(int(top_value / step) + 1)]
        for v in ticks:
            out.append(f'<line x1="{left - 4}" x2="{w - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
            label = f"{v:g}" if v < 10_000 else f"{v / 1000:g}k"
            out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{label}</text>')
        for n, (name, colour, key) in enumerate(series):
            points = " ".join(f"{x(s['t']):.1f},{y(s[key]):.1f}" for s in samples)
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{points}"/>')
            out.append(f'<text x="{w - right - 60}" y="{y0 + 14 + n * 13}" fill="{colour}">{name}</text>')
        for m in range(int(end // 60) + 1):
            out.append(f'<text x="{x(m * 60):.1f}" y="{y0 + h + 14}" text-anchor="middle">{m}</text>')
    out.append(f'<text x="{w / 2}" y="{height - 2}" text-anchor="middle">minutes</text>')
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=800.0, help="jobs enqueued per second")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--pins", type=int, default=3, help="long transactions pinning the horizon")
    parser.add_argument("--pin-seconds", type=float, default=120.0)
    parser.add_argument("--pin-first", type=float, default=60.0, help="seconds from the start to the first")
    parser.add_argument("--pin-gap", type=float, default=60.0, help="seconds between their starts")
    parser.add_argument("--label", default="current")
    parser.add_argument("--chart", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results file and the chart")
    parser.add_argument("--redraw", type=Path, default=None, help="only draw the chart of a kept results file")
    args = parser.parse_args()
    if args.redraw is not None:
        kept = json.loads(args.redraw.read_text())
        chart(args.chart or args.redraw.with_suffix(".svg"), kept, kept["samples"])
        return
    summary, samples = run(args)
    name = f"health-{args.backend}-{args.label}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps({**summary, "samples": samples}, indent=1) + "\n")
    chart(args.chart or args.out / f"{name}.svg", summary, samples)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
