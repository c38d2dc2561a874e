"""Runs P worker processes, restarts any that die, and stops them all on a signal."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger("conveyor.supervisor")

PR_SET_PDEATHSIG = 1

REPLACE_ME = 75
"""A child's exit code for "start a fresh process in my place" (its threads are held by handlers
that overran their timeout): restarted at once, not paced like a child that keeps dying."""


def detached(target: Callable[..., None], kwargs: dict[str, Any]) -> None:
    """A child's start: its own process group, so a terminal's Ctrl-C reaches it once (forwarded
    by the supervisor) rather than twice (which means "stop at once"), and SIGTERM if the
    supervisor itself dies."""
    os.setpgid(0, 0)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    target(**kwargs)


def supervise(target: Callable[..., None], processes: int, kwargs: dict[str, Any], grace: float) -> int:
    """Keep ``processes`` children running ``target(**kwargs)`` until SIGTERM/SIGINT.

    Children are forked before this process opens any connection, so each opens its own.
    A child that exits on its own is restarted, with a growing pause if it keeps dying.
    """
    ctx = multiprocessing.get_context("fork")
    stopping = False
    signals = 0
    told: set[int] = set()  # children already sent the stop (a second SIGTERM means "at once")

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping, signals
        stopping = True
        signals += 1
        for child in children:
            if child.pid and child.is_alive():
                os.kill(child.pid, signal.SIGKILL if signals > 1 else signal.SIGTERM)
                told.add(child.pid)

    def spawn() -> BaseProcess:
        child = ctx.Process(target=detached, args=(target, kwargs), daemon=False)
        child.start()
        log.info("started worker process %s", child.pid)
        return child

    children: list[BaseProcess] = []
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        children = [spawn() for _ in range(processes)]
        restarts: dict[int, float] = {}
        while not stopping:
            time.sleep(0.2)
            for i, child in enumerate(children):
                if stopping or child.is_alive():
                    continue
                if child.exitcode == REPLACE_ME:
                    log.info("worker process %s asked to be replaced; starting a fresh one", child.pid)
                    children[i] = spawn()
                    continue
                pause = restarts.get(i, 0.0)
                log.warning("worker process %s exited with %s; restarting in %.1f s", child.pid, child.exitcode, pause)
                time.sleep(pause)
                if stopping:  # the stop came during the pause: no new child
                    break
                restarts[i] = min(max(pause * 2, 0.5), 30.0)
                children[i] = spawn()
        for child in children:  # a child started while the signal was being handled missed it
            if child.pid and child.pid not in told and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace + 10
        for child in children:
            child.join(max(0.1, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
