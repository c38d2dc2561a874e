"""The ``conveyor`` command: run workers, migrate, and look at and steer the queue."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading

import click

from conveyor.app import Conveyor
from conveyor.config import Settings
from conveyor.errors import ConveyorError


def load_app(target: str) -> Conveyor:
    """Import ``module:attribute`` and return the Conveyor it names."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter(f"expected MODULE:APP, e.g. shop.jobs:app, not {target!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, Conveyor):
        raise click.BadParameter(f"{target!r} is not a Conveyor app (got {type(app).__name__})")
    return app


@click.group()
@click.option("--log-level", default="INFO", show_default=True, envvar="CONVEYOR_LOG_LEVEL")
def main(log_level: str) -> None:
    """Conveyor: background jobs in the database you already have."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")


@main.command()
@click.argument("app_path", metavar="MODULE:APP")
@click.option("--queues", help="Comma-separated queues (default: every queue the app declares).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 10_000), help="Jobs at once per process.")
@click.option("--processes", "-p", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--poll-interval", type=click.FloatRange(0.001, 60), help="Seconds between polls when idle.")
@click.option("--shutdown-grace", type=click.FloatRange(0, 3600), help="Seconds running jobs get to finish on SIGTERM.")
def worker(app_path: str, queues: str | None, concurrency: int | None, processes: int, poll_interval: float | None, shutdown_grace: float | None) -> None:
    """Run workers until SIGTERM or SIGINT (twice: at once)."""
    app = load_app(app_path)
    settings = {k: v for k, v in {"poll_interval": poll_interval, "shutdown_grace": shutdown_grace}.items() if v is not None}
    options = {"queues": queues.split(",") if queues else None, "concurrency": concurrency, **settings}
    if processes > 1:
        from conveyor.worker.supervisor import supervise

        grace = shutdown_grace if shutdown_grace is not None else app.settings.shutdown_grace
        raise SystemExit(supervise(run_one_worker, processes, {"app": app, "options": options}, grace))
    run_one_worker(app, options)


def run_one_worker(app: Conveyor, options: dict[str, object]) -> None:
    """Run one worker; exit at once afterwards even if an overrunning sync handler's thread lingers."""
    try:
        app.run_worker(**options)
    except ConveyorError as exc:
        raise click.ClickException(str(exc)) from exc
    if any(t.name.startswith("conveyor-job") and t.is_alive() for t in threading.enumerate()):
        logging.shutdown()
        os._exit(0)


@main.command()
@click.option("--database-url", envvar="CONVEYOR_DATABASE_URL", help="Default: from conveyor.toml or sqlite:///conveyor.db")
def migrate(database_url: str | None) -> None:
    """Create or upgrade Conveyor's tables."""
    settings = Settings.load(database_url=database_url)
    app = Conveyor(settings.database_url)
    try:
        applied = app.backend.migrate()
    except ConveyorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"applied migrations {applied}" if applied else "schema is up to date")


if __name__ == "__main__":
    main()
