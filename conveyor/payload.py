"""Payload validation: at enqueue (refuse, store nothing) and at claim (dead-letter the job)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from conveyor.errors import PayloadError
from conveyor.storable import json_problem

JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
"""One encoder for every payload: ``json.dumps`` with options builds a new encoder per call."""

MAX_PAYLOAD_BYTES = 1_048_576
"""A payload is a job's arguments, not its data: large blobs belong in storage, referenced by id."""


TOO_DEEP = {"field": "", "message": "payload is nested too deeply to be stored and read back", "type": "too_deep"}


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
        except RecursionError:
            raise PayloadError(job_type, [TOO_DEEP]) from None
        try:
            text = instance.model_dump_json()
        except ValueError as exc:  # pydantic's serialization error: a lone surrogate, or too deep
            error = TOO_DEEP if "depth" in str(exc) else {"field": "", "message": f"payload cannot be stored: {exc}", "type": "json_type"}
            raise PayloadError(job_type, [error]) from None
    else:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise PayloadError(job_type, [{"field": "", "message": f"payload must be a JSON object, not {type(data).__name__}", "type": "dict_type"}])
        try:
            text = JSON.encode(data)
        except (TypeError, ValueError) as exc:
            raise PayloadError(job_type, [{"field": "", "message": f"payload is not JSON-serializable: {exc}", "type": "json_type"}]) from None
        except RecursionError:
            raise PayloadError(job_type, [TOO_DEEP]) from None
    problem = json_problem(text)  # refused on every backend, though only one of them may fail on it
    if problem is not None:
        raise PayloadError(job_type, [{"field": "", "message": f"payload {problem[1]}", "type": problem[0]}])
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
