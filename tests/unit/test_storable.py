"""Text and JSON made storable on every backend, and JSON checked for what cannot be stored."""

from __future__ import annotations

import json

import pytest

from conveyor.storable import MAX_JSON_DEPTH, json_depth, json_problem, storable_json, storable_text


def test_storable_text_escapes_nul_and_lone_surrogates_visibly_and_keeps_the_rest() -> None:
    assert storable_text("plain") == "plain"
    assert storable_text("ü→🚀") == "ü→🚀"
    assert storable_text("bad\x00byte") == "bad\\x00byte"
    assert storable_text("bad \ud800 and \udfff") == "bad \\ud800 and \\udfff"
    storable_text("x\ud800\x00").encode("utf-8")  # no error: every database stores it


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"s": "a\x00b"}, {"s": "a\ufffdb"}),
        (["x\ud800", "pair \U0001f680"], ["x\ufffd", "pair \U0001f680"]),
        ({"k\udc00": "\ud83d"}, {"k\ufffd": "\ufffd"}),
        ({"literal": "\\u0000 and \\ud800"}, {"literal": "\\u0000 and \\ud800"}),  # backslashes, not escapes
        ({"fine": "ü→🚀"}, {"fine": "ü→🚀"}),
    ],
)
def test_storable_json_replaces_what_no_database_stores_and_stays_json(value: object, expected: object) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        stored = storable_json(text)
        assert json.loads(stored) == expected
        assert json_problem(stored) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [({"s": "\x00"}, "nul_character"), ({"s": "\ud800"}, "lone_surrogate"), ({"s": "a\udfffb"}, "lone_surrogate")],
)
def test_json_problem_names_what_cannot_be_stored(value: object, problem: str) -> None:
    assert json_problem(json.dumps(value))[0] == problem  # type: ignore[index]
    assert json_problem(json.dumps(value, ensure_ascii=False))[0] == problem  # type: ignore[index]


def test_json_depth_ignores_brackets_inside_strings() -> None:
    assert json_depth('{"a":[{"b":"[[[[{{{{"}]}') == 3
    deep = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    assert json_problem(deep) == ("too_deep", f"is nested more than {MAX_JSON_DEPTH} levels deep")
    wide = json.dumps([{"a": [1]} for _ in range(1000)])  # many brackets, shallow
    assert json_problem(wide) is None
