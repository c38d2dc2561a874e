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

from conveyor.app import Conveyor
from conveyor.config import Settings
from conveyor.errors import ConveyorError
from conveyor.job import Job, JobState
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
    if any(t.name.startswith("conveyor-job") and t.is_alive() for t in threading.enumerate()):
        logging.shutdown()
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



# -- monitoring and steering (status, jobs, dlq, cron, workers, prune, dashboard) ----------

console = Console(highlight=False)
STATE_STYLE = {
    "pending": "blue", "running": "yellow", "scheduled": "magenta", "waiting": "dim",
    "completed": "green", "dead": "bold red", "cancelled": "dim",
}


def open_app(database_url: str | None, app_path: str | None) -> Conveyor:
    """The user's app (``--app``, needed for cron schedules), or a bare one on the database URL."""
    if app_path:
        return load_app(app_path)
    return Conveyor(Settings.load(database_url=database_url).database_url)


def app_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--app", "app_path", metavar="MODULE:APP", envvar="CONVEYOR_APP", help="Load this app (for its settings and cron schedules).")(func)
    return click.option("--database-url", envvar="CONVEYOR_DATABASE_URL", help="Default: from conveyor.toml or sqlite:///conveyor.db")(func)


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


def dur(seconds: float | None) -> str:
    from conveyor.web.dashboard import duration

    return duration(seconds)


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


def jobs_table(jobs: list[Job], now: datetime, title: str) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for name, justify in (("id", "right"), ("type", "left"), ("queue", "left"), ("state", "left"), ("attempt", "right"), ("created", "right"), ("last error", "left")):
        table.add_column(name, justify=justify, overflow="fold" if name == "last error" else "ellipsis")  # type: ignore[arg-type]
    for job in jobs:
        error = job.last_error.error if job.last_error else ""
        table.add_row(str(job.id), job.type, job.queue, state_text(job.state), f"{job.attempt}/{job.max_attempts}",
                      dur((now - job.created_at).total_seconds()) + " ago", error[:100])
    return table


@main.command()
@app_options
@click.option("--json", "as_json", is_flag=True, help="Print the stats as JSON.")
@fail_on_errors
def status(database_url: str | None, app_path: str | None, as_json: bool) -> None:
    """Queues, states, rates, workers and health at a glance."""
    app = open_app(database_url, app_path)
    stats = app.stats()
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(stats), default=str, indent=2))
        return
    t = stats.total
    health = "[green]healthy[/]" if stats.health.status == "ok" else "[bold red]degraded[/]"
    console.print(f"[bold]Conveyor[/] · {app.settings.database_url.split('?')[0]} · {health} · {stats.workers_live} live workers · {stats.at:%Y-%m-%d %H:%M:%S} UTC")
    states = Table(title="Jobs by state", title_justify="left", header_style="bold")
    for state, style in STATE_STYLE.items():
        states.add_column(state, justify="right", style=style)
    states.add_row(*(f"{t.counts[s]:,}" for s in STATE_STYLE))
    console.print(states)
    queues = Table(title="Queues", title_justify="left", header_style="bold")
    for name in ("queue", "pending", "running", "scheduled", "dead", "done/min", "failure", "run p50", "run p95", "wait p95", "oldest due", "workers"):
        queues.add_column(name, justify="left" if name == "queue" else "right")
    for q in stats.queues:
        assert q.queue is not None
        workers = stats.live_workers.get(q.queue, 0)
        queues.add_row(
            q.queue, f"{q.counts['pending']:,}", f"{q.counts['running']:,}", f"{q.counts['scheduled']:,}",
            Text(f"{q.counts['dead']:,}", style="red" if q.counts["dead"] else ""), f"{q.throughput['1m'] * 60:,.1f}",
            "–" if q.failure_rate is None else f"{q.failure_rate:.1%}", dur(q.run_time.p50), dur(q.run_time.p95),
            dur(q.wait_time.p95), dur(q.oldest_pending_age), Text(str(workers), style="" if workers else "red"),
        )
    console.print(queues)
    bad = [c for c in stats.health.checks if not c.ok]
    for check in bad:
        console.print(f"[red]✕ {check.name}[/]: {check.detail}")


