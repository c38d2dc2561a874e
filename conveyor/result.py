"""Results and ``ctx.once`` values as stored JSON: encoded the way pydantic encodes, refused out loud.

A handler's return value and a once-step's value are kept as JSON. Whatever pydantic can write
as JSON is written its way (a ``datetime`` or ``UUID`` becomes a string, a ``Decimal`` its exact
text, an enum its value, a model or dataclass an object), so it reads back as those JSON types. A
value that still has no JSON form (a ``set``, whose order and type JSON cannot keep; an arbitrary
object; NaN), or whose JSON is over the size limit (setting ``max_result_bytes``), raises
``ResultError`` naming the type or the size: the run fails with it rather than completing with a
silently empty result.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import PydanticSerializationError, to_jsonable_python

from conveyor.errors import ResultError
from conveyor.storable import MAX_JSON_DEPTH, json_depth, storable_json


def _jsonable(value: Any) -> Any:
    """``json``'s hook for what it cannot write itself: pydantic's JSON form, or a clear refusal."""
    if isinstance(value, set | frozenset):
        raise ResultError(f"a {type(value).__name__} cannot be stored as JSON (it would come back as a list); return a list")
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError:
        raise ResultError(f"a value of type {type(value).__module__}.{type(value).__qualname__} cannot be stored as JSON") from None


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_jsonable)


def encode_result(value: Any, limit: int) -> str | None:
    """``value`` as the JSON text to store (``None`` stays ``None``); raises ResultError if it cannot be.

    ``limit`` is the setting ``max_result_bytes``: a result reports what was done, data belongs in storage.
    """
    if value is None:
        return None
    try:
        text = _ENCODER.encode(value)
    except ValueError as exc:  # NaN or infinity, a circular reference
        raise ResultError(f"the value cannot be stored as JSON: {exc}") from None
    except RecursionError:
        raise ResultError("the value is nested too deeply to store as JSON") from None
    if len(text) > limit:  # ASCII-only text: characters are bytes
        raise ResultError(f"the value is {len(text)} bytes as JSON, over the limit of {limit} (setting max_result_bytes)")
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and json_depth(text) > MAX_JSON_DEPTH:
        raise ResultError(f"the value is nested deeper than {MAX_JSON_DEPTH} levels, which a worker could not read back")
    return storable_json(text)  # a NUL or lone surrogate in its text replaced (conveyor/storable.py)
