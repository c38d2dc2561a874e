"""JobSpec and the registry behind ``@app.job``: what each job type runs and with which defaults."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from pydantic import BaseModel

from conveyor.backends.base import ClaimLimit
from conveyor.batch import item_model
from conveyor.cron import CronSpec
from conveyor.errors import DeclarationError, OptionError, UnknownJobType
from conveyor.options import JobOptions, check_name
from conveyor.ratelimit import QueuePolicy, claim_limits

OPTION_NAMES = frozenset(f.name for f in fields(JobOptions))
PARENT_ARGS = ("parent_result", "parent_results")
"""Keyword-only handler parameters that ask for the results of the jobs a step depends on:
``parent_result`` the one it follows in a chain, ``parent_results`` all of them by job id."""


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A declared job type: its handler, payload model and default options."""

    name: str
    func: Callable[..., Any]
    model: type[BaseModel] | None
    is_async: bool
    takes_context: bool
    options: JobOptions
    parent_arg: str | None = None  # one of PARENT_ARGS when the handler asks for its parents' results


def parent_arg(func: Callable[..., Any]) -> str | None:
    """Which of PARENT_ARGS the handler declares as a keyword-only parameter, if any."""
    asked = [p.name for p in inspect.signature(func).parameters.values() if p.kind is p.KEYWORD_ONLY and p.name in PARENT_ARGS]
    if len(asked) > 1:
        raise DeclarationError(f"handler {func.__qualname__} asks for both parent_result and parent_results; take one")
    return asked[0] if asked else None


def payload_model(func: Callable[..., Any]) -> tuple[type[BaseModel] | None, bool]:
    """The pydantic model annotated on the handler's first parameter, and whether it takes ctx."""
    params = list(inspect.signature(func).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional or len(positional) > 2:
        raise DeclarationError(
            f"handler {func.__qualname__} must take (payload) or (payload, ctx), not {len(positional)} positional parameters"
        )
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise DeclarationError(f"cannot read the annotations of {func.__qualname__}: {exc}") from exc
    annotation = hints.get(positional[0].name)
    model = annotation if inspect.isclass(annotation) and issubclass(annotation, BaseModel) else None
    return model, len(positional) == 2


class Registry:
    """The job types one app knows. Never global: each Conveyor has its own."""

    def __init__(self) -> None:
        self._specs: dict[str, JobSpec] = {}
        self.schedules: dict[str, CronSpec] = {}  # app.cron declarations, by schedule name
        self.queue_policies: dict[str, QueuePolicy] = {}  # app.queue_limit, by queue

    def declare(self, func: Callable[..., Any], name: str | None, options: dict[str, Any]) -> JobSpec:
        job_name = check_name("name", name or func.__name__)
        if job_name in self._specs:
            raise DeclarationError(f"job type {job_name!r} is declared twice")
        unknown = set(options) - OPTION_NAMES
        if unknown:
            raise DeclarationError(f"unknown option {min(unknown)!r} for job {job_name!r}; known: {', '.join(sorted(OPTION_NAMES))}")
        try:
            job_options = JobOptions(**options)
        except OptionError as exc:
            raise DeclarationError(f"job {job_name!r}: {exc}") from None
        model, takes_context = payload_model(func)
        if job_options.batch is not None:
            model = item_model(func)  # a batch handler takes list[Model]
        spec = JobSpec(
            name=job_name,
            func=func,
            model=model,
            is_async=inspect.iscoroutinefunction(func),
            takes_context=takes_context,
            options=job_options,
            parent_arg=parent_arg(func),
        )
        self._specs[job_name] = spec
        return spec

    def get(self, name: str) -> JobSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownJobType(name) from None

    def find(self, name: str) -> JobSpec | None:
        return self._specs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> typing.Iterator[JobSpec]:
        return iter(self._specs.values())

    def limits(self) -> tuple[ClaimLimit, ...]:
        """The rate and concurrency limits every claim must respect (see conveyor/ratelimit.py)."""
        return claim_limits(((s.name, s.options.rate, s.options.concurrency) for s in self._specs.values()), self.queue_policies.values())

    def queues(self) -> tuple[str, ...]:
        """Every queue some declared job uses, sorted."""
        return tuple(sorted({spec.options.queue for spec in self._specs.values()}))
