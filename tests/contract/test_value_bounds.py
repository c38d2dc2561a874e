"""Values that cannot be stored or read back are refused at the API edge with Conveyor's own errors:
unbounded or non-finite times and durations, payloads too deep or with text no database keeps."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from conveyor import Conveyor, Snooze, Throttled
from conveyor.errors import DeclarationError, OptionError, PayloadError
from conveyor.outcome import MAX_ASKED_WAIT
from conveyor.timeutil import MAX_DELAY


def nested(depth: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    for _ in range(depth - 1):
        payload = {"a": payload}
    return payload


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("delay", 1e12),
        ("delay", math.inf),
        ("delay", math.nan),
        ("delay", -1),
        ("delay", timedelta.max),
        ("timeout", math.nan),
        ("timeout", math.inf),
        ("timeout", 1e12),
        ("unique_for", math.nan),
        ("unique_for", math.inf),
        ("backoff", math.inf),
        ("backoff", math.nan),
        ("backoff", 1e12),
        ("run_at", datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
        ("run_at", datetime(9999, 12, 31, tzinfo=UTC)),
        ("run_at", datetime(1969, 12, 31, tzinfo=UTC)),
    ],
)
def test_unbounded_times_are_refused_at_enqueue(app: Conveyor, option: str, value: Any) -> None:
    @app.job()
    def task(p: dict) -> None:  # type: ignore[type-arg]
        return None

    with pytest.raises(OptionError, match=option):
        app.enqueue("task", {}, **{option: value})
    assert app.admin.jobs.count() == 0
    assert app.admin.jobs.list() == []


def test_the_longest_allowed_delay_is_stored_and_read_back(app: Conveyor) -> None:
    @app.job()
    def task(p: dict) -> None:  # type: ignore[type-arg]
        return None

    job = app.admin.jobs.get(app.enqueue("task", {}, delay=MAX_DELAY, timeout=MAX_DELAY))
    assert abs((job.run_at - app.now()).total_seconds() - MAX_DELAY) < 60
    assert app.admin.jobs.list()[0].id == job.id


@pytest.mark.parametrize(("option", "value"), [("timeout", math.nan), ("timeout", math.inf), ("backoff", math.inf), ("backoff", math.nan), ("unique_for", math.inf)])
def test_unbounded_times_are_refused_at_declaration(app: Conveyor, option: str, value: Any) -> None:
    with pytest.raises((DeclarationError, OptionError), match=option):

        @app.job(**{option: value})
        def task(p: dict) -> None:  # type: ignore[type-arg]
            return None


@pytest.mark.parametrize("seconds", [math.inf, math.nan, -math.inf, 1e12])
def test_a_snooze_out_of_bounds_is_refused_where_it_is_made(seconds: float) -> None:
    with pytest.raises(ValueError, match="Snooze"):
        Snooze(seconds)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("inf", MAX_ASKED_WAIT), ("1e12", MAX_ASKED_WAIT), ("nan", 30.0), ("-inf", 0.0), (math.inf, MAX_ASKED_WAIT), (timedelta.max, MAX_ASKED_WAIT)],
)
def test_a_remote_retry_after_is_capped_like_the_others(header: Any, expected: float) -> None:
    assert Throttled(header, default=30).seconds == expected


@pytest.mark.parametrize("depth", [990, 995, 5000])
def test_a_payload_nested_too_deep_is_refused_with_a_payload_error(app: Conveyor, depth: int) -> None:
    @app.job()
    def task(p: dict) -> None:  # type: ignore[type-arg]
        return None

    with pytest.raises(PayloadError, match="nest"):
        app.enqueue("task", nested(depth))
    with pytest.raises(PayloadError, match="nest"):
        app.enqueue_many([("task", {"ok": 1}), ("task", nested(depth))])
    assert app.admin.jobs.count() == 0
    app.enqueue("task", nested(50))  # an ordinary depth is kept


@pytest.mark.parametrize("text", ["bad \ud800", "\udfff", "pair \ud83d"])
def test_a_lone_surrogate_in_a_payload_is_refused_with_a_payload_error(app: Conveyor, text: str) -> None:
    @app.job()
    def task(p: dict) -> None:  # type: ignore[type-arg]
        return None

    for payload in ({"s": text}, {text: 1}, {"l": [1, {"x": text}]}):
        with pytest.raises(PayloadError, match="surrogate"):
            app.enqueue("task", payload)
    assert app.admin.jobs.count() == 0
    assert app.admin.jobs.get(app.enqueue("task", {"s": "ü→🚀"})).payload == {"s": "ü→🚀"}


@pytest.mark.parametrize("key", ["k\x00", "k\ud800"])
def test_an_idempotency_key_no_database_can_store_is_refused(app: Conveyor, key: str) -> None:
    @app.job()
    def task(p: dict) -> None:  # type: ignore[type-arg]
        return None

    with pytest.raises(OptionError, match="idempotency_key"):
        app.enqueue("task", {}, idempotency_key=key)
    assert app.admin.jobs.count() == 0
