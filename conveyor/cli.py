"""The ``conveyor`` command: run workers, migrate, and look at and steer the queue."""

from __future__ import annotations

import dataclasses
import functools
import getpass
import importlib
import json
import logging
import os
import secrets
import socket
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from conveyor.admin import Selection
from conveyor.app import Conveyor
from conveyor.backends import location, sqlite_file
from conveyor.config import Settings
from conveyor.errors import BackendError, ConveyorError
from conveyor.formatting import ago, duration, json_value, number, percent
from conveyor.job import Job, JobState
from conveyor.logs import configure as configure_logging
from conveyor.stats import is_live
from conveyor.worker.supervisor import REPLACE_ME, supervise


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


DATABASE_HELP = (
    "The database, e.g. sqlite:////var/lib/app/jobs.db or postgresql://host/db. "
    "Default: CONVEYOR_DATABASE_URL, then DATABASE_URL, then conveyor.toml, then sqlite:///conveyor.db."
)


def app_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--database-url and --app, on every command that touches the database."""
    func = click.option("--app", "app_path", metavar="MODULE:APP", envvar="CONVEYOR_APP",
                        help="Load this app (its settings, job types and cron schedules); also CONVEYOR_APP.")(func)
    return click.option("--database-url", envvar="CONVEYOR_DATABASE_URL", help=DATABASE_HELP)(func)


def with_database(app: Conveyor, database_url: str | None) -> Conveyor:
    """``app`` pointed at ``--database-url`` when one is given (before it opens any connection)."""
    if database_url:
        app.settings = dataclasses.replace(app.settings, database_url=database_url)
    return app


def open_app(database_url: str | None, app_path: str | None, existing: bool = True) -> Conveyor:
    """The user's app (``--app``, needed for cron schedules), or a bare one on the database URL.

    ``existing``: refuse a SQLite file that is not there rather than create an empty one, so a
    command run from the wrong directory (or with no URL configured) says so instead of
    reporting an empty queue.
    """
    app = with_database(load_app(app_path), database_url) if app_path else Conveyor(Settings.load(database_url=database_url).database_url)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:  # closed when the command ends: an in-process invocation (a test runner) leaks no pool
        ctx.call_on_close(app.close)
    path = sqlite_file(app.settings.database_url)
    if existing and path is not None and not os.path.exists(path):
        raise click.ClickException(
            f"no Conveyor database at {path}: give --database-url (or set CONVEYOR_DATABASE_URL or DATABASE_URL), "
            "or run `conveyor migrate` to create one there"
        )
    return app



@click.group()
@click.option("--log-level", default="INFO", show_default=True, envvar="CONVEYOR_LOG_LEVEL")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True, envvar="CONVEYOR_LOG_FORMAT",
              help="json: one object per line with the job's id, type, queue, attempt and outcome as fields.")
def main(log_level: str, log_format: str) -> None:
    """Conveyor: background jobs in the database you already have.

    \b
    Every command that touches the database takes --database-url and --app.
    The database URL comes from, last one winning: sqlite:///conveyor.db,
    conveyor.toml, DATABASE_URL, CONVEYOR_DATABASE_URL, the --app's own
    settings, --database-url.
    """
    configure_logging(log_level, form=log_format)


@main.command()
@click.argument("app_arg", metavar="MODULE:APP", required=False)
@app_options
@click.option("--queues", help="Comma-separated queues (default: every queue the app declares).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 10_000), help="Jobs at once per process.")
@click.option(
    "--processes", "-p", type=click.IntRange(1, 256),
    help="Run this many worker processes under a supervisor that restarts one that dies (1 included). "
    "Without it: one worker process, no supervisor (run it under systemd or the like).",
)
@click.option("--poll-interval", type=click.FloatRange(0.001, 60), help="Seconds between polls when idle.")
@click.option("--shutdown-grace", type=click.FloatRange(0, 3600), help="Seconds running jobs get to finish on SIGTERM.")
def worker(app_arg: str | None, database_url: str | None, app_path: str | None, queues: str | None, concurrency: int | None, processes: int | None,
           poll_interval: float | None, shutdown_grace: float | None) -> None:
    """Run workers for MODULE:APP (or --app) until SIGTERM or SIGINT (twice: at once)."""
    if app_arg and app_path and app_arg != app_path:
        raise click.UsageError(f"two apps given: {app_arg} and --app {app_path}")
    if not (app_arg or app_path):
        raise click.UsageError("which app? give MODULE:APP (or --app / CONVEYOR_APP), e.g. conveyor worker shop.jobs:app")
    app = with_database(load_app(app_arg or app_path or ""), database_url)
    settings = {k: v for k, v in {"poll_interval": poll_interval, "shutdown_grace": shutdown_grace}.items() if v is not None}
    options = {"queues": queues.split(",") if queues else None, "concurrency": concurrency, **settings}
    if processes is not None:
        grace = shutdown_grace if shutdown_grace is not None else app.settings.shutdown_grace
        raise SystemExit(supervise(run_one_worker, processes, {"app": app, "options": options}, grace))
    run_one_worker(app, options, replace_in_place=True)


def run_one_worker(app: Conveyor, options: dict[str, Any], replace_in_place: bool = False) -> None:
    """Run one worker; exit at once afterwards even if an overrunning sync handler's thread lingers.

    A worker that stopped to be replaced (overrunning sync handlers hold its threads) is: by a
    fresh process image in place (same pid, for whatever manages it), or, under the supervisor
    (``--processes``), by the supervisor starting a new child when this one exits.
    """
    limit_memory(app.settings.max_memory_mb)
    try:
        worker = app.run_worker(**options)
    except ConveyorError as exc:
        raise click.ClickException(str(exc)) from exc
    if worker.replace and replace_in_place:
        logging.getLogger("conveyor.worker").warning("starting a fresh worker process in place of this one")
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, "-m", "conveyor", *sys.argv[1:]])
    if worker.replace:
        logging.shutdown()
        os._exit(REPLACE_ME)  # the supervisor starts a fresh child at once
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate()):
        # a handler's thread (a job's, or asyncio.to_thread's) that never returns would hold the exit
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)


def limit_memory(megabytes: int | None) -> None:
    """Cap this worker process's data (RLIMIT_DATA, ``max_memory_mb``): a handler that eats memory
    then gets MemoryError, a readable reason in its job, instead of the kernel's OOM killer
    taking the whole process and every job running in it."""
    if megabytes is None:
        return
    import resource

    limit = megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


@main.command()
@app_options
def migrate(database_url: str | None, app_path: str | None) -> None:
    """Create or upgrade Conveyor's tables (creating a SQLite file if there is none)."""
    app = open_app(database_url, app_path, existing=False)
    click.echo(f"database: {location(app.settings.database_url)}")
    try:
        applied = app.backend.migrate()
    except ConveyorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"applied migrations {applied}" if applied else "schema is up to date")



