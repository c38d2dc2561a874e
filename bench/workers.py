"""Worker processes for the benchmark: the real ``conveyor worker`` command, watched from outside.

Run as a script, it measures many worker processes on one database:

    python bench/workers.py --backend postgres [--processes 1,2,4,8,16] [--jobs 20000] [--concurrency 10]

For each count it queues ``--jobs`` no-op jobs, starts that many worker processes (each its
own ``conveyor worker``, as on separate machines), and reports the drain rate, the claim
latency p50/p99 timed in the workers (bench/health_app.py), the server connections each
process held (PostgreSQL's pg_stat_activity, by application_name), how many claims came back
empty (a woken worker that found nothing: the cost of a thundering herd), and checks that
every job ran exactly once (completed with attempt 1: no claim conflict lost or doubled).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class WorkerProcess:
    """``conveyor worker bench.app:app`` on a scratch database, with its memory readable."""

    def __init__(
        self,
        url: str,
        *,
        concurrency: int,
        processes: int = 1,
        poll_interval: float | None = None,
        app: str = "bench.app:app",
        env: dict[str, str] | None = None,
    ) -> None:
        env = {**os.environ, "CONVEYOR_DATABASE_URL": url, "CONVEYOR_LOG_LEVEL": "WARNING", **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        cmd = [
            sys.executable,
            "-m",
            "conveyor",
            "worker",
            app,
            "--concurrency",
            str(concurrency),
            "--processes",
            str(processes),
            "--shutdown-grace",
            "5",
        ]
        if poll_interval is not None:
            cmd += ["--poll-interval", str(poll_interval)]
        self.started = time.monotonic()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - a file, not a pipe: a chatty worker must never block on it
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """This process and its children (the supervisor's workers with ``--processes``)."""
        found = [self.pid]
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:
            children = []
        return found + [int(c) for c in children]

    def memory_mb(self, field: str = "VmRSS") -> float:
        """``VmRSS`` (now) or ``VmHWM`` (peak) of the worker, in MiB; the largest process counts."""
        best = 0.0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(field + ":"):
                        best = max(best, int(line.split()[1]) / 1024)
            except OSError:
                continue
        return best

    def cpu_seconds(self) -> float:
        """User plus system CPU time used so far by the worker and its children (from /proc)."""
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        return total

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.stderr()[-2000:]}")

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def drain_with(backend: str, processes: int, jobs: int, concurrency: int) -> dict[str, Any]:
    """One measurement: ``processes`` workers drain ``jobs`` queued no-op jobs."""
    import statistics

    from bench.app import declare
    from bench.scratch import Scratch
    from conveyor import Conveyor

    folder = tempfile.mkdtemp(prefix="conveyor-workers-")
    with Scratch.create(backend) as scratch:
        app = declare(Conveyor(scratch.url))
        for start in range(0, jobs, 5000):
            app.enqueue_many([("noop", {"i": i}) for i in range(start, min(start + 5000, jobs))])
        app.close()
        sep = "&" if "?" in scratch.url else "?"
        workers = [
            WorkerProcess(
                scratch.url + (f"{sep}application_name=conveyor-bench-{i}" if backend == "postgres" else ""),
                concurrency=concurrency,
                app="bench.health_app:app",
                env={"CONVEYOR_HEALTH_CLAIMS": folder},
            )
            for i in range(processes)
        ]
        started = time.monotonic()
        connections: dict[str, int] = {}
        try:
            while scratch.unfinished_after(0):
                for w in workers:
                    w.check()
                if backend == "postgres":
                    for name, count in scratch.query(
                        "SELECT application_name, count(*) FROM pg_stat_activity "
                        "WHERE application_name LIKE 'conveyor-bench-%%' GROUP BY application_name"
                    ):
                        connections[name] = max(connections.get(name, 0), int(count))
                time.sleep(0.05)
            elapsed = time.monotonic() - started
        finally:
            for w in workers:
                w.stop()
        once = int(scratch.query("SELECT count(*) FROM conveyor_jobs WHERE state = 'completed' AND attempt = 1")[0][0])
    claims: list[tuple[float, int]] = []
    for name in os.listdir(folder):
        for line in Path(folder, name).read_text().splitlines():
            _, seconds, rows = line.split()
            claims.append((float(seconds) * 1000, int(rows)))
    busy = sorted(ms for ms, rows in claims if rows)
    return {
        "processes": processes,
        "jobs": jobs,
        "drain_per_s": round(jobs / elapsed),
        "ran_exactly_once": once == jobs,
        "claim_p50_ms": round(statistics.median(busy), 2) if busy else None,
        "claim_p99_ms": round(busy[min(len(busy) - 1, int(len(busy) * 0.99))], 2) if busy else None,
        "claims": len(claims),
        "empty_claims": sum(1 for _, rows in claims if not rows),
        "connections_per_process_max": max(connections.values(), default=0),
    }


def main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--processes", default="1,2,4,8,16")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for count in (int(p) for p in args.processes.split(",")):
        row = drain_with(args.backend, count, args.jobs, args.concurrency)
        rows.append(row)
        print(
            f"{count:3d} processes: {row['drain_per_s']:6d} jobs/s, claim p50 {row['claim_p50_ms']} ms p99 {row['claim_p99_ms']} ms, "
            f"{row['claims']} claims ({row['empty_claims']} empty), <= {row['connections_per_process_max']} connections a process, "
            f"exactly once: {row['ran_exactly_once']}",
            flush=True,
        )
    print(json.dumps({"backend": args.backend, "concurrency": args.concurrency, "runs": rows}))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
