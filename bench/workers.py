"""Worker processes for the benchmark: the real ``conveyor worker`` command, watched from outside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

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