# -- monitoring and steering (status, jobs, dlq, cron, workers, prune, audit, dashboard) -------

console = Console(highlight=False)
STATE_STYLE = {
    "pending": "blue", "running": "yellow", "scheduled": "magenta", "waiting": "dim",
    "completed": "green", "dead": "bold red", "cancelled": "dim", "expired": "dim yellow",
}


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def fail_on_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConveyorError as exc:
            raise click.ClickException(str(exc)) from exc

    return run


def as_json(value: Any) -> str:
    """JSON for ``--json``: timestamps ISO-8601, records as objects."""
    return json.dumps(value, default=json_value, indent=2)


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def seconds_option(text: str | None) -> float | None:
    """"30d", "12h", "15m", "90s" or plain seconds."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use a number of seconds or 30s / 15m / 12h / 7d") from None


def stamp(moment: datetime | None) -> str:
    return "–" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def jobs_table(jobs: list[Job], now: datetime, title: str) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for name, justify in (("id", "right"), ("type", "left"), ("queue", "left"), ("state", "left"), ("attempt", "right"), ("created", "right"), ("last error", "left")):
        table.add_column(name, justify=justify, overflow="fold" if name == "last error" else "ellipsis")  # type: ignore[arg-type]
    for job in jobs:
        error = job.last_error.error if job.last_error else ""
        table.add_row(str(job.id), job.type, job.queue, state_text(job.state), f"{job.attempt}/{job.max_attempts}", ago(job.created_at, now), error[:100])
    return table


@main.command()
@app_options
@click.option("--json", "json_out", is_flag=True, help="Print the stats as JSON (timestamps ISO-8601).")
@fail_on_errors
def status(database_url: str | None, app_path: str | None, json_out: bool) -> None:
    """Queues, states, rates, workers and health at a glance."""
    app = open_app(database_url, app_path)
    stats = app.admin.stats()
    if json_out:
        click.echo(as_json({"database": location(app.settings.database_url), **dataclasses.asdict(stats)}))
        return
    t = stats.total
    health = "[green]healthy[/]" if stats.health.status == "ok" else "[bold red]degraded[/]"
    console.print(f"[bold]Conveyor[/] · {health} · {stats.workers_live} live workers · {stats.at:%Y-%m-%d %H:%M:%S} UTC")
    console.print(f"database: {escape(location(app.settings.database_url))}", overflow="fold")
    states = Table(title="Jobs by state", title_justify="left", header_style="bold")
    shown = [s for s in STATE_STYLE if s != "expired" or t.counts.get(s)]  # expired only once a job expired (80 columns)
    for state in shown:
        states.add_column(state, justify="right", style=STATE_STYLE[state])
    states.add_row(*(number(t.counts[s]) for s in shown))
    console.print(states)
    # Two narrow tables rather than one wide one: each fits an 80-column terminal.
    depth = Table(title="Queues", title_justify="left", header_style="bold")
    for name in ("queue", "pending", "running", "sched.", "dead", "workers", "oldest due"):
        depth.add_column(name, justify="left" if name == "queue" else "right", overflow="fold" if name == "queue" else "ellipsis")
    speed = Table(title="Queue rates (15 min)", title_justify="left", header_style="bold")
    for name in ("queue", "done/min", "failure", "run p50", "run p95", "wait p95"):
        speed.add_column(name, justify="left" if name == "queue" else "right", overflow="fold" if name == "queue" else "ellipsis")
    for q in stats.queues:
        assert q.queue is not None
        workers = stats.live_workers.get(q.queue, 0)
        depth.add_row(
            Text(f"{q.queue} (paused)", style="yellow") if q.queue in stats.paused else q.queue, number(q.counts["pending"]), number(q.counts["running"]), number(q.counts["scheduled"]),
            Text(number(q.counts["dead"]), style="red" if q.counts["dead"] else ""), Text(str(workers), style="" if workers else "red"),
            duration(q.oldest_pending_age),
        )
        speed.add_row(q.queue, f"{q.throughput['1m'] * 60:,.1f}", percent(q.failure_rate), duration(q.run_time.p50), duration(q.run_time.p95),
                      duration(q.wait_time.p95))
    console.print(depth)
    console.print(speed)
    for check in stats.health.checks:
        if not check.ok:
            console.print(f"[red]✕ {escape(check.name)}[/]: {escape(check.detail)}")


@main.command()
@app_options
@click.option("--state", "-s", multiple=True, type=click.Choice([s.value for s in JobState]))
@click.option("--queue", "-q", multiple=True)
@click.option("--type", "-t", "job_type", multiple=True)
@click.option("--workflow", "workflow_id")
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--before-id", type=click.IntRange(1), help="Page: only jobs older than this id.")
@click.option("--json", "json_out", is_flag=True, help="Print the jobs as JSON (timestamps ISO-8601).")
@fail_on_errors
def jobs(database_url: str | None, app_path: str | None, state: tuple[str, ...], queue: tuple[str, ...], job_type: tuple[str, ...],
         workflow_id: str | None, limit: int, before_id: int | None, json_out: bool) -> None:
    """List jobs, newest first, filtered by state, queue, type or workflow."""
    app = open_app(database_url, app_path)
    where = {k: v for k, v in {"state": state, "queue": queue, "type": job_type, "workflow_id": workflow_id}.items() if v}
    found = app.admin.jobs.list(limit=limit, before_id=before_id, **where)
    if json_out:
        click.echo(as_json([dataclasses.asdict(j) for j in found]))
        return
    console.print(jobs_table(found, app.now(), f"{len(found)} jobs"))


@main.group()
def dlq() -> None:
    """The dead-letter queue: list, show, retry, purge."""


@dlq.command("list")
@app_options
@click.option("--queue", "-q", multiple=True)
@click.option("--type", "-t", "job_type", multiple=True)
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=50, show_default=True)
@fail_on_errors
def dlq_list(database_url: str | None, app_path: str | None, queue: tuple[str, ...], job_type: tuple[str, ...], limit: int) -> None:
    """Dead jobs, newest first, with their last error."""
    app = open_app(database_url, app_path)
    where: dict[str, Any] = {k: v for k, v in {"queue": queue, "type": job_type}.items() if v}
    total = app.admin.dead_letters.count(**where)
    console.print(jobs_table(app.admin.dead_letters.list(limit=limit, **where), app.now(), f"Dead letters: {total:,}"))


@dlq.command("show")
@app_options
@click.argument("job_id", type=click.IntRange(1))
@fail_on_errors
def dlq_show(database_url: str | None, app_path: str | None, job_id: int) -> None:
    """One job with its payload and whole error history."""
    app = open_app(database_url, app_path)
    job = app.admin.jobs.get(job_id)
    console.print(f"[bold]job {job.id}[/] {escape(job.type)} · queue {escape(job.queue)} · ", state_text(job.state), f" · attempt {job.attempt}/{job.max_attempts}")
    console.print(f"created {stamp(job.created_at)} · run at {stamp(job.run_at)}" + (f" · finished {stamp(job.finished_at)}" if job.finished_at else ""))
    console.print("payload:", json.dumps(job.payload, indent=2, default=json_value), markup=False)
    for error in job.errors:
        console.print(f"[red]attempt {error.attempt}[/] at {stamp(error.at)} ({escape(error.worker_id or '-')}): {escape(error.error)}")
        if error.traceback:
            console.print(error.traceback.rstrip(), markup=False, style="dim")


def dlq_bulk(verb: str) -> Callable[..., None]:
    @app_options
    @click.argument("ids", nargs=-1, type=click.IntRange(1))
    @click.option("--all", "every", is_flag=True, help="Every dead job (with --queue/--type: every matching one).")
    @click.option("--queue", "-q", multiple=True)
    @click.option("--type", "-t", "job_type", multiple=True)
    @click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
    @fail_on_errors
    def command(database_url: str | None, app_path: str | None, ids: tuple[int, ...], every: bool, queue: tuple[str, ...],
                job_type: tuple[str, ...], yes: bool) -> None:
        where: dict[str, Any] = {k: v for k, v in {"queue": queue, "type": job_type}.items() if v}
        if ids and (every or where):
            raise click.UsageError("give job ids, or --queue/--type/--all, not both")
        if not (ids or every or where):
            raise click.UsageError("give job ids, a --queue/--type filter, or --all")
        app = open_app(database_url, app_path)
        dead = app.admin.via("cli").dead_letters
        selection = Selection.of(ids) if ids else Selection.matching(**where) if where else Selection.every()
        if not ids:
            matched = dead.count(**where)
            if not matched:
                console.print("No dead jobs match.")
                return
            if not yes:
                click.confirm(f"{verb.capitalize()} {matched:,} dead jobs?", abort=True)
        with console.status(f"{'Retrying' if verb == 'retry' else 'Purging'} dead jobs…"):
            count = (dead.retry if verb == "retry" else dead.purge)(selection, actor=actor())
        console.print(f"{'Retried' if verb == 'retry' else 'Purged'} {count:,} dead jobs.")

    command.__doc__ = f"{verb.capitalize()} dead jobs: by id, by --queue/--type, or --all (the count is shown first)."
    return command


dlq.command("retry")(dlq_bulk("retry"))
dlq.command("purge")(dlq_bulk("purge"))


@main.group()
def cron() -> None:
    """Cron schedules: list, pause, resume, trigger now."""


@cron.command("list")
@app_options
@fail_on_errors
def cron_list(database_url: str | None, app_path: str | None) -> None:
    """Schedules with their next fire times."""
    app = open_app(database_url, app_path)
    rows = app.admin.schedules.list()
    now = app.now()
    table = Table(title=f"{len(rows)} schedules", title_justify="left", header_style="bold")
    for name in ("name", "expression", "tz", "job type", "status", "next fire", "last fire"):
        table.add_column(name)
    for s in rows:
        status = "disabled" if not s.enabled else "paused" if s.paused else "active"
        table.add_row(s.name, s.expression, s.tz, s.job_type, status, f"{stamp(s.next_fire_at)} ({ago(s.next_fire_at, now)})",
                      ago(s.last_fire_at, now) if s.last_fire_at else "never")
    console.print(table)


def cron_action(action: str) -> Callable[..., None]:
    @app_options
    @click.argument("name")
    @fail_on_errors
    def command(database_url: str | None, app_path: str | None, name: str) -> None:
        schedules = open_app(database_url, app_path).admin.via("cli").schedules
        {"pause": schedules.pause, "resume": schedules.resume, "trigger": schedules.trigger}[action](name, actor=actor())
        console.print(f"{name}: {action} done.")

    command.__doc__ = {"pause": "Stop a schedule from firing.", "resume": "Let a paused schedule fire again.",
                       "trigger": "Enqueue a schedule's job now."}[action]
    return command


for _action in ("pause", "resume", "trigger"):
    cron.command(_action)(cron_action(_action))


def schedule_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed((
        click.argument("name"), click.argument("expression"), click.argument("job_type", metavar="TYPE"),
        click.option("--payload", default="null", help="The jobs' payload as JSON."),
        click.option("--tz", help="IANA time zone (default UTC)."),
        click.option("--missed", type=click.Choice(["skip", "run_once"]), default="skip", show_default=True),
        click.option("--queue"), click.option("--priority", type=int),
    )):
        func = option(func)
    return func


def put_schedule(verb: str) -> Callable[..., None]:
    @app_options
    @schedule_options
    @fail_on_errors
    def command(database_url: str | None, app_path: str | None, name: str, expression: str, job_type: str, payload: str,
                tz: str | None, missed: str, queue: str | None, priority: int | None) -> None:
        app = open_app(database_url, app_path)
        try:
            data = json.loads(payload)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
        options = {k: v for k, v in (("queue", queue), ("priority", priority)) if v is not None}
        schedules = app.admin.via("cli").schedules
        put = schedules.add if verb == "add" else schedules.update
        found = put(name, expression, job_type, data, actor=actor(), tz=tz, missed=missed, **options)
        console.print(f"{name}: {'added' if verb == 'add' else 'updated'}; next fire {found.next_fire_at:%Y-%m-%d %H:%M:%S} UTC.")

    command.__doc__ = {"add": "Add a schedule at run time (stored in the database; a code declaration of the same name wins).",
                       "update": "Change a schedule added at run time."}[verb]
    return command


cron.command("add")(put_schedule("add"))
cron.command("update")(put_schedule("update"))


@cron.command("remove")
@app_options
@click.argument("name")
@fail_on_errors
def cron_remove(database_url: str | None, app_path: str | None, name: str) -> None:
    """Remove a schedule added at run time."""
    open_app(database_url, app_path).admin.via("cli").schedules.remove(name, actor=actor())
    console.print(f"{name}: removed.")


@main.group()
def job() -> None:
    """One job: show, cancel (also while running), run now, wait for its result."""


@job.command("show")
@app_options
@click.argument("job_id", type=click.IntRange(1))
@fail_on_errors
def job_show(database_url: str | None, app_path: str | None, job_id: int) -> None:
    """A job as JSON, with its whole error history."""
    app = open_app(database_url, app_path)
    click.echo(json.dumps(dataclasses.asdict(app.admin.jobs.get(job_id)), default=str, indent=2))


def job_action(action: str) -> Callable[..., None]:
    @app_options
    @click.argument("job_id", type=click.IntRange(1))
    @fail_on_errors
    def command(database_url: str | None, app_path: str | None, job_id: int) -> None:
        jobs = open_app(database_url, app_path).admin.via("cli").jobs
        state = jobs.get(job_id).state
        (jobs.cancel if action == "cancel" else jobs.run_now)(job_id, actor=actor())
        console.print(f"job {job_id}: {'cancelled' if action == 'cancel' else 'due now'} (was {state.value}).")

    command.__doc__ = {"cancel": "Cancel a job that has not finished; a running one is stopped.",
                       "run-now": "Make a scheduled (delayed or backing-off) job due now."}[action]
    return command


job.command("cancel")(job_action("cancel"))
job.command("run-now")(job_action("run-now"))


@job.command("result")
@app_options
@click.argument("job_id", type=click.IntRange(1))
@click.option("--timeout", type=click.FloatRange(0), help="Seconds to wait (default: no limit).")
@fail_on_errors
def job_result(database_url: str | None, app_path: str | None, job_id: int, timeout: float | None) -> None:
    """Wait for the job to finish and print its result as JSON (exit 1 if it did not complete)."""
    app = open_app(database_url, app_path)
    click.echo(json.dumps(app.admin.jobs.result(job_id, timeout=timeout), default=str))


@main.group()
def queues() -> None:
    """Queues: list with their pauses, pause, resume."""


@queues.command("list")
@app_options
@fail_on_errors
def queues_list(database_url: str | None, app_path: str | None) -> None:
    """Every queue, paused or not, with its jobs by state."""
    app = open_app(database_url, app_path)
    table = Table(title="Queues", title_justify="left", header_style="bold")
    for name in ("queue", "status", "pending", "running", "scheduled", "dead"):
        table.add_column(name, justify="left" if name in ("queue", "status") else "right")
    for q in app.admin.queues.list():
        status_text = Text(f"paused since {q.paused_at:%Y-%m-%d %H:%M:%S}", style="yellow") if q.paused and q.paused_at else Text("active", style="green")
        table.add_row(q.name, status_text, *(f"{q.counts.get(s, 0):,}" for s in ("pending", "running", "scheduled", "dead")))
    console.print(table)


def queue_action(action: str) -> Callable[..., None]:
    @app_options
    @click.argument("name")
    @fail_on_errors
    def command(database_url: str | None, app_path: str | None, name: str) -> None:
        queues = open_app(database_url, app_path).admin.via("cli").queues
        changed = (queues.pause if action == "pause" else queues.resume)(name, actor=actor())
        done = "paused: workers claim nothing from it" if action == "pause" else "resumed"
        console.print(f"queue {name}: {done}." if changed else f"queue {name} was already {'paused' if action == 'pause' else 'active'}.")

    command.__doc__ = {"pause": "Stop every worker claiming from the queue (running jobs finish; enqueue still works).",
                       "resume": "Let workers claim from the queue again."}[action]
    return command


queues.command("pause")(queue_action("pause"))
queues.command("resume")(queue_action("resume"))


@main.command()
@app_options
@click.option("--forget", is_flag=True, help="Also drop rows of workers silent for over an hour.")
@fail_on_errors
def workers(database_url: str | None, app_path: str | None, forget: bool) -> None:
    """Workers with their heartbeats."""
    app = open_app(database_url, app_path)
    if forget:
        forgotten = app.admin.via("cli").workers.forget(actor=actor())
        console.print(f"forgot {forgotten} silent workers")
    now = app.now()
    table = Table(title="Workers", title_justify="left", header_style="bold")
    for name in ("status", "id", "host", "pid", "queues", "running", "started", "heartbeat"):
        table.add_column(name, justify="right" if name in ("pid", "running") else "left")
    for w in app.admin.workers.list():
        live = is_live(w, now, app.settings.worker_stale_after)
        table.add_row(Text("live" if live else "gone", style="green" if live else "red"), w.id, w.host, str(w.pid), ",".join(w.queues),
                      f"{w.running}/{w.concurrency}", ago(w.started_at, now), ago(w.heartbeat_at, now))
    console.print(table)


@main.command()
@app_options
@click.option("--older-than", help="Completed jobs finished longer ago than this (e.g. 7d); default: retain_completed.")
@click.option("--keep", type=click.IntRange(0), help="Keep only the newest N completed jobs per type.")
@click.option("--batch", type=click.IntRange(1, 100_000), help="Rows per transaction (default: prune_batch).")
@click.option("--dry-run", is_flag=True, help="Only count what would go.")
@fail_on_errors
def prune(database_url: str | None, app_path: str | None, older_than: str | None, keep: int | None, batch: int | None, dry_run: bool) -> None:
    """Delete finished jobs the retention policy no longer keeps (dead jobs stay until purged)."""
    age = seconds_option(older_than)
    app = open_app(database_url, app_path)
    policy = app.admin.prune_policy(completed_older_than=age, cancelled_older_than=age, keep_completed_per_type=keep, limit=batch)
    due = app.admin.prunable(policy)
    if dry_run or not due:
        console.print(f"{due:,} jobs {'would be' if dry_run else 'to be'} pruned.")
        return
    columns = (TextColumn("[bold]Pruning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("prune", total=due)
        total = app.admin.via("cli").prune(policy, actor=actor(), on_batch=lambda n: progress.advance(task, n))
    console.print(f"Pruned {total:,} jobs.")


@main.command()
@app_options
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=50, show_default=True)
@fail_on_errors
def audit(database_url: str | None, app_path: str | None, limit: int) -> None:
    """The audit log: who retried, cancelled or purged what, how many, and when."""
    app = open_app(database_url, app_path)
    table = Table(title="Audit log", title_justify="left", header_style="bold")
    for name in ("when", "who", "action", "target", "detail"):
        table.add_column(name)
    for e in app.admin.audit.list(limit):
        table.add_row(stamp(e.at), e.actor, e.action, e.target[:60], json.dumps(e.detail, default=json_value)[:80])
    console.print(table)


@main.command()
@app_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8181, show_default=True)
def dashboard(database_url: str | None, app_path: str | None, host: str, port: int) -> None:
    """Serve the admin API and the live dashboard (needs the `web` extra)."""
    try:
        import uvicorn

        from conveyor.web import Token, create_app
        from conveyor.web.auth import Role, Tokens
    except ImportError as exc:
        raise click.ClickException(f"the dashboard needs the web extra: pip install 'conveyor[web]' ({exc})") from exc

    app = open_app(database_url, app_path)
    tokens: list[Token] | None = None
    if not Tokens.from_settings(app.settings):
        secret = secrets.token_urlsafe(24)
        tokens = [Token("admin", secret, Role.WRITE)]
        console.print(f"No admin token is configured (CONVEYOR_ADMIN_TOKEN); this run's token is: [bold]{secret}[/]")
    console.print(f"Dashboard on http://{host}:{port}/ · database: {escape(location(app.settings.database_url))}")
    uvicorn.run(create_app(app, tokens=tokens), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()


@main.command()
@app_options
@click.option("--local", is_flag=True, help="Liveness of this machine's workers: exit 1 unless one on this host has a fresh heartbeat.")
@click.option("--worker", "worker_id", metavar="ID", help="Liveness of one worker: exit 1 unless its heartbeat is fresh.")
def health(database_url: str | None, app_path: str | None, local: bool, worker_id: str | None) -> None:
    """Exit 0 when healthy, 1 when degraded (or the worker asked about is not live), 2 when the database cannot be reached.

    For probes: a readiness or monitoring check runs ``conveyor health``; a container's liveness
    probe runs ``conveyor health --local`` beside its worker.
    """
    try:
        app = open_app(database_url, app_path)
    except click.ClickException as exc:  # no database file there: as unreachable as a server that does not answer
        click.echo(f"unhealthy: {exc.message}", err=True)
        raise SystemExit(2) from exc
    try:
        if local or worker_id:
            now, stale = app.now(), app.settings.worker_stale_after
            host = socket.gethostname()
            mine = [w for w in app.admin.workers.list() if (w.id == worker_id if worker_id else w.host == host)]
            live = [w for w in mine if is_live(w, now, stale)]
            what = f"worker {worker_id}" if worker_id else f"workers on {host}"
            click.echo(f"{what}: {len(live)} live of {len(mine)} registered (heartbeat within {stale:g} s)")
            raise SystemExit(0 if live else 1)
        found = app.admin.health()
    except BackendError as exc:
        click.echo(f"unhealthy: database unreachable: {exc}", err=True)
        raise SystemExit(2) from exc
    except ConveyorError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(found.status.value)
    for check in found.checks:
        click.echo(f"  {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    raise SystemExit(0 if found.status == "ok" else 1)
