"""The smallest complete Conveyor program: declare jobs, enqueue them, run a worker on SQLite.

Run it with `make demo` (until the shop example lands) or `python examples/quickstart.py`.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from pydantic import BaseModel

from conveyor import Conveyor, JobContext, Priority
from conveyor.testing import running_worker, wait_until

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(message)s")

db = Path(tempfile.mkdtemp()) / "quickstart.db"
app = Conveyor(f"sqlite:///{db}")


class Confirmation(BaseModel):
    order_id: str
    email: str


class Invoice(BaseModel):
    order_id: str




@app.job(queue="email", max_attempts=3, backoff="fixed", timeout=10)
def send_confirmation(p: Confirmation, ctx: JobContext) -> str:
    if p.order_id == "o-2" and ctx.attempt == 1:
        raise ConnectionError("SMTP server not answering")  # retried after the backoff
    ctx.enqueue("generate_invoice", {"order_id": p.order_id})  # committed with this completion
    return f"sent to {p.email}"


@app.job(max_attempts=1)
async def generate_invoice(p: Invoice) -> dict[str, str]:
    return {"invoice": f"/invoices/{p.order_id}.pdf"}


if __name__ == "__main__":
    for n in range(1, 4):
        app.enqueue("send_confirmation", {"order_id": f"o-{n}", "email": f"user{n}@example.com"}, priority=Priority.HIGH)
    try:
        app.enqueue("send_confirmation", {"order_id": "o-4"})
    except Exception as exc:  # refused at enqueue, nothing stored
        print(f"refused: {exc}")
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.count(state="completed") == 6, timeout=30)
    for job in sorted(app.admin.jobs.list(), key=lambda j: j.id):
        print(f"job {job.id:>2} {job.type:<18} {job.state:<10} attempts={job.attempt} result={job.result}")
    print(f"database: {db}")
