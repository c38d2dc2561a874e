"""Payload validation: at enqueue (refuse, store nothing) and at claim (dead-letter the job)."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from conveyor.errors import PayloadError

NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
"""JSON's escape for a NUL character (an odd run of backslashes before u0000)."""

JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
"""One encoder for every payload: ``json.dumps`` with options builds a new encoder per call."""

MAX_PAYLOAD_BYTES = 1_048_576
"""A payload is a job's arguments, not its data: large blobs belong in storage, referenced by id."""


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as ``{"field": "items.0.quantity", "message": ..., "type": ...}``."""
    return [
        {
            "field": ".".join(str(part) for part in err["loc"]),
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False)
    ]


def encode(job_type: str, model: type[BaseModel] | None, data: Any, max_bytes: int = MAX_PAYLOAD_BYTES) -> str:
    """Validate ``data`` for ``job_type`` and return it as the JSON text to store."""
    if model is not None:
        try:
            instance = data if isinstance(data, model) else model.model_validate(data)
        except ValidationError as exc:
            raise PayloadError(job_type, field_errors(exc)) from None
        text = instance.model_dump_json()
    else:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise PayloadError(job_type, [{"field": "", "message": f"payload must be a JSON object, not {type(data).__name__}", "type": "dict_type"}])
        try:
            text = JSON.encode(data)
        except (TypeError, ValueError) as exc:
            raise PayloadError(job_type, [{"field": "", "message": f"payload is not JSON-serializable: {exc}", "type": "json_type"}]) from None
    # PostgreSQL's jsonb cannot hold NUL: refuse it on every backend (the regex only when the escape appears at all)
    if "\\u0000" in text and NUL_ESCAPE.search(text):
        raise PayloadError(job_type, [{"field": "", "message": "payload contains a NUL character (\\u0000), which cannot be stored", "type": "nul_character"}])
    if len(text) > max_bytes:
        raise PayloadError(job_type, [{"field": "", "message": f"payload is {len(text)} bytes, over the limit of {max_bytes}", "type": "too_large"}])
    return text


def decode(job_type: str, model: type[BaseModel] | None, stored: dict[str, Any]) -> Any:
    """The handler's argument for a claimed job; raises PayloadError if it no longer fits."""
    if model is None:
        return stored
    try:
        return model.model_validate(stored)
    except ValidationError as exc:
        raise PayloadError(job_type, field_errors(exc)) from None
