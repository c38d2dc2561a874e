"""Job options: defaults on the declaration, overridden per enqueue, checked early."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from conveyor.backends.base import Dependency
from conveyor.errors import OptionError, WorkflowError
from conveyor.job import UNFINISHED_STATES, JobState
from conveyor.ratelimit import RateLimit, check_concurrency
from conveyor.retry import Backoff, BackoffSpec, make_backoff
from conveyor.storable import storable_text
from conveyor.timeutil import check_moment, check_seconds
from conveyor.workflow import dependencies

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 20
"""With the default backoff (``retry.DEFAULT_BACKOFF``) a failing job is retried for about 9 hours
before it is dead: an outage of hours is ridden out (the table is in docs/guide.md)."""
ALL_STATES = tuple(s.value for s in JobState)


@dataclass(frozen=True, slots=True)
class JobOptions:
    """What a declaration sets for every job of its type."""

    queue: str = DEFAULT_QUEUE
    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff: BackoffSpec = "exponential"
    timeout: float | None = None
    unique_for: float | None = None
    # flow control (conveyor/ratelimit.py): declaration-only, not overridable per enqueue
    rate_limit: str | RateLimit | None = None  # "120/m", or RateLimit(20, per=1.0, group="smtp")
    concurrency: int | None = None  # at most this many of the type running in the whole system
    batch: int | None = None  # the handler takes a list of up to this many payloads

    def __post_init__(self) -> None:
        check_name("queue", self.queue)
        check_int("priority", self.priority)
        check_int("max_attempts", self.max_attempts, minimum=1)
        if self.timeout is not None:
            object.__setattr__(self, "timeout", check_duration("timeout", self.timeout))
        if self.unique_for is not None:
            object.__setattr__(self, "unique_for", check_duration("unique_for", self.unique_for))
        make_backoff(self.backoff)  # refuse a bad spec at declaration
        if self.rate_limit is not None:
            RateLimit.parse(self.rate_limit)
        if self.concurrency is not None:
            check_concurrency(self.concurrency)
        if self.batch is not None:
            check_int("batch", self.batch, minimum=1)

    @property
    def rate(self) -> RateLimit | None:
        return None if self.rate_limit is None else RateLimit.parse(self.rate_limit)

    @property
    def backoff_strategy(self) -> Backoff:
        return make_backoff(self.backoff)


class JobDeclaration(TypedDict, total=False):
    """The options ``@app.job(...)`` takes (``JobOptions``' fields), typed so mypy refuses a
    misspelt one; ``batch`` is its own parameter, as it changes the handler's signature."""

    queue: str
    priority: int
    max_attempts: int
    backoff: BackoffSpec
    timeout: float | None
    unique_for: float | None
    rate_limit: str | RateLimit | None
    concurrency: int | None


class EnqueueOptions(TypedDict, total=False):
    """Per-enqueue overrides; every key is optional."""

    queue: str
    priority: int
    delay: float | timedelta
    run_at: datetime
    max_attempts: int
    backoff: str | float
    timeout: float | timedelta
    idempotency_key: str
    unique_for: float | timedelta
    workflow_id: str
    parent_id: int
    depends_on: list[Any]  # job ids, ctx.enqueue's PendingJob refs, or After(ref, on_failure=...)
    on_failure: str  # for every edge of depends_on: "cancel" (default) or "continue"
    unique_states: list[str]  # the holder's states in which a key blocks (default: unfinished ones)
    on_duplicate: str  # "keep" (default: return the holder) or "replace" (debounce its payload and run time)
    expires_in: float | timedelta  # not started within this long, the job ends expired
    expires_at: datetime  # not started by then, the job ends expired


ENQUEUE_KEYS = frozenset(EnqueueOptions.__annotations__)


@dataclass(frozen=True, slots=True)
class Resolved:
    """Options after merging: exactly what is written to the job row."""

    queue: str
    priority: int
    max_attempts: int
    delay: float  # seconds after the database's now
    run_at: float | None  # absolute epoch seconds, wins over delay
    timeout: float | None
    backoff: str | None  # stored per job only when overridden at enqueue
    idempotency_key: str | None
    unique_for: float | None
    workflow_id: str | None
    parent_id: int | None
    depends_on: tuple[Dependency, ...]
    unique_states: tuple[str, ...] | None = None  # None: the unfinished states
    replace: bool = False
    expires_at: float | None = None  # epoch seconds
    expires_in: float | None = None


def resolve(defaults: JobOptions, overrides: EnqueueOptions | dict[str, Any]) -> Resolved:
    """Merge per-enqueue overrides into the declaration's defaults, refusing bad values."""
    if not ENQUEUE_KEYS.issuperset(overrides):
        unknown = set(overrides) - ENQUEUE_KEYS
        raise OptionError(min(unknown), f"unknown enqueue option; known: {', '.join(sorted(ENQUEUE_KEYS))}")
    # the checks JobOptions.__post_init__ makes, for the overridable fields only (the rest are the declaration's)
    queue = defaults.queue if "queue" not in overrides else check_name("queue", overrides["queue"])
    priority = defaults.priority if "priority" not in overrides else check_int("priority", overrides["priority"])
    max_attempts = defaults.max_attempts if "max_attempts" not in overrides else check_int("max_attempts", overrides["max_attempts"], minimum=1)
    delay = 0.0
    if "delay" in overrides:
        delay = check_duration("delay", overrides["delay"], positive=False)
    run_at = None
    if "run_at" in overrides:
        moment = overrides["run_at"]
        if not isinstance(moment, datetime):
            raise OptionError("run_at", f"must be a datetime, not {type(moment).__name__}")
        try:
            run_at = check_moment("run_at", moment)
        except ValueError as exc:
            raise OptionError("run_at", str(exc)) from None
    # floats, as an override is: PostgreSQL's driver refuses a column array mixing int and float
    timeout = None if defaults.timeout is None else float(defaults.timeout)
    if "timeout" in overrides:
        timeout = check_duration("timeout", overrides["timeout"])
    backoff = None
    if "backoff" in overrides:
        backoff = encode_backoff(overrides["backoff"])
    unique_for = None if defaults.unique_for is None else float(defaults.unique_for)
    if "unique_for" in overrides:
        unique_for = check_duration("unique_for", overrides["unique_for"])
    key = overrides.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key or len(key) > 255):
        raise OptionError("idempotency_key", "must be a non-empty string of at most 255 characters")
    if key is not None and storable_text(key) != key:
        raise OptionError("idempotency_key", f"must not contain NUL or lone surrogates, which no database stores as text: {key!r}")
    unique_states, replace = unique_policy(overrides, unique_for)
    expires_at = None
    if "expires_at" in overrides:
        moment = overrides["expires_at"]
        if not isinstance(moment, datetime):
            raise OptionError("expires_at", f"must be a datetime, not {type(moment).__name__}")
        try:
            expires_at = check_moment("expires_at", moment)
        except ValueError as exc:
            raise OptionError("expires_at", str(exc)) from None
    expires_in = None
    if "expires_in" in overrides:
        expires_in = check_duration("expires_in", overrides["expires_in"])
    depends_on: tuple[Dependency, ...] = ()
    if overrides.get("depends_on"):
        on_failure = overrides.get("on_failure", "cancel")
        if on_failure != "cancel" and on_failure != "continue":
            raise OptionError("on_failure", f"must be 'cancel' or 'continue', not {on_failure!r}")
        try:
            depends_on = dependencies(overrides["depends_on"], "continue" if on_failure == "continue" else "cancel")
        except WorkflowError as exc:
            raise OptionError("depends_on", str(exc)) from None
    return Resolved(
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        delay=delay,
        run_at=run_at,
        timeout=timeout,
        backoff=backoff,
        idempotency_key=key,
        unique_for=unique_for,
        workflow_id=overrides.get("workflow_id"),
        parent_id=overrides.get("parent_id"),
        depends_on=depends_on,
        unique_states=unique_states,
        replace=replace,
        expires_at=expires_at,
        expires_in=expires_in,
    )


