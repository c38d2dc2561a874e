"""Backoff: how long a failed job waits before its next attempt (pure, no I/O)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from conveyor.errors import DeclarationError
from conveyor.timeutil import MAX_DELAY, check_seconds


class Backoff(Protocol):
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""

    def __call__(self, attempt: int) -> float: ...


@dataclass(frozen=True, slots=True)
class Exponential:
    """``base * 2**(attempt-1)`` capped at ``cap``, with full jitter on the upper half.

    Jitter spreads retries of jobs that failed together (an outage) so they do not
    return together; keeping the lower half fixed keeps the wait predictable. The defaults
    (2 s doubling, at most an hour a wait) with the default 20 attempts retry for about 9
    hours before a job is dead (``schedule`` prints the table in docs/guide.md).
    """

    base: float = 2.0
    cap: float = 3600.0
    jitter: bool = True

    def __call__(self, attempt: int) -> float:
        delay = min(self.cap, self.base * 2 ** max(0, attempt - 1))
        if self.jitter:
            delay = delay / 2 + random.uniform(0, delay / 2)
        return float(delay)


@dataclass(frozen=True, slots=True)
class Fixed:
    """The same wait after every failure."""

    delay: float = 5.0

    def __call__(self, attempt: int) -> float:
        return self.delay


BackoffSpec = Literal["exponential", "fixed"] | Backoff | Callable[[int], float] | float | int


def make_backoff(spec: BackoffSpec) -> Backoff:
    """Turn a declaration's ``backoff=`` into a strategy.

    >>> make_backoff("fixed")(3)
    5.0
    """
    if spec == "exponential":
        return Exponential()
    if spec == "fixed":
        return Fixed()
    if isinstance(spec, bool):
        raise DeclarationError(f"backoff must be 'exponential', 'fixed', seconds or a callable, not {spec!r}")
    if isinstance(spec, int | float):
        try:
            return Fixed(check_seconds("backoff", spec))
        except ValueError as exc:
            raise DeclarationError(str(exc)) from None
    if callable(spec):
        return spec  # type: ignore[return-value]  # any callable attempt -> seconds is a Backoff
    raise DeclarationError(f"backoff must be 'exponential', 'fixed', seconds or a callable, not {spec!r}")


def next_delay(backoff: Backoff, attempt: int) -> float:
    """The strategy's delay, made safe: a broken callable (or one answering nan) falls back to
    exponential, and the answer is kept within ``[0, MAX_DELAY]`` (an infinite wait is the longest)."""
    try:
        delay = float(backoff(attempt))
    except Exception:  # noqa: BLE001 (a user's callable must not lose the job)
        delay = math.nan
    if math.isnan(delay):
        return min(Exponential()(attempt), MAX_DELAY)
    return min(max(0.0, delay), MAX_DELAY)


def schedule(backoff: Exponential, attempts: int) -> list[tuple[int, float, float, float, float]]:
    """The retry timetable of ``attempts`` attempts: for each failed attempt that is retried,
    (attempt, shortest wait, longest wait, earliest and latest time since the first failure)."""
    rows = []
    low_total = high_total = 0.0
    for attempt in range(1, attempts):
        full = min(backoff.cap, backoff.base * 2 ** (attempt - 1))
        low = full / 2 if backoff.jitter else full
        low_total += low
        high_total += full
        rows.append((attempt, low, full, low_total, high_total))
    return rows
