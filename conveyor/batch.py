"""Batch handlers: one call for up to N due jobs of a type, each job's outcome still its own.

>>> @app.job(batch=10, queue="email")
... def send_emails(payloads: list[Email], ctx: BatchContext) -> None:
...     rejected = provider.send_many([p.model_dump() for p in payloads])
...     if rejected:
...         raise BatchError({i: "rejected by provider" for i in rejected})   # only these retry

A handler may instead return a list with one entry per payload: a value (that job's result),
an exception instance (that job failed), or a ``Snooze``/``Cancel``. Raising anything else
fails every job of the batch; each then follows its own retry policy.
"""

from __future__ import annotations

import collections.abc
import inspect
import logging
import threading
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from conveyor.errors import DeclarationError

if TYPE_CHECKING:
    from conveyor.context import JobContext
    from conveyor.job import Job

LISTS = (list, tuple, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection)


class BatchError(Exception):
    """Some items of a batch failed: those retry (or go dead), the others complete.

    ``failed`` maps item indexes to the error (an exception or a message); ``results``
    optionally gives every item's result, read for the items that did not fail.
    """

    def __init__(self, failed: Mapping[int, BaseException | str], results: Sequence[Any] | None = None) -> None:
        self.failed = dict(failed)
        self.results = list(results) if results is not None else None
        super().__init__(f"{len(self.failed)} item(s) of the batch failed: {sorted(self.failed)[:20]}")


class ItemFailed(Exception):
    """An item of a batch failed with this message (from ``BatchError``)."""


class BatchContext:
    """Handed to a batch handler: the batch's jobs, and one JobContext per item.

    ``ctx.items[i].enqueue(...)`` attaches a follow-up job to item ``i``: it is stored
    only if that item completes.
    """

    def __init__(self, items: list[JobContext]) -> None:
        self.items = items
        self.jobs: list[Job] = [c.job for c in items]
        self.cancelled = threading.Event()  # set at timeout or shutdown
        self.log = logging.LoggerAdapter(
            logging.getLogger(f"conveyor.job.{items[0].job.type}"), {"job_ids": [j.id for j in self.jobs], "job_type": items[0].job.type}
        )

    @property
    def job_ids(self) -> list[int]:
        return [j.id for j in self.jobs]


def item_model(func: Callable[..., Any]) -> type[BaseModel] | None:
    """The pydantic model of one item, from a batch handler's ``list[Model]`` annotation."""
    params = [p for p in inspect.signature(func).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    try:
        annotation = typing.get_type_hints(func).get(params[0].name) if params else None
    except Exception as exc:
        raise DeclarationError(f"cannot read the annotations of {func.__qualname__}: {exc}") from exc
    if annotation is None:
        return None
    origin = typing.get_origin(annotation)
    if origin not in LISTS and annotation not in LISTS:
        raise DeclarationError(f"batch handler {func.__qualname__} must take a list of payloads (e.g. list[MyModel]), not {annotation!r}")
    args = typing.get_args(annotation)
    item = args[0] if args else None
    return item if inspect.isclass(item) and issubclass(item, BaseModel) else None


def item_outcomes(count: int, result: Any = None, error: BaseException | None = None) -> list[tuple[Any, BaseException | None]]:
    """Each item's (result, error) from what the batch handler returned or raised."""
    if error is None:
        if isinstance(result, list | tuple) and len(result) == count:
            return [(None, r) if isinstance(r, BaseException) else (r, None) for r in result]
        return [(result, None)] * count
    if isinstance(error, BatchError):
        results = error.results if error.results is not None and len(error.results) == count else [None] * count
        out: list[tuple[Any, BaseException | None]] = []
        for i in range(count):
            failed = error.failed.get(i)
            if failed is None:
                out.append((results[i], None))
            else:
                out.append((None, failed if isinstance(failed, BaseException) else ItemFailed(str(failed))))
        return out
    return [(None, error)] * count
