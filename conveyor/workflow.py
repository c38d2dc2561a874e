"""Workflows built up front: chains, groups, fan-in callbacks and dependencies → rows (pure, no I/O).

    flow = chain(
        charge.step(Order(order_id="o1")),   # charge is what @app.job returned; step("charge", {...}) by name
        group(send_email.step(...), generate_invoice.step(...)),
        notify_done.step(...),               # fan-in: runs after every member of the group
    )
    handle = app.enqueue_workflow(flow)

A workflow is a DAG of steps; each edge says what happens when the parent fails for good:
``cancel`` (default: the dependent is cancelled with the reason) or ``continue``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from conveyor.backends.base import Dependency
from conveyor.errors import UnknownJobType, WorkflowError
from conveyor.job import FINISHED_STATES, Job

OnFailure = Literal["cancel", "continue"]


class NamedJob(Protocol):
    """A job handle (``conveyor/handle.py``) where a job type is named: it knows its type's name.

    Spelt here, not there, because the handle builds workflow steps and this module is below it.
    """

    @property
    def name(self) -> str: ...


def type_name(job_type: str | NamedJob) -> str:
    """The job type's name, given as a string or as the handle ``@app.job`` returned."""
    if isinstance(job_type, str):
        return job_type
    name = getattr(job_type, "name", None)
    if not isinstance(name, str):
        # a bare function (declared nowhere) or another object: name what was given
        raise UnknownJobType(getattr(job_type, "__qualname__", None) or repr(job_type))
    return name


@dataclass(frozen=True, slots=True)
class After:
    """An edge to an existing job id, or to a job enqueued earlier in the same handler run."""

    ref: int | PendingJob
    on_failure: OnFailure = "cancel"


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A job ``ctx.enqueue`` will insert when its parent completes: usable in ``depends_on``."""

    index: int


@dataclass(eq=False)
class Step:
    """One job of a declared workflow; ``after`` lists steps (or job ids) it waits for."""

    job_type: str
    payload: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    after: list[tuple[Step | int, OnFailure]] = field(default_factory=list)

    def then(self, *nexts: Step, on_failure: OnFailure = "cancel") -> Step:
        for n in nexts:
            n.after.append((self, on_failure))
        return self


@dataclass(eq=False)
class Group:
    """Steps that run in parallel; what comes after a group waits for all of them (fan-in)."""

    members: list[Flow]


@dataclass(eq=False)
class Chain:
    """Flows that run one after another."""

    links: list[Flow]


Flow = Step | Group | Chain


def step(
    job_type: str | NamedJob, payload: Any = None, *, after: Iterable[Step | int | After] = (), on_failure: OnFailure = "cancel", **options: Any
) -> Step:
    """A workflow step of a job type (its name, or its handle); ``after`` may name other steps or
    existing job ids. ``handle.step(payload, ...)`` is the typed spelling of the same."""
    s = Step(type_name(job_type), payload, options)
    for parent in after:
        if isinstance(parent, After):
            if isinstance(parent.ref, PendingJob):
                raise WorkflowError("PendingJob refs belong to ctx.enqueue, not to declared workflows")
            s.after.append((parent.ref, parent.on_failure))
        else:
            s.after.append((parent, on_failure))
    return s


def chain(*links: Flow) -> Chain:
    return Chain(list(links))


def group(*members: Flow) -> Group:
    return Group(list(members))


def _wire(flow: Flow, upstream: list[Step], steps: list[Step]) -> list[Step]:
    """Add edges from ``upstream`` into ``flow``'s entry steps; return its exit steps."""
    if isinstance(flow, Step):
        for parent in upstream:
            flow.after.append((parent, "cancel"))
        if flow not in steps:
            steps.append(flow)
        return [flow]
    if isinstance(flow, Group):
        exits: list[Step] = []
        for member in flow.members:
            exits.extend(_wire(member, upstream, steps))
        return exits
    current = upstream
    for link in flow.links:
        current = _wire(link, current, steps)
    return current


def collect(flow: Flow) -> list[Step]:
    """Every step of ``flow`` plus steps reached through ``after``, edges wired."""
    steps: list[Step] = []
    _wire(flow, [], steps)
    seen = {id(s) for s in steps}
    i = 0
    while i < len(steps):
        for parent, _ in steps[i].after:
            if isinstance(parent, Step) and id(parent) not in seen:
                seen.add(id(parent))
                steps.append(parent)
        i += 1
    return steps


