"""Renamed names (issue 15's one vocabulary) still work for one release and warn where they are used."""

from __future__ import annotations

import importlib

import pytest

import conveyor
from conveyor.backends.base import FinishParams
from conveyor.job import FailedAttempt
from conveyor.outcome import Outcome
from conveyor.ratelimit import Throttled


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("conveyor", "JobError", FailedAttempt),
        ("conveyor.job", "JobError", FailedAttempt),
        ("conveyor", "RetryAfter", Throttled),
        ("conveyor.ratelimit", "RetryAfter", Throttled),
        ("conveyor.outcome", "Decision", Outcome),
        ("conveyor.backends.base", "Outcome", FinishParams),
    ],
)
def test_an_old_name_warns_and_is_the_new_one(module: str, old: str, new: object) -> None:
    with pytest.warns(DeprecationWarning, match=rf"{module}\.{old} is deprecated .* use "):
        assert getattr(importlib.import_module(module), old) is new


def test_no_record_is_exported_among_the_exceptions() -> None:
    for name in conveyor.__all__:
        value = getattr(conveyor, name)
        if name.endswith("Error"):
            assert isinstance(value, type) and issubclass(value, Exception), name
    assert "JobError" not in conveyor.__all__ and "RetryAfter" not in conveyor.__all__


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="Conveyr"):
        conveyor.Conveyr  # type: ignore[attr-defined]  # noqa: B018
