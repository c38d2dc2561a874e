"""Per-enqueue options merged into a declaration's defaults, without a database."""

from __future__ import annotations

import pytest

from conveyor.errors import OptionError
from conveyor.options import JobOptions, resolve


def test_no_overrides_gives_the_declaration() -> None:
    opts = resolve(JobOptions(queue="q", priority=3, max_attempts=2, timeout=5, unique_for=60), {})
    assert (opts.queue, opts.priority, opts.max_attempts, opts.timeout, opts.unique_for) == ("q", 3, 2, 5, 60)
    assert (opts.delay, opts.run_at, opts.backoff, opts.idempotency_key, opts.depends_on) == (0.0, None, None, None, ())


def test_overrides_are_checked_like_the_declaration() -> None:
    opts = resolve(JobOptions(), {"queue": "urgent", "priority": -4, "max_attempts": 9})
    assert (opts.queue, opts.priority, opts.max_attempts) == ("urgent", -4, 9)
    for bad in ({"queue": ""}, {"queue": "a\nb"}, {"queue": 1}, {"priority": 1.5}, {"priority": True}, {"priority": 2**31},
                {"max_attempts": 0}):
        with pytest.raises(OptionError) as caught:
            resolve(JobOptions(), bad)
        assert caught.value.option == next(iter(bad))
    with pytest.raises(OptionError) as caught:
        resolve(JobOptions(), {"retries": 1, "attempts": 2, "queue": "q"})
    assert caught.value.option == "attempts"
