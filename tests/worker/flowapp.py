"""The app the flow-control process tests run (`conveyor worker tests.worker.flowapp:app`).

Handlers append `start|end <job id> <pid> <time>` lines to $RUN_LOG; FLOW_CRON=1 declares a
schedule firing every second.
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from conveyor import Conveyor, JobContext

app = Conveyor()  # CONVEYOR_DATABASE_URL from the environment


class Nap(BaseModel):
    seconds: float = 0.0


def record(event: str, job_id: int) -> None:
    with open(os.environ["RUN_LOG"], "a") as log:
        log.write(f"{event} {job_id} {os.getpid()} {time.time():.6f}\n")


@app.job(rate_limit="20/s")
def limited(p: Nap, ctx: JobContext) -> None:
    record("start", ctx.job_id)


@app.job(concurrency=2)
def exclusive(p: Nap, ctx: JobContext) -> None:
    record("start", ctx.job_id)
    time.sleep(p.seconds)
    record("end", ctx.job_id)


@app.job()
def tick(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
    record("start", ctx.job_id)


if os.environ.get("FLOW_CRON"):
    app.cron("* * * * * *", "tick", name="every-second")