@main.command()
@app_options
@click.option("--state", "-s", multiple=True, type=click.Choice([s.value for s in JobState]))
@click.option("--queue", "-q", multiple=True)
@click.option("--type", "-t", "job_type", multiple=True)
@click.option("--workflow", "workflow_id")
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--before-id", type=click.IntRange(1), help="Page: only jobs older than this id.")
@click.option("--json", "as_json", is_flag=True)
@fail_on_errors
def jobs(database_url: str | None, app_path: str | None, state: tuple[str, ...], queue: tuple[str, ...], job_type: tuple[str, ...],
         workflow_id: str | None, limit: int, before_id: int | None, as_json: bool) -> None:
    """List jobs, newest first, filtered by state, queue, type or workflow."""
    app = open_app(database_url, app_path)
    where = {k: v for k, v in {"state": state, "queue": queue, "type": job_type, "workflow_id": workflow_id}.items() if v}
    found = app.list_jobs(limit=limit, before_id=before_id, **where)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(j) for j in found], default=str, indent=2))
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
    total = app.count_jobs(state=JobState.DEAD, **where)
    console.print(jobs_table(app.dead_letters(limit=limit, **where), app.now(), f"Dead letters: {total:,}"))


@dlq.command("show")
@app_options
@click.argument("job_id", type=click.IntRange(1))
@fail_on_errors
def dlq_show(database_url: str | None, app_path: str | None, job_id: int) -> None:
    """One job with its payload and whole error history."""
    app = open_app(database_url, app_path)
    job = app.get_job(job_id)
    console.print(f"[bold]job {job.id}[/] {job.type} · queue {job.queue} · ", state_text(job.state), f" · attempt {job.attempt}/{job.max_attempts}")
    console.print(f"created {job.created_at:%Y-%m-%d %H:%M:%S} · run at {job.run_at:%Y-%m-%d %H:%M:%S}"
                  + (f" · finished {job.finished_at:%Y-%m-%d %H:%M:%S}" if job.finished_at else ""))
    console.print("payload:", json.dumps(job.payload, indent=2, default=str), markup=False)
    for error in job.errors:
        console.print(f"[red]attempt {error.attempt}[/] at {error.at:%Y-%m-%d %H:%M:%S} ({error.worker_id or '-'}): {escape(error.error)}")
        if error.traceback:
            console.print(error.traceback.rstrip(), markup=False, style="dim")


def selected_dead(app: Conveyor, ids: tuple[int, ...], every: bool, queue: tuple[str, ...], job_type: tuple[str, ...]) -> list[int]:
    if ids:
        return list(ids)
    if not (every or queue or job_type):
        raise click.UsageError("give job ids, a --queue/--type filter, or --all")
    where = {k: v for k, v in {"queue": queue, "type": job_type}.items() if v}
    found: list[int] = []
    before: int | None = None
    while True:
        page = app.dead_letters(limit=1000, before_id=before, **where)
        found += [j.id for j in page]
        if len(page) < 1000:
            return found
        before = page[-1].id


def in_batches(label: str, ids: list[int], action: Callable[[list[int]], int], size: int = 200) -> int:
    """Apply ``action`` to ``ids`` in batches under a progress bar; the number it reports done."""
    done = 0
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=len(ids))
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            done += action(chunk)
            progress.advance(task, len(chunk))
    return done


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
        app = open_app(database_url, app_path)
        chosen = selected_dead(app, ids, every, queue, job_type)
        if not chosen:
            console.print("No dead jobs match.")
            return
        if not yes and not ids:
            click.confirm(f"{verb.capitalize()} {len(chosen):,} dead jobs?", abort=True)
        if verb == "retry":
            count = in_batches("Retrying", chosen, lambda c: app.retry_jobs(ids=c, state=JobState.DEAD))
        else:
            count = in_batches("Purging", chosen, lambda c: app.purge(ids=c, state=JobState.DEAD))
        app.audit(actor(), f"dlq.{verb}", "ids:" + ",".join(map(str, chosen[:50])), count=count, via="cli")
        console.print(f"{'Retried' if verb == 'retry' else 'Purged'} {count:,} dead jobs.")

    command.__doc__ = f"{verb.capitalize()} dead jobs: by id, by --queue/--type, or --all."
    return command


dlq.command("retry")(dlq_bulk("retry"))
dlq.command("purge")(dlq_bulk("purge"))


@main.group()
def cron() -> None:
    """Cron schedules: list, pause, resume, trigger now."""


def cron_method(app: Conveyor, name: str) -> Callable[..., Any]:
    method = getattr(app, name, None)
    if method is None:
        raise click.ClickException("cron schedules are not available in this version of Conveyor")
    return method  # type: ignore[no-any-return]


