"""Subscribers to a job's milestones: completed, failed (each failed attempt) and dead."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from conveyor.job import Job

log = logging.getLogger("conveyor.events")

EventName = Literal["completed", "failed", "dead"]
EVENT_NAMES: tuple[EventName, ...] = ("completed", "failed", "dead")


@dataclass(frozen=True, slots=True)
class JobEvent:
    """What happened: the job as claimed, the attempt that ended, and the error if any."""

    name: EventName
    job: Job
    attempt: int
    error: str | None = None
    result: Any = None


class Events:
    """Callbacks by event name; a failing callback is logged and never affects the job."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callable[[JobEvent], Any]]] = {name: [] for name in EVENT_NAMES}

    def subscribe(self, name: EventName, callback: Callable[[JobEvent], Any]) -> Callable[[JobEvent], Any]:
        if name not in self._subscribers:
            raise ValueError(f"unknown event {name!r}; known: {', '.join(EVENT_NAMES)}")
        self._subscribers[name].append(callback)
        return callback

    def wanted(self, name: EventName) -> bool:
        return bool(self._subscribers[name])

    def wanted_any(self) -> bool:
        """Whether anyone listens at all (checked once per batch of outcomes, not per job)."""
        return any(self._subscribers.values())

    async def emit(self, event: JobEvent) -> None:
        for callback in self._subscribers[event.name]:
            try:
                if inspect.iscoroutinefunction(callback):
                    await callback(event)
                else:
                    await asyncio.to_thread(callback, event)
            except Exception:
                log.exception("%s callback %r failed for job %s", event.name, callback, event.job.id)
