"""The job as stored: its states and the frozen record read back from a backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, make_dataclass
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any

from conveyor.deprecation import renamed
from conveyor.timeutil import from_epoch


class JobState(StrEnum):
    """Where a job is in its life (see docs/discussions.md for the diagram)."""

    WAITING = "waiting"  # dependencies not finished yet; not claimable
    SCHEDULED = "scheduled"  # run_at in the future (delayed, or a retry waiting out its backoff)
    PENDING = "pending"  # due: claimable now, by priority then enqueue order
    RUNNING = "running"  # held by a worker under a lease
    COMPLETED = "completed"
    DEAD = "dead"  # the dead-letter queue: attempts spent, bad payload, unknown type
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # its expiry passed before it started: it never ran and never will


FINISHED_STATES = frozenset({JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED, JobState.EXPIRED})
UNFINISHED_STATES = frozenset({JobState.WAITING, JobState.SCHEDULED, JobState.PENDING, JobState.RUNNING})
"""The states in which a unique key blocks another enqueue by default (see ``unique_states``)."""


class Priority(IntEnum):
    """Named priorities; any int works, higher runs first."""

    LOW = -10
    NORMAL = 0
    HIGH = 10
    CRITICAL = 20


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """One failed run of a job (a record in ``Job.errors``, not an exception): which attempt, when, and why."""

    attempt: int
    at: datetime
    error: str
    traceback: str | None = None
    worker_id: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FailedAttempt:
        return cls(
            attempt=int(d.get("attempt", 0)),
            at=from_epoch(float(d.get("at", 0.0))),
            error=str(d.get("error", "")),
            traceback=d.get("traceback"),
            worker_id=d.get("worker_id"),
        )


@dataclass(frozen=True, slots=True)
class Job:
    """A job row. Times are timezone-aware UTC datetimes from the database's clock."""

    id: int
    type: str
    queue: str
    state: JobState
    payload: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    attempted_at: datetime | None = None
    finished_at: datetime | None = None
    lease_token: int = 0
    lease_expires_at: datetime | None = None
    worker_id: str | None = None
    timeout: float | None = None
    unique_key: str | None = None
    workflow_id: str | None = None
    parent_id: int | None = None
    progress: Any = None
    result: Any = None
    errors: tuple[FailedAttempt, ...] = field(default_factory=tuple)
    backoff: str | None = None
    expires_at: datetime | None = None  # not started by then, it ends expired
    corrupt: str | None = None  # why the stored row could not be read as written (payload, errors)
    meta: dict[str, Any] | None = None  # context set at enqueue by middleware (trace context, ...)

    @property
    def last_error(self) -> FailedAttempt | None:
        return self.errors[-1] if self.errors else None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


def _positional_builder(cls: type) -> Callable[[Sequence[Any]], Any]:
    """A constructor of a frozen slots dataclass from all its fields' values, in order.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``; a claim
    reads a hundred jobs at a time. This builds a mutable twin with the same slots (a plain
    positional ``__init__``, ~3x faster) and gives the object its real class, which the
    identical layout allows; the result is an ordinary, frozen ``cls``.
    """
    twin = make_dataclass(f"_{cls.__name__}Twin", [(f.name, f.type) for f in fields(cls)], slots=True, eq=False, repr=False)

    def build(values: Sequence[Any]) -> Any:
        obj = twin(*values)
        obj.__class__ = cls
        return obj

    return build


job_from_fields: Callable[[Sequence[Any]], Job] = _positional_builder(Job)
"""``Job`` from the values of all its fields in declaration order (the backends' row readers)."""


if TYPE_CHECKING:
    JobError = FailedAttempt  # deprecated name (it read as an exception class); one release
else:
    __getattr__ = renamed(__name__, {"JobError": ("conveyor.FailedAttempt", lambda: FailedAttempt)})
