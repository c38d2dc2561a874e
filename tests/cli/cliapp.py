"""The app the CLI tests load with ``--app tests.cli.cliapp:app`` (database from CONVEYOR_DATABASE_URL)."""

from __future__ import annotations

from conveyor import Conveyor

app = Conveyor()


@app.job(queue="email", max_attempts=1)
def send_email(p: dict) -> None:  # type: ignore[type-arg]
    return None


app.cron("0 3 * * *", "send_email", {"n": 7}, name="nightly-digest")
