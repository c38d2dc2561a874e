"""Django Tasks on Conveyor: a real Django project (tests/django_project), its test client, a real worker process — both backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")

import django

django.setup()

from asgiref.local import Local
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.test import Client, override_settings
from django.utils import timezone

from conveyor import Conveyor, JobState
from conveyor.contrib.django import ConveyorBackend
from conveyor.contrib.django.tasks import TaskResultStatus, task_backends
from conveyor.testing import wait_until
from tests.django_project.databases import database_settings
from tests.django_project.shop import jobs
from tests.django_project.shop.models import AuditEntry, Order
from tests.django_project.shop.tasks import double, explode, report_attempt, send_confirmation

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(database_url: str) -> Iterator[str]:
    """The Django project pointed at this test's database, migrated (Conveyor's tables by ``migrate`` too)."""
    connections.close_all()
    connections.__dict__.pop("settings", None)
    connections._settings = {"default": database_settings(database_url)}  # type: ignore[attr-defined]
    connections._connections = Local(connections.thread_critical)  # type: ignore[attr-defined]
    jobs.app.close()
    jobs.app.settings = jobs.app.settings.__class__.load(database_url=database_url)
    with override_settings(TASKS=settings.TASKS):  # a fresh task backend for this database
        call_command("migrate", run_syncdb=True, verbosity=0)
        yield database_url
        backend = task_backends["default"]
        assert isinstance(backend, ConveyorBackend)
        backend.app.close()
    jobs.app.close()
    connections.close_all()


def conveyor_app() -> Conveyor:
    backend = task_backends["default"]
    assert isinstance(backend, ConveyorBackend)
    return backend.app


def start_worker(database_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.django_project.settings", "CONVEYOR_DJANGO_DATABASE_URL": database_url,
           "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "django", "conveyor_worker", "--poll-interval", "0.05"], cwd=ROOT, env=env)


def stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0


def result_of(client: Client, result_id: str) -> dict[str, Any]:
    response = client.get(f"/results/{result_id}/")
    assert response.status_code == 200
    return dict(response.json())


def test_a_view_commits_its_order_its_task_and_a_conveyor_job_and_a_worker_runs_them(site: str) -> None:
    client = Client()
    response = client.post("/orders/o1/")
    assert response.status_code == 200, response.content
    result_id = response.json()["result_id"]
    assert response.json()["status"] == "READY"

    app = conveyor_app()
    task_job = app.admin.jobs.get(int(result_id))
    assert (task_job.queue, task_job.priority, task_job.state) == ("email", 10, JobState.PENDING)
    assert task_job.payload == {"task": "tests.django_project.shop.tasks.send_confirmation", "args": ["o1"], "kwargs": {}}
    assert [j.type for j in app.admin.jobs.list(type="audit_order")] == ["audit_order"]

    failing = explode.enqueue("boom")
    with_context = report_attempt.enqueue(n=7)
    coroutine = double.enqueue(21)
    later = send_confirmation.using(run_after=timezone.now() + timedelta(hours=1)).enqueue("o1")
    assert app.admin.jobs.get(int(later.id)).state is JobState.SCHEDULED

    worker = start_worker(site)
    try:
        wait_until(lambda: result_of(client, result_id)["status"] == "SUCCESSFUL", timeout=60, message="the task to run")
        for pending in (failing, with_context, coroutine):
            wait_until(lambda r=pending: r.task.get_result(r.id).is_finished, timeout=60, message="the other tasks")  # type: ignore[misc]
        wait_until(lambda: AuditEntry.objects.filter(order_id="o1").exists(), timeout=60, message="the Conveyor job")
    finally:
        stop(worker)

    done = result_of(client, result_id)
    assert done["return_value"] == "confirmed o1" and done["attempts"] == 1
    assert Order.objects.get(id="o1").confirmed

    failed = explode.get_result(failing.id)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.errors[0].exception_class is ValueError and "boom" in failed.errors[0].traceback
    assert report_attempt.get_result(with_context.id).return_value == {"attempt": 1, "n": 7, "id": with_context.id}
    assert double.get_result(coroutine.id).return_value == 42
    assert send_confirmation.get_result(later.id).status == TaskResultStatus.READY  # not due yet


def test_a_view_that_fails_rolls_back_its_order_task_and_job(site: str) -> None:
    client = Client(raise_request_exception=False)
    assert client.post("/orders/o2/", {"fail": "1"}).status_code == 500
    assert not Order.objects.filter(id="o2").exists()
    assert conveyor_app().admin.jobs.count() == 0


def test_backend_refuses_what_it_cannot_honour(site: str) -> None:
    from conveyor.contrib.django.tasks import TaskResultDoesNotExist

    with pytest.raises(Exception, match="Queue 'reports' is not valid"):
        send_confirmation.using(queue_name="reports").enqueue("o1")
    with pytest.raises(TaskResultDoesNotExist):
        send_confirmation.get_result("123456")
    with pytest.raises(TaskResultDoesNotExist):
        send_confirmation.get_result("not-an-id")
    assert conveyor_app().admin.jobs.count() == 0
