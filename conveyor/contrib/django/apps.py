"""The Django app: ``manage.py migrate`` also creates or upgrades Conveyor's tables in each task backend's database."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ConveyorConfig(AppConfig):  # type: ignore[misc]  # Django ships no type stubs
    name = "conveyor.contrib.django"
    label = "conveyor"
    verbose_name = "Conveyor"

    def ready(self) -> None:
        post_migrate.connect(migrate_conveyor, sender=self)


def migrate_conveyor(using: str = "default", verbosity: int = 1, **_: Any) -> None:
    """Conveyor's migrations for every Conveyor task backend whose jobs live in database ``using``.

    Done here, before any request, because a first enqueue inside a view's transaction must not
    wait on its own database's write lock to create the tables (SQLite).
    """
    from conveyor.contrib.django.backend import ConveyorBackend
    from conveyor.contrib.django.tasks import task_backends

    for backend in task_backends.all():
        if isinstance(backend, ConveyorBackend) and backend.database == using:
            applied = backend.app.backend.migrate()
            if applied and verbosity:
                print(f"  Conveyor: applied migrations {applied} for task backend {backend.alias!r}")
