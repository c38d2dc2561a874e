"""Flow-control rules: rate limits ("120/m"), concurrency and queue limits, Retry-After (pure).

The rules are declared in code; the counting happens in the claim transaction in SQL, so
they hold across every worker process and machine (see ``ClaimLimit``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from conveyor.backends.base import ClaimLimit, LimitKind
from conveyor.deprecation import renamed
from conveyor.errors import DeclarationError, OptionError
from conveyor.outcome import MAX_ASKED_WAIT, Snooze

UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}
RULE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` job starts per ``per`` seconds, across all workers.

    Job types naming the same ``group`` share one budget (e.g. every type that talks to
    the same SMTP relay); without a group each type has its own.

    >>> @app.job(rate_limit="120/m")                                   # per type
    >>> @app.job(rate_limit=RateLimit(20, per=1.0, group="smtp"))      # shared
    """

    limit: int
    per: float = 1.0
    group: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise OptionError("rate_limit", f"limit must be an int >= 1, not {self.limit!r}")
        if isinstance(self.per, bool) or not isinstance(self.per, int | float) or self.per <= 0:
            raise OptionError("rate_limit", f"per must be a positive number of seconds, not {self.per!r}")
        if self.group is not None and (not isinstance(self.group, str) or not self.group or len(self.group) > 128):
            raise OptionError("rate_limit", f"group must be a non-empty string of at most 128 characters, not {self.group!r}")

    @classmethod
    def parse(cls, rule: str | RateLimit, group: str | None = None) -> RateLimit:
        """``"120/m"``, ``"20/s"``, ``"1000/h"``, ``"5/10s"`` (five per ten seconds), or a RateLimit."""
        if isinstance(rule, RateLimit):
            return rule
        if not isinstance(rule, str):
            raise OptionError("rate_limit", f"must be a rule like '120/m' or a RateLimit, not {rule!r}")
        match = RULE.match(rule.lower())
        if match is None or match.group(3) not in UNITS:
            raise OptionError("rate_limit", f"cannot read {rule!r}; write e.g. '120/m', '20/s', '1000/h' or '5/10s'")
        count, multiple, unit = match.groups()
        return cls(int(count), float(multiple or 1) * UNITS[unit], group)


def check_concurrency(value: Any, option: str = "concurrency") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(option, f"must be an int >= 1, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """Per-queue flow control set with ``app.queue_limit``.

    ``concurrency``: at most this many jobs of the queue running at once in the whole system.
    ``aging``: a job due for longer than this many seconds is served ahead of higher
    priorities, so a flood of urgent jobs cannot starve the rest (strict priority otherwise).
    """

    queue: str
    concurrency: int | None = None
    aging: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency is not None:
            check_concurrency(self.concurrency)
        if self.aging is not None and (isinstance(self.aging, bool) or not isinstance(self.aging, int | float) or self.aging < 0):
            raise OptionError("aging", f"must be seconds >= 0, not {self.aging!r}")


def claim_limits(rules: Iterable[tuple[str, RateLimit | None, int | None]], queues: Iterable[QueuePolicy]) -> tuple[ClaimLimit, ...]:
    """What the claim enforces, from each job type's (name, rate limit, concurrency) and the queue policies.

    Types sharing a rate-limit group share one budget; their rules must agree.
    """
    limits: list[ClaimLimit] = []
    groups: dict[str, tuple[RateLimit, list[str]]] = {}
    for name, rate, concurrency in sorted(rules, key=lambda r: r[0]):
        if rate is not None:
            if rate.group is None:
                limits.append(ClaimLimit(f"rate:type:{name}", LimitKind.RATE, rate.limit, rate.per, types=(name,)))
            else:
                known = groups.setdefault(rate.group, (rate, []))
                if (known[0].limit, known[0].per) != (rate.limit, rate.per):
                    raise DeclarationError(
                        f"rate-limit group {rate.group!r} is declared as {known[0].limit}/{known[0].per:g}s "
                        f"and as {rate.limit}/{rate.per:g}s (job {name!r}); declare it once, the same everywhere"
                    )
                known[1].append(name)
        if concurrency is not None:
            limits.append(ClaimLimit(f"running:type:{name}", LimitKind.RUNNING, concurrency, types=(name,)))
    for group, (rate, names) in sorted(groups.items()):
        limits.append(ClaimLimit(f"rate:group:{group}", LimitKind.RATE, rate.limit, rate.per, types=tuple(names)))
    for policy in sorted(queues, key=lambda q: q.queue):
        if policy.concurrency is not None:
            limits.append(ClaimLimit(f"running:queue:{policy.queue}", LimitKind.RUNNING, policy.concurrency, queue=policy.queue))
    return tuple(limits)


class Throttled(Snooze):
    """The remote service asked us to slow down: run this job again later, no attempt spent.

    A ``Snooze`` read from a Retry-After header. Not to be confused with an exception's
    ``retry_after`` attribute (``WebhookDeliveryError`` has one): that is a failure, whose retry
    waits at least that long and counts the attempt.

    Takes a Retry-After header as sent with HTTP 429 or 503 (delta-seconds or an HTTP date),
    seconds, or a timedelta; ``default`` applies when the header is missing or unreadable.

    >>> if response.status_code == 429:
    ...     raise Throttled(response.headers.get("Retry-After"), default=30)
    """

    def __init__(self, retry_after: str | float | timedelta | None, default: float = 60.0, reason: str = "the remote asked to retry later") -> None:
        super().__init__(retry_after_seconds(retry_after, default), reason)


def retry_after_seconds(value: str | float | timedelta | None, default: float = 60.0, now: datetime | None = None) -> float:
    """Seconds to wait for a Retry-After value: never negative, at most a day (``MAX_ASKED_WAIT``,
    as for a failure's ``retry_after``), ``default`` when missing, unreadable or nan."""
    return min(max(0.0, _asked(value, default, now)), MAX_ASKED_WAIT)


def _asked(value: str | float | timedelta | None, default: float, now: datetime | None) -> float:
    if value is None:
        return default
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return default if math.isnan(value) else float(value)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return default if math.isnan(number) else number
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return default
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - (now or datetime.now(UTC))).total_seconds()


if TYPE_CHECKING:
    RetryAfter = Throttled  # deprecated name (it read like an exception's retry_after, which counts the attempt); one release
else:
    __getattr__ = renamed(__name__, {"RetryAfter": ("conveyor.Throttled", lambda: Throttled)})
