"""Where a drained job's time goes: py-spy samples a real worker process through a drain.

    python bench/profile.py --backend sqlite|postgres [--count 50000] [--top 25] [--enqueue | --single]

Queues ``count`` no-op jobs, starts ``conveyor worker bench.app:app``, samples it with
py-spy (``--idle`` included, so waiting on the database shows) from the first claim to the
last completion, and prints the functions with the most samples as µs per job: inclusive
(the function and what it calls) and self (its own lines). ``--enqueue`` profiles bulk
enqueueing in this process instead, ``--single`` one ``app.enqueue`` per job.
"""

from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import CONCURRENCY, bench_app, enqueue_noops, wait_for
from bench.scratch import Scratch
from bench.workers import WorkerProcess
from conveyor import Conveyor

PY_SPY = Path(sys.executable).with_name("py-spy")


def record(pid: int, out: Path, rate: int) -> subprocess.Popen[bytes]:
    cmd = [str(PY_SPY), "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate), "--output", str(out)]
    cmd += ["--idle", "--threads", "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize(raw: Path, per_job_us: float, top: int, thread_filter: str | None = None, within: str | None = None) -> str:
    """Collapsed stacks → per thread, the functions with most samples as µs of wall time per job.

    Each sampled thread spans the whole run, so a thread's samples scale to ``per_job_us``;
    its idle frames (the event loop's select, the bridge waiting for work) are its slack.
    ``within``: only the stacks that pass through this function (the timed part of a run).
    """
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        if thread_filter and thread_filter not in thread:
            continue
        if within and not any(f.startswith(within + " ") for f in frames[1:]):
            continue
        totals[thread] += count
        names = [short(f) for f in frames[1:]]
        for name in set(names):
            inclusive[thread][name] += count
        if names:
            own[thread][names[-1]] += count
    lines = [f"wall time per job: {per_job_us:.1f} µs"]
    for thread, total in totals.most_common():
        scale = per_job_us / total
        lines.append(f"\n### thread {thread} ({total} samples)\n\n| µs/job self | µs/job incl. | function |\n|---:|---:|---|")
        lines += [f"| {c * scale:.2f} | {inclusive[thread][n] * scale:.2f} | {n} |" for n, c in own[thread].most_common(top)]
    return "\n".join(lines)


def short(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``func (module.py)``: lines merged per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    return f"{name} ({'/'.join(parts[-2:])})"


def profile_drain(backend: str, count: int, rate: int, top: int) -> str:
    with Scratch.create(backend) as db, tempfile.TemporaryDirectory() as folder:
        app = bench_app(db.url)
        try:
            enqueue_noops(app, count)
        finally:
            app.close()
        out = Path(folder) / "drain.txt"
        with WorkerProcess(db.url, concurrency=CONCURRENCY) as worker:
            time.sleep(0.3)  # imports done before sampling starts
            spy = record(worker.pid, out, rate)
            wait_for(lambda: db.completed_after(0) >= count, 600, "the drain", worker)
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        done, first, last = db.window(0)
        per_job_us = (last - first) / done * 1e6
        header = f"drain of {done} jobs on {backend}: {done / (last - first):,.0f} jobs/s (with py-spy attached)"
        return header + "\n" + summarize(out, per_job_us, top)


def profile_enqueue(backend: str, count: int, rate: int, top: int) -> str:
    with Scratch.create(backend) as db, tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "enqueue.txt"
        app = bench_app(db.url)
        try:
            app.enqueue("noop", {})
            spy = record(int(__import__("os").getpid()), out, rate)
            time.sleep(0.5)
            started = time.perf_counter()
            enqueue_noops(app, count)
            elapsed = time.perf_counter() - started
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        finally:
            app.close()
        header = f"bulk enqueue of {count} jobs on {backend}: {count / elapsed:,.0f} jobs/s (with py-spy attached)"
        # Only the samples inside the timed call: py-spy also saw the wait for it to attach.
        return header + "\n" + summarize(out, elapsed / count * 1e6, top, thread_filter="MainThread", within="enqueue_noops")


def profile_single(backend: str, count: int, rate: int, top: int) -> str:
    """``count`` single ``app.enqueue`` calls in this process: where each call's microseconds go,
    waiting on the database (socket reads, the pool) included."""
    with Scratch.create(backend) as db, tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "single.txt"
        app = bench_app(db.url)
        try:
            for i in range(10):
                app.enqueue("noop", {"i": -i})
            spy = record(int(__import__("os").getpid()), out, rate)
            time.sleep(0.5)
            started = time.perf_counter()
            single_enqueues(app, count)
            elapsed = time.perf_counter() - started
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        finally:
            app.close()
        header = f"single enqueue of {count} jobs on {backend}: {count / elapsed:,.0f} jobs/s (with py-spy attached)"
        return header + "\n" + summarize(out, elapsed / count * 1e6, top, thread_filter="MainThread", within="single_enqueues")


def single_enqueues(app: Conveyor, count: int) -> None:
    for i in range(count):
        app.enqueue("noop", {"i": i})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=1000, help="samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--enqueue", action="store_true", help="profile bulk enqueue instead of the drain")
    parser.add_argument("--single", action="store_true", help="profile single enqueues (one call a job) instead")
    args = parser.parse_args(argv)
    fn = profile_single if args.single else profile_enqueue if args.enqueue else profile_drain
    print(fn(args.backend, args.count, args.rate, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
