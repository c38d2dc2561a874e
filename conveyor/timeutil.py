"""Conversions between the epoch seconds the databases compute and aware datetimes."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def epoch_memo() -> Callable[[float], datetime]:
    """``from_epoch`` remembering its answers: the rows of one claim share most of their times
    (claimed at one moment, often enqueued at one), and a lookup is cheaper than a datetime."""
    seen: dict[float, datetime] = {}

    def at(seconds: float) -> datetime:
        moment = seen.get(seconds)
        if moment is None:
            moment = seen[seconds] = datetime.fromtimestamp(seconds, UTC)
        return moment

    return at


def to_epoch(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: give a timezone-aware datetime (e.g. datetime.now(UTC))")
    return moment.timestamp()


def seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


MAX_DELAY = 10 * 366 * 86_400.0
"""The longest duration Conveyor stores (ten years): delays, timeouts, unique windows, backoffs,
snoozes. Far enough for any real schedule; near enough that now plus it is a date every
database and Python's datetime can hold."""

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def check_seconds(what: str, value: float | timedelta, positive: bool = False) -> float:
    """``value`` in seconds, if it is a finite number in ``[0, MAX_DELAY]`` (``(0, MAX_DELAY]`` when
    ``positive``); otherwise ValueError naming ``what`` and the bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
        raise ValueError(f"{what} must be a number of seconds or a timedelta, not {value!r}")  # noqa: TRY004 (callers translate one type)
    number = seconds(value)
    if not (number > 0 if positive else number >= 0) or not number <= MAX_DELAY:  # also refuses nan
        low = "above 0" if positive else "from 0"
        raise ValueError(f"{what} must be {low} to {MAX_DELAY:.0f} seconds (ten years), not {value!r}")
    return number


def check_moment(what: str, moment: datetime, now: datetime | None = None) -> float:
    """An absolute time as epoch seconds, if aware and between 1970 and ``MAX_DELAY`` from now."""
    if moment.tzinfo is None:
        to_epoch(moment)  # raises, saying why
    try:
        epoch = moment.timestamp()
    except (OverflowError, ValueError):  # a local time whose UTC instant is before year 1 or after 9999
        epoch = math.nan
    latest = (now or datetime.now(UTC)).timestamp() + MAX_DELAY
    if not EARLIEST.timestamp() <= epoch <= latest:
        raise ValueError(f"{what} must be between 1970-01-01 and ten years from now, not {moment.isoformat()}")
    return epoch
