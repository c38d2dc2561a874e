"""Cron expressions and schedules: when a schedule fires next and which fires are due (pure).

Expressions are cronsim's: five fields (minute precision) or six with seconds first
(``"*/5 * * * * *"`` every five seconds), plus the ``@hourly``-style aliases. Times are
computed in the schedule's timezone and returned as aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from conveyor.errors import DeclarationError, OptionError
from conveyor.options import check_name
from conveyor.timeutil import seconds

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

LATE_GRACE = 5.0
"""A fire found due at most this many seconds ago is late (a busy or restarting worker) and
runs; an older one was missed while no worker ran and follows the schedule's ``missed`` policy."""

MAX_FIRES = 100
"""Fires enqueued per schedule per scheduler pass; the rest follow on the next pass."""

SCHEDULE_OPTIONS = frozenset({"queue", "priority", "max_attempts", "backoff", "timeout", "unique_for"})
"""Enqueue options a schedule may set on the jobs it fires."""


class Missed(StrEnum):
    """What to do with fires that passed while no worker ran."""

    SKIP = "skip"  # carry on from the next fire
    RUN_ONCE = "run_once"  # enqueue one job for all of them, then carry on


@dataclass(frozen=True, slots=True)
class Cron:
    """A validated cron expression in a timezone.

    >>> Cron("0 9 * * MON-FRI", "Europe/Berlin").next_after(datetime.now(UTC))
    """

    expression: str
    tz: str = "UTC"

    def __post_init__(self) -> None:
        zone(self.tz)
        try:
            CronSim(expand(self.expression), datetime(2000, 1, 1, tzinfo=UTC))
        except (CronSimError, ValueError) as exc:
            raise DeclarationError(f"invalid cron expression {self.expression!r}: {exc}") from None

    def next_after(self, moment: datetime) -> datetime:
        """The first fire strictly after ``moment`` (aware), in UTC."""
        local = moment.astimezone(zone(self.tz))
        return next(CronSim(expand(self.expression), local)).astimezone(UTC)


def expand(expression: str) -> str:
    text = " ".join(expression.split())
    return ALIASES.get(text.lower(), text)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DeclarationError(f"unknown timezone {name!r} (use an IANA name such as 'Europe/Berlin')") from None


def plan_fires(
    cron: Cron, next_fire_at: datetime, now: datetime, missed: Missed, grace: float = LATE_GRACE, cap: int = MAX_FIRES
) -> tuple[list[datetime], datetime]:
    """The fire times to enqueue now, and the schedule's next fire time after them.

    Fires within ``grace`` of ``now`` are all enqueued (they are only late); older ones were
    missed: skipped, or represented by one job (at the first missed time) with ``run_once``.
    A long outage is never walked fire by fire.
    """
    fires: list[datetime] = []
    cursor = next_fire_at
    horizon = now - timedelta(seconds=grace)
    if cursor <= horizon:
        if missed is Missed.RUN_ONCE:
            fires.append(cursor)
        cursor = cron.next_after(horizon)
    while cursor <= now and len(fires) < cap:
        fires.append(cursor)
        cursor = cron.next_after(cursor)
    return fires, cursor


def fire_key(name: str, fire: datetime) -> str:
    """The idempotency key of the job a schedule enqueues for one fire time."""
    return f"cron:{name}:{fire.timestamp():.0f}"


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A schedule declared in code with ``app.cron``; synced to a schedule row by workers."""

    name: str
    cron: Cron
    job_type: str
    payload: Any
    options: dict[str, Any]
    missed: Missed


def declare(
    expression: str, job_type: str, payload: Any, name: str | None, tz: str | None, missed: str, options: dict[str, Any]
) -> CronSpec:
    """Check a declaration (expression, timezone, policy, options) and return its spec."""
    check_name("job_type", job_type)
    schedule_name = check_name("name", name or job_type)
    try:
        policy = Missed(missed)
    except ValueError:
        raise DeclarationError(f"schedule {schedule_name!r}: missed must be 'skip' or 'run_once', not {missed!r}") from None
    unknown = set(options) - SCHEDULE_OPTIONS
    if unknown:
        raise DeclarationError(
            f"schedule {schedule_name!r}: unknown option {min(unknown)!r}; known: {', '.join(sorted(SCHEDULE_OPTIONS))}"
        )
    stored: dict[str, Any] = {}
    for key, value in options.items():
        try:
            stored[key] = seconds(value) if key in ("timeout", "unique_for") else value
        except (TypeError, ValueError):
            raise OptionError(key, f"must be seconds or a timedelta, not {value!r}") from None
    return CronSpec(schedule_name, Cron(expression, tz or "UTC"), job_type, payload, stored, policy)
