"""Helpers for tests (Conveyor's and its users'): wait for a condition, run a worker in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from conveyor.app import Conveyor
from conveyor.job import JobState
from conveyor.worker import Worker

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, message: str = "") -> T:
    """Poll ``check`` until it returns something truthy, and return it; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or check}")
        time.sleep(interval)


@contextmanager
def running_worker(app: Conveyor, **options: Any) -> Iterator[Worker]:
    """A worker on a background thread for the duration of the block, stopped gracefully after."""
    options.setdefault("install_signals", False)
    options.setdefault("poll_interval", 0.05)
    worker = Worker(app, **options)
    thread = threading.Thread(target=worker.run, name="conveyor-test-worker", daemon=True)
    thread.start()
    if not worker.started.wait(15):
        raise AssertionError("worker did not start within 15 s")
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=60)


def drain(app: Conveyor, timeout: float = 30.0, **options: Any) -> None:
    """Run a worker until no job is pending, scheduled-and-due or running."""
    with running_worker(app, **options):
        wait_until(
            lambda: app.admin.jobs.count(state=[JobState.PENDING, JobState.RUNNING]) == 0,
            timeout=timeout,
            message="the queue to drain",
        )