@cron.command("list")
@app_options
@fail_on_errors
def cron_list(database_url: str | None, app_path: str | None) -> None:
    """Schedules with their next fire times."""
    from conveyor.web.api import cron_rows

    app = open_app(database_url, app_path)
    cron_method(app, "cron_list")
    rows = cron_rows(app)
    table = Table(title=f"{len(rows)} schedules", title_justify="left", header_style="bold")
    keys = [k for k in rows[0] if k not in ("payload",)] if rows else ["name"]
    for key in keys:
        table.add_column(key)
    for row in rows:
        table.add_row(*(f"{row[k]:%Y-%m-%d %H:%M:%S}" if isinstance(row.get(k), datetime) else str(row.get(k, "")) for k in keys))
    console.print(table)


def cron_action(action: str) -> Callable[..., None]:
    @app_options
    @click.argument("name")
    @fail_on_errors
    def command(database_url: str | None, app_path: str | None, name: str) -> None:
        app = open_app(database_url, app_path)
        cron_method(app, f"cron_{action}")(name)
        app.audit(actor(), f"cron.{action}", f"cron:{name}", via="cli")
        console.print(f"{name}: {action} done.")

    command.__doc__ = {"pause": "Stop a schedule from firing.", "resume": "Let a paused schedule fire again.",
                       "trigger": "Enqueue a schedule's job now."}[action]
    return command


for _action in ("pause", "resume", "trigger"):
    cron.command(_action)(cron_action(_action))


@main.command()
@app_options
@click.option("--forget", is_flag=True, help="Also drop rows of workers silent for over an hour.")
@fail_on_errors
def workers(database_url: str | None, app_path: str | None, forget: bool) -> None:
    """Workers with their heartbeats."""
    from conveyor.stats import is_live

    app = open_app(database_url, app_path)
    if forget:
        console.print(f"forgot {app.forget_workers()} silent workers")
    now = app.now()
    table = Table(title="Workers", title_justify="left", header_style="bold")
    for name in ("status", "id", "host", "pid", "queues", "running", "started", "heartbeat"):
        table.add_column(name, justify="right" if name in ("pid", "running") else "left")
    for w in app.workers():
        live = is_live(w, now, app.settings.worker_stale_after)
        table.add_row(Text("live" if live else "gone", style="green" if live else "red"), w.id, w.host, str(w.pid), ",".join(w.queues),
                      f"{w.running}/{w.concurrency}", dur((now - w.started_at).total_seconds()) + " ago" if w.started_at else "-",
                      dur((now - w.heartbeat_at).total_seconds()) + " ago" if w.heartbeat_at else "-")
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
    app = open_app(database_url, app_path)
    age = seconds_option(older_than)
    policy = app.prune_policy(completed_older_than=age, cancelled_older_than=age, keep_completed_per_type=keep, limit=batch)
    due = app.prunable(policy)
    if dry_run or not due:
        console.print(f"{due:,} jobs {'would be' if dry_run else 'to be'} pruned.")
        return
    columns = (TextColumn("[bold]Pruning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("prune", total=due)
        total = app.prune(policy, on_batch=lambda n: progress.advance(task, n))
    app.audit(actor(), "jobs.prune", "retention", count=total, via="cli")
    console.print(f"Pruned {total:,} jobs.")


@main.command()
@app_options
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=50, show_default=True)
@fail_on_errors
def audit(database_url: str | None, app_path: str | None, limit: int) -> None:
    """The audit log: who retried, cancelled or purged what, and when."""
    app = open_app(database_url, app_path)
    table = Table(title="Audit log", title_justify="left", header_style="bold")
    for name in ("when", "who", "action", "target", "detail"):
        table.add_column(name)
    for e in app.audit_log(limit):
        table.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.target[:60], json.dumps(e.detail, default=str)[:80])
    console.print(table)


@main.command()
@app_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8181, show_default=True)
def dashboard(database_url: str | None, app_path: str | None, host: str, port: int) -> None:
    """Serve the admin API and the live dashboard."""
    import uvicorn

    from conveyor.web import Token, create_app
    from conveyor.web.auth import Role, Tokens

    app = open_app(database_url, app_path)
    tokens: list[Token] | None = None
    if not Tokens.from_settings(app.settings):
        secret = secrets.token_urlsafe(24)
        tokens = [Token("admin", secret, Role.WRITE)]
        console.print(f"No admin token is configured (CONVEYOR_ADMIN_TOKEN); this run's token is: [bold]{secret}[/]")
    console.print(f"Dashboard on http://{host}:{port}/")
    uvicorn.run(create_app(app, tokens=tokens), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
