"""``manage.py conveyor_worker``: run a Conveyor worker for a task backend, with Django set up."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from conveyor.contrib.django.backend import ConveyorBackend
from conveyor.contrib.django.tasks import task_backends
from conveyor.errors import ConveyorError


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type stubs
    help = "Run a Conveyor worker for the Django tasks of a backend (and the app's own @app.job handlers) until SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backend", default="default", help="The TASKS alias to work for (default: default).")
        parser.add_argument("--queues", help="Comma-separated queues (default: the backend's QUEUES and the app's declared queues).")
        parser.add_argument("--concurrency", "-c", type=int, help="Jobs at once.")
        parser.add_argument("--poll-interval", type=float, help="Seconds between polls when idle.")
        parser.add_argument("--shutdown-grace", type=float, help="Seconds running jobs get to finish on SIGTERM.")

    def handle(self, *args: Any, **options: Any) -> None:
        backend = task_backends[options["backend"]]
        if not isinstance(backend, ConveyorBackend):
            raise CommandError(f"TASKS[{options['backend']!r}] is a {type(backend).__name__}, not conveyor.contrib.django.ConveyorBackend")
        app = backend.app
        queues = options["queues"].split(",") if options["queues"] else sorted(set(backend.queues) | set(app.registry.queues()))
        settings = {k: options[k] for k in ("concurrency", "poll_interval", "shutdown_grace") if options[k] is not None}
        try:
            app.run_worker(queues=queues, **settings)
        except ConveyorError as exc:
            raise CommandError(str(exc)) from exc
