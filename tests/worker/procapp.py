"""The app that real worker processes in the tests run (`conveyor worker tests.worker.procapp:app`).

Its handlers append `start|end <job id> <pid>` lines to $RUN_LOG so tests can see what ran where.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from pydantic import BaseModel

from conveyor import Conveyor, JobContext

app = Conveyor()  # CONVEYOR_DATABASE_URL from the environment


class Nap(BaseModel):
    seconds: float = 0.0
    gate: str | None = None  # finish early once this file exists


def record(event: str, job_id: int) -> None:
    with open(os.environ["RUN_LOG"], "a") as log:
        log.write(f"{event} {job_id} {os.getpid()} {time.time():.6f}\n")


@app.job(max_attempts=3, backoff=0.05)
def nap(p: Nap, ctx: JobContext) -> int:
    record("start", ctx.job_id)
    deadline = time.monotonic() + p.seconds
    while time.monotonic() < deadline:
        if p.gate and Path(p.gate).exists():
            break
        time.sleep(0.02)
    record("end", ctx.job_id)
    return os.getpid()


@app.job(max_attempts=2, backoff=0.05)
def crash(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
    record("start", ctx.job_id)
    os._exit(3)  # takes the whole worker process down


@app.job(max_attempts=1, timeout=0.5)
def hang(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
    record("start", ctx.job_id)
    while True:  # ignores ctx.cancelled: its thread can never be taken back
        time.sleep(0.05)


@app.job(max_attempts=1, timeout=1)
async def stubborn(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
    record("start", ctx.job_id)
    while True:  # swallows every cancellation: only leaving it behind ends its run
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass


@app.job(max_attempts=1)
async def blocker(p: Nap, ctx: JobContext) -> None:
    record("start", ctx.job_id)
    time.sleep(p.seconds)  # noqa: ASYNC251 (blocks the event loop: the mistake the worker must survive and report)
    record("end", ctx.job_id)
