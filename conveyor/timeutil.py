"""Conversions between the epoch seconds the databases compute and aware datetimes."""

from __future__ import annotations

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
