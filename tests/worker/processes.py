"""Shared set-up for tests that run real worker processes against a test's database."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

from conveyor import Conveyor


def worker_env(database_url: str, tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a worker process: the test's database, fast polling, a run log."""
    return {
        **os.environ,
        "CONVEYOR_DATABASE_URL": database_url,
        "CONVEYOR_POLL_INTERVAL": "0.05",
        "RUN_LOG": str(tmp_path / "runs.log"),
        **{f"CONVEYOR_{k.upper()}": v for k, v in settings.items()},
    }


def client_of(app: Conveyor, database_url: str) -> Conveyor:
    """A client app on ``database_url`` that knows ``app``'s job types with the same options."""
    client = Conveyor(database_url)
    for spec in app.registry:
        client.registry.declare(spec.func, spec.name, {f.name: getattr(spec.options, f.name) for f in fields(spec.options)})
    return client
