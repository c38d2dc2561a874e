"""Payload encoding without a database: the stored text, and what is refused."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from conveyor.errors import PayloadError
from conveyor.payload import encode


class Note(BaseModel):
    text: str


def test_a_payload_is_stored_as_compact_json() -> None:
    assert encode("t", None, {"a": [1, 2.5], "b": "é"}) == '{"a":[1,2.5],"b":"\\u00e9"}'
    assert encode("t", None, None) == "{}"
    assert encode("t", Note, {"text": "x"}) == '{"text":"x"}'


@pytest.mark.parametrize("data", [{"n": float("nan")}, {"n": object()}, [1]])
def test_a_payload_json_cannot_hold_is_refused(data: object) -> None:
    with pytest.raises(PayloadError):
        encode("t", None, data)


@pytest.mark.parametrize("model", [None, Note])
def test_a_nul_character_is_refused_but_a_backslash_before_u0000_is_text(model: type[BaseModel] | None) -> None:
    for text in ("a\x00b", "\\\x00"):
        with pytest.raises(PayloadError, match="NUL"):
            encode("t", model, {"text": text})
    assert encode("t", model, {"text": "\\u0000"}) == '{"text":"\\\\u0000"}'
