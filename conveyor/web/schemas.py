"""The admin API's request and response shapes; validation here turns bad filters into clear 422s."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from conveyor.admin import Selection
from conveyor.backends.base import WorkerInfo
from conveyor.job import Job, JobState

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]
"""A queue, type or workflow name: non-empty, no NUL byte (PostgreSQL refuses those in text)."""

JobId = Annotated[int, Field(ge=1, le=2**63 - 1)]
Limit = Annotated[int, Field(ge=1, le=500)]


class JobQuery(BaseModel):
    """Which jobs: every given field narrows. Repeat a parameter to match several values."""

    model_config = ConfigDict(extra="forbid")

    state: list[JobState] = Field(default_factory=list, max_length=7)
    queue: list[Name] = Field(default_factory=list, max_length=50)
    type: list[Name] = Field(default_factory=list, max_length=50)
    workflow_id: Name | None = None
    created_after: AwareDatetime | None = None
    created_before: AwareDatetime | None = None

    def where(self) -> dict[str, Any]:
        """Keyword filters for ``Conveyor.list_jobs`` and friends."""
        out: dict[str, Any] = {}
        if self.state:
            out["state"] = list(self.state)
        if self.queue:
            out["queue"] = list(self.queue)
        if self.type:
            out["type"] = list(self.type)
        if self.workflow_id is not None:
            out["workflow_id"] = self.workflow_id
        if self.created_after is not None:
            out["created_after"] = self.created_after
        if self.created_before is not None:
            out["created_before"] = self.created_before
        return out


class PageQuery(JobQuery):
    limit: Limit = 50
    before_id: JobId | None = None


class SelectionIn(BaseModel):
    """The jobs a bulk action applies to: explicit ids, a filter, or ``{"all": true}``.

    An empty list or an empty filter selects nothing (count 0); only ``{"all": true}`` acts on
    every job, and the audit row says ``all``.
    """

    model_config = ConfigDict(extra="forbid")

    ids: list[JobId] | None = Field(default=None, max_length=10_000)
    filter: JobQuery | None = None
    all: bool = False

    @model_validator(mode="after")
    def one_scope(self) -> SelectionIn:
        chosen = sum([self.ids is not None, self.filter is not None, self.all])
        if chosen != 1:
            raise ValueError('give exactly one of "ids", "filter" or "all": true')
        return self

    def chosen(self) -> Selection:
        if self.ids is not None:
            return Selection.of(self.ids)
        if self.filter is not None:
            return Selection.matching(**self.filter.where())
        return Selection.every()


class JobPage(BaseModel):
    """Newest first; pass ``next_before_id`` as ``before_id`` for the next page."""

    jobs: list[Job]
    next_before_id: int | None


class ActionResult(BaseModel):
    action: str
    count: int


class WorkerOut(BaseModel):
    worker: WorkerInfo
    live: bool
    heartbeat_age: float | None


class Problem(BaseModel):
    detail: str


class QueueOut(BaseModel):
    """A queue: paused or not (``paused_at`` since when), and its jobs by state."""

    name: str
    paused: bool
    paused_at: datetime | None
    counts: dict[str, int]


class ScheduleIn(BaseModel):
    """A schedule added or changed at run time; ``options`` are enqueue options for its jobs."""

    model_config = ConfigDict(extra="forbid")

    expression: str = Field(min_length=1, max_length=200)
    job_type: Name
    payload: Any = None
    tz: str | None = Field(default=None, max_length=100)
    missed: Literal["skip", "run_once"] = "skip"
    options: dict[str, Any] = Field(default_factory=dict)


class NewScheduleIn(ScheduleIn):
    name: Name


class ResultOut(BaseModel):
    """A completed job's result."""

    job_id: int
    state: str
    result: Any
