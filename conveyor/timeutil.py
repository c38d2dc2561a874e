"""Conversions between the epoch seconds the databases compute and aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def to_epoch(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: give a timezone-aware datetime (e.g. datetime.now(UTC))")
    return moment.timestamp()


def seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
