"""Listeners: who waits to hear "jobs may be due", and the one thread per backend that hears it.

Each backend hears it its own way (PostgreSQL: LISTEN/NOTIFY on a session connection; SQLite: the
file's ``PRAGMA data_version`` and its own enqueues); the registry around that is the same for
both and lives here: callbacks added and removed from any thread, the hearing thread started on
the first ``add``, and forgotten by ``detach`` when the backend closes so a later ``add`` starts a
fresh one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Listeners:
    """The callbacks to wake, and the thread (running ``hear``) that decides when."""

    def __init__(self, thread_name: str, hear: Callable[[], None]) -> None:
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._thread_name = thread_name
        self._hear = hear

    def add(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Wake ``callback`` from now on; returns the function that stops it."""
        with self._lock:
            self._callbacks.append(callback)
            if self._thread is None:
                self._thread = threading.Thread(target=self._hear, name=self._thread_name, daemon=True)
                self._thread.start()

        def stop() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return stop

    def wake(self) -> None:
        """Call every callback (a snapshot: one may stop itself or another meanwhile)."""
        for callback in list(self._callbacks):
            callback()

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def detach(self) -> threading.Thread | None:
        """The hearing thread, if one runs, forgotten here (the backend stops and joins it on close)."""
        with self._lock:
            thread, self._thread = self._thread, None
        return thread