def unique_policy(overrides: EnqueueOptions | dict[str, Any], unique_for: float | None) -> tuple[tuple[str, ...] | None, bool]:
    """The states in which an existing job with the same key blocks this enqueue, and whether a
    blocked enqueue replaces the holder's payload and run time (debounce).

    A key blocks while its job is unfinished; ``unique_for`` makes it a time window instead (any
    state blocks within it: at most one job per window); ``unique_states`` names the states.
    """
    states: tuple[str, ...] | None = ALL_STATES if unique_for is not None else None
    if "unique_states" in overrides:
        given = overrides["unique_states"]
        if isinstance(given, str) or not isinstance(given, list | tuple | set | frozenset) or not given:
            raise OptionError("unique_states", f"must be a non-empty list of job states, not {given!r}")
        try:
            states = tuple(sorted({JobState(s).value for s in given}))
        except ValueError:
            raise OptionError("unique_states", f"unknown state in {sorted(map(str, given))}; known: {', '.join(ALL_STATES)}") from None
        if set(states) == {s.value for s in UNFINISHED_STATES}:
            states = None
    mode = overrides.get("on_duplicate", "keep")
    if mode != "keep" and mode != "replace":
        raise OptionError("on_duplicate", f"must be 'keep' or 'replace', not {mode!r}")
    return states, mode == "replace"


def encode_backoff(spec: Any) -> str:
    """A per-job backoff must be storable: 'exponential', 'fixed' or seconds."""
    if spec in ("exponential", "fixed"):
        return str(spec)
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        return f"{check_duration('backoff', spec, positive=False)}"
    raise OptionError("backoff", "per-enqueue backoff must be 'exponential', 'fixed' or seconds >= 0")


def decode_backoff(stored: str) -> Backoff:
    if stored in ("exponential", "fixed"):
        return make_backoff(stored)  # type: ignore[arg-type]
    return make_backoff(float(stored))


def check_name(option: str, value: Any) -> str:
    """Job type, queue and schedule names: printable text, so every backend stores them alike."""
    if not isinstance(value, str) or not value or len(value) > 128:
        raise OptionError(option, f"must be a non-empty string of at most 128 characters, not {value!r}")
    if not value.isprintable():
        raise OptionError(option, f"must not contain control characters, got {value!r}")
    return value


def check_int(option: str, value: Any, minimum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise OptionError(option, f"must be an int, not {value!r}")
    if minimum is not None and value < minimum:
        raise OptionError(option, f"must be >= {minimum}, not {value}")
    if abs(value) > 2**31 - 1:
        raise OptionError(option, f"out of range: {value}")
    return value


def check_duration(option: str, value: Any, positive: bool = True) -> float:
    """Seconds (a number or a timedelta) within the stored bounds (``conveyor.timeutil.MAX_DELAY``)."""
    try:
        return check_seconds("it", value, positive)
    except ValueError as exc:
        raise OptionError(option, str(exc).removeprefix("it ")) from None