def topological(steps: Sequence[Step]) -> list[tuple[Step, list[Dependency]]]:
    """Steps ordered parents-first, each with its dependencies; refuses cycles."""
    index = {id(s): i for i, s in enumerate(steps)}
    order: list[Step] = []
    state: dict[int, int] = {}  # 1 = visiting, 2 = done

    def visit(s: Step, path: list[str]) -> None:
        mark = state.get(id(s), 0)
        if mark == 2:
            return
        if mark == 1:
            raise WorkflowError(f"the workflow has a cycle: {' -> '.join([*path, s.job_type])}")
        state[id(s)] = 1
        for parent, _ in s.after:
            if isinstance(parent, Step):
                if id(parent) not in index:
                    raise WorkflowError(f"step {s.job_type!r} depends on a step that is not in the workflow")
                visit(parent, [*path, s.job_type])
        state[id(s)] = 2
        order.append(s)

    for s in steps:
        visit(s, [])
    position = {id(s): i for i, s in enumerate(order)}
    out: list[tuple[Step, list[Dependency]]] = []
    for s in order:
        deps: list[Dependency] = []
        for parent, on_failure in s.after:
            cont = on_failure == "continue"
            if isinstance(parent, Step):
                deps.append(Dependency(local=position[id(parent)], continue_on_failure=cont))
            elif isinstance(parent, int) and not isinstance(parent, bool):
                deps.append(Dependency(job_id=parent, continue_on_failure=cont))
            else:
                raise WorkflowError(f"after= takes steps or job ids, not {parent!r}")
        out.append((s, deps))
    return out


def dependencies(depends_on: Iterable[Any], on_failure: OnFailure = "cancel") -> tuple[Dependency, ...]:
    """``depends_on=[...]`` of an enqueue: job ids, PendingJob refs or After edges."""
    deps: list[Dependency] = []
    for item in depends_on:
        edge = item if isinstance(item, After) else After(item, on_failure)
        cont = edge.on_failure == "continue"
        if edge.on_failure not in ("cancel", "continue"):
            raise WorkflowError(f"on_failure must be 'cancel' or 'continue', not {edge.on_failure!r}")
        if isinstance(edge.ref, PendingJob):
            deps.append(Dependency(local=edge.ref.index, continue_on_failure=cont))
        elif isinstance(edge.ref, int) and not isinstance(edge.ref, bool):
            deps.append(Dependency(job_id=edge.ref, continue_on_failure=cont))
        else:
            raise WorkflowError(f"depends_on takes job ids, not {edge.ref!r}")
    return tuple(deps)


WorkflowState = Literal["running", "completed", "failed", "cancelled"]


def overall_state(states: Iterable[str]) -> WorkflowState:
    """Running while any job is unfinished; then failed if any died, cancelled if any was cancelled."""
    seen = set(states)
    if seen - FINISHED_STATES:
        return "running"
    if "dead" in seen:
        return "failed"
    if "cancelled" in seen or "expired" in seen:
        return "cancelled"
    return "completed"


@dataclass(frozen=True, slots=True)
class WorkflowNode:
    """A job in the workflow tree, under its parent (the job that enqueued it, or its first dependency)."""

    job: Job
    depends_on: tuple[int, ...]
    children: tuple[WorkflowNode, ...]


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """``app.admin.workflows.status(id)``: every job of the workflow, its edges, and the overall state."""

    id: str
    state: WorkflowState
    jobs: tuple[Job, ...]
    edges: tuple[tuple[int, int, bool], ...]  # (job, waits for, continue on failure)

    def tree(self) -> list[WorkflowNode]:
        return build_tree(self.jobs, self.edges)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for job in self.jobs:
            out[job.state.value] = out.get(job.state.value, 0) + 1
        return out


def build_tree(jobs: Sequence[Job], edges: Sequence[tuple[int, int, bool]]) -> list[WorkflowNode]:
    """Jobs nested under their primary parent; a fan-in job sits under its first dependency."""
    present = {j.id for j in jobs}
    deps: dict[int, list[int]] = {}
    for child, parent, _ in edges:
        deps.setdefault(child, []).append(parent)
    primary: dict[int, int | None] = {}
    for job in jobs:
        candidates = [job.parent_id] if job.parent_id in present else []
        candidates += sorted(p for p in deps.get(job.id, []) if p in present)
        primary[job.id] = candidates[0] if candidates else None
    kids: dict[int | None, list[Job]] = {}
    for job in sorted(jobs, key=lambda j: j.id):
        kids.setdefault(primary[job.id], []).append(job)

    def node(job: Job) -> WorkflowNode:
        return WorkflowNode(job, tuple(sorted(deps.get(job.id, []))), tuple(node(k) for k in kids.get(job.id, [])))

    return [node(root) for root in kids.get(None, [])]
