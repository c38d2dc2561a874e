"""What a run's result means for the job: one pure function from result to next state."""

from __future__ import annotations

import math
import traceback as tb
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conveyor.deprecation import renamed
from conveyor.retry import Backoff, next_delay
from conveyor.storable import storable_text
from conveyor.timeutil import check_seconds


class Snooze(Exception):
    """Run again after ``seconds`` without spending an attempt.

    Return it or raise it, e.g. when a remote service answered 429 with Retry-After. A negative
    wait means now; a wait that is not finite or over ten years (``MAX_DELAY``) is a ValueError.
    """

    def __init__(self, seconds: float, reason: str = "snoozed") -> None:
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and -math.inf < seconds < 0:
            seconds = 0.0
        try:
            self.seconds = check_seconds("Snooze seconds", seconds)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        self.reason = reason
        super().__init__(f"{reason}: run again in {self.seconds:g} s")


class Cancel(Exception):
    """Stop this job for good without retrying; it ends ``cancelled`` with the reason."""

    def __init__(self, reason: str = "cancelled by handler") -> None:
        self.reason = storable_text(str(reason))
        super().__init__(self.reason)


@dataclass(frozen=True, slots=True)
class Complete:
    result: Any = None


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float
    error: str
    traceback: str | None


@dataclass(frozen=True, slots=True)
class Dead:
    error: str
    traceback: str | None


@dataclass(frozen=True, slots=True)
class Snoozed:
    delay: float
    reason: str


@dataclass(frozen=True, slots=True)
class Cancelled:
    reason: str


Outcome = Complete | Retry | Dead | Snoozed | Cancelled
"""A run's result: the one record of how it ended (the backend writes it back as ``FinishParams``)."""


def describe(exc: BaseException) -> str:
    """``Type: message`` as storable text, even when the exception's own ``__str__`` raises."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 (a hostile __str__ must not lose the job)
        text = "<str() of the exception raised>"
    return storable_text(f"{name}: {text}" if text else name)


def format_traceback(exc: BaseException) -> str | None:
    try:
        return storable_text("".join(tb.format_exception(exc))[-8000:])
    except Exception:  # noqa: BLE001 (nor a traceback that cannot be formatted)
        return None


def decide(attempt: int, max_attempts: int, backoff: Backoff, result: Any = None, error: BaseException | None = None) -> Outcome:
    """Map one run's result or exception, and the retry policy, to the job's next state."""
    if error is None:
        if isinstance(result, Snooze):
            return Snoozed(result.seconds, result.reason)
        if isinstance(result, Cancel):
            return Cancelled(result.reason)
        return Complete(result)
    if isinstance(error, Snooze):
        return Snoozed(error.seconds, error.reason)
    if isinstance(error, Cancel):
        return Cancelled(error.reason)
    return failure(attempt, max_attempts, backoff, describe(error), format_traceback(error), wait_asked(error))


MAX_ASKED_WAIT = 86_400.0
"""The longest wait a failure may ask for (a remote's Retry-After): a day, so that a hostile or
broken answer cannot park a job for longer; the attempt still counts either way."""


def wait_asked(error: BaseException) -> float:
    """Seconds the failure asks to wait before the retry: its ``retry_after`` attribute (such as
    ``WebhookDeliveryError`` carries from a 429 or 503 answer), if it is a usable number."""
    value = getattr(error, "retry_after", None)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return 0.0
    return min(max(0.0, float(value)), MAX_ASKED_WAIT)


def failure(attempt: int, max_attempts: int, backoff: Backoff, error: str, traceback: str | None = None, at_least: float = 0.0) -> Retry | Dead:
    """A failed attempt: retry after the backoff (or ``at_least``, if longer) while attempts remain, else dead."""
    if attempt >= max_attempts:
        return Dead(error, traceback)
    return Retry(max(next_delay(backoff, attempt), at_least), error, traceback)


if TYPE_CHECKING:
    Decision = Outcome  # deprecated name of the same record; one release
else:
    __getattr__ = renamed(__name__, {"Decision": ("conveyor.outcome.Outcome", lambda: Outcome)})
