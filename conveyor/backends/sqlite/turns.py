"""WriteTurns: a lone writer gets SQLite's write lock between workers that take it back to back.

SQLite's busy handler sleeps (1, 2, 5 … 100 ms) between tries, so an enqueue that finds the
lock taken by a draining worker sleeps, and the worker, which commits and begins again within
microseconds, takes it again: enqueues waited up to seconds. Turns are kept in a side file
(``<database>-turn``) with ``flock``, released by the kernel if a process dies:

- a writer that is not a worker's claim or completion holds the file shared while it waits for
  the lock and writes (``waiting``), and tries ``BEGIN IMMEDIATE`` itself every 0.1 ms instead of
  sleeping in the busy handler;
- a worker, before its claim or completion, asks for the file exclusively without waiting
  (``yield_to_waiters``): granted, nobody waits and it goes on at once (two system calls);
  refused, it looks again (0.1 ms, doubling to 0.5 ms) until the waiting writers are done,
  up to ``MAX_YIELD`` seconds.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time

MAX_YIELD = 1.0  # a worker never waits longer than this for other writers' turns
SPIN = 0.0001  # between a waiting writer's tries at the write lock; a worker's first pause
MAX_PAUSE = 0.0005  # a yielding worker's longest pause between looks


class WriteTurns:
    """One per backend; each thread opens its own descriptor (``flock`` locks belong to it)."""

    def __init__(self, database_path: str) -> None:
        self.path = database_path + "-turn"
        self._local = threading.local()
        self._all: list[int] = []
        self._lock = threading.Lock()

    def _fd(self) -> int | None:
        fd: int | None = getattr(self._local, "fd", None)
        if fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:
                return None  # a read-only directory: no turns, SQLite's own waiting alone
            self._local.fd = fd
            with self._lock:
                self._all.append(fd)
        return fd

    def waiting(self) -> int | None:
        """Announce a writer that waits; pass the result to ``done`` after its commit."""
        fd = self._fd()
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    @staticmethod
    def done(fd: int | None) -> None:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def yield_to_waiters(self) -> None:
        """Return at once when no writer waits; else once they have had their turn (bounded)."""
        fd = self._fd()
        if fd is None:
            return
        deadline, pause = 0.0, SPIN
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                now = time.monotonic()
                deadline = deadline or now + MAX_YIELD
                if now > deadline:
                    return
                time.sleep(pause)
                pause = min(pause * 2, MAX_PAUSE)  # few wake-ups while a writer takes long
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return

    def close(self) -> None:
        with self._lock:
            for fd in self._all:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._all.clear()
        self._local = threading.local()
