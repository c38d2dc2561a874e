"""Poison values among ordinary jobs: the standing property that no single bad value stalls anything.

Handlers raise, return, snooze, ask to retry after, enqueue children and report progress with
arbitrary values (text with NUL and lone surrogates, huge and non-finite numbers, extreme
datetimes, deep nesting, big blobs), drawn by hypothesis, among ordinary jobs, on real workers
(``Worker`` objects on threads, several at once) over a real database. After each round:

- every ordinary job (and every child a completed handler enqueued) completed exactly once;
- no worker stalled: every job settled, and a job enqueued afterwards still runs;
- every bad job ended in a terminal state (or, for a snooze or retry-after within the documented
  bounds, is scheduled within them) with a readable reason (UTF-8 text, no NUL);
- the admin API, the dashboard and the CLI list and show every job.

The suite runs a few examples per backend (tests/faults/test_poison_property.py); ``python
bench/faults.py --only poison --examples N`` runs as many as asked.
"""

from __future__ import annotations

import asyncio
import json
import math
import reprlib
import threading
import uuid
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import httpx
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from conveyor import Conveyor, JobContext, JobState, Snooze, Throttled
from conveyor.cli import main as cli
from conveyor.job import Job
from conveyor.testing import running_worker, wait_until
from conveyor.web import create_app
from conveyor.web.auth import Role, Token

KINDS = ("raise", "return", "progress", "snooze", "retry_after", "child_payload", "child_key", "child_ok")
TERMINAL = {JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED}
BOUND = timedelta(days=3660 + 1)  # the documented bound on any delay (ten years), and a day's slack
SECRET = "poison-admin-token"


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def values() -> st.SearchStrategy[Any]:
    """Arbitrary values, the hostile ones often."""
    text = st.text(st.characters(exclude_categories=()), max_size=40)  # lone surrogates and NUL included
    hostile_text = st.sampled_from(["bad\x00byte", "bad \ud800", "\udfff\x00", "ok", "x" * 200_000, ""])
    numbers = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**200), max_value=2**200),
        st.sampled_from([math.inf, -math.inf, math.nan, 1e12, 1e300, -1.0, 0.0, 2**63, -(2**63) - 1]),
    )
    zones: st.SearchStrategy[tzinfo | None] = st.sampled_from([UTC, timezone(timedelta(hours=5)), timezone(timedelta(hours=-12)), None])
    moments = st.datetimes(min_value=datetime.min, max_value=datetime.max, timezones=zones) | st.sampled_from(  # type: ignore[arg-type]
        [datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=5))), datetime.max.replace(tzinfo=UTC)]
    )
    deep = st.sampled_from([50, 199, 201, 990, 1200]).map(nested)
    blobs = st.sampled_from([(b"\x00\xff" * 50_000).hex(), "é" * 100_000, "\x00" * 70_000])
    scalars = st.one_of(text, hostile_text, numbers, moments, st.none(), st.booleans())
    return st.one_of(scalars, deep, blobs, st.lists(scalars, max_size=4), st.dictionaries(text, scalars, max_size=3))


class Plan:
    """What one poison job's handler does, and with which value."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value: Any) -> None:
        self.kind = kind
        self.value = value

    def __repr__(self) -> str:  # shallow: the value may be nested past any recursion limit
        return f"Plan({self.kind!r}, {reprlib.repr(self.value)})"


KNOWN = [
    Plan("raise", "bad\x00byte"),
    Plan("raise", "bad \ud800"),
    Plan("retry_after", math.inf),
    Plan("snooze", math.inf),
    Plan("return", nested(990)),
    Plan("return", datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=5)))),
    Plan("progress", "bad\x00byte"),
    Plan("child_key", "key\x00"),
    Plan("child_payload", "bad \ud800"),
    Plan("retry_after", 1e12),
]
"""The poison values issue 14 found, always tried first (hypothesis then draws its own)."""


def plans() -> st.SearchStrategy[list[Plan]]:
    return st.lists(st.builds(Plan, st.sampled_from(KINDS), values()), min_size=2, max_size=8)


class Harness:
    """An app whose handlers act out plans, and a record of every run."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.app = Conveyor(database_url, poll_interval=0.05, finish_delay=0.002, lease_seconds=3, rescue_interval=0.5)
        self.plans: dict[str, Plan] = {}
        self.runs: Counter[int] = Counter()
        self.asked_again: set[int] = set()
        self.lock = threading.Lock()
        self._declare()

    def close(self) -> None:
        self.app.close()

    def _declare(self) -> None:
        app = self.app

        @app.job(max_attempts=3, backoff=0.05)
        def ordinary(p: dict, ctx: JobContext) -> int:  # type: ignore[type-arg]
            with self.lock:
                self.runs[ctx.job_id] += 1
            return int(p["n"])

        @app.job(max_attempts=3, backoff=0.05)
        def child(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
            with self.lock:
                self.runs[ctx.job_id] += 1

        @app.job(max_attempts=1, timeout=30)
        def poison(p: dict, ctx: JobContext) -> Any:  # type: ignore[type-arg]
            return self.act(self.plans[p["plan"]], ctx)

    def act(self, plan: Plan, ctx: JobContext) -> Any:
        value = plan.value
        again = ctx.job_id in self.asked_again  # a snooze or retry-after already given: this run ends it
        match plan.kind:
            case "raise":
                raise ValueError(value if isinstance(value, str) else repr(value))
            case "return":
                return value
            case "progress":
                ctx.progress(value)
                return "progress reported"
            case "snooze" | "retry_after" if not again:
                self.asked_again.add(ctx.job_id)
                if plan.kind == "snooze":
                    raise Snooze(value if isinstance(value, int | float) else 0.01)
                raise Throttled(str(value) if isinstance(value, int | float) else value)
            case "snooze" | "retry_after":
                return "asked again, then done"
            case "child_payload":
                ctx.enqueue("child", {"v": value})
            case "child_key":
                ctx.enqueue("child", {}, idempotency_key=value if isinstance(value, str) else repr(value))
            case "child_ok":
                ctx.enqueue("child", {})
        return None

    # -- one round ----------------------------------------------------------------------------

    def round(self, drawn: list[Plan], ordinary: int = 12, workers: int = 2, settle: float = 90.0) -> dict[str, int]:
        app = self.app
        ids: list[int] = []
        poisoned: list[int] = []
        for i, plan in enumerate(drawn):
            key = uuid.uuid4().hex
            self.plans[key] = plan
            ids += app.enqueue_many([("ordinary", {"n": n}) for n in range(ordinary // len(drawn) + 1)])
            poisoned.append(app.enqueue("poison", {"plan": key, "i": i}))
        with ExitStack() as stack:
            for _ in range(workers):
                stack.enter_context(running_worker(app, concurrency=4))
            wait_until(lambda: all(settled(app.admin.jobs.get(j)) for j in ids + poisoned), timeout=settle,
                       message="every job to settle (a worker stalled?)")
            children = self.children_of(poisoned)
            wait_until(lambda: all(app.admin.jobs.get(c).state is JobState.COMPLETED for c in children), timeout=settle,
                       message="every child to complete")
            canary = app.enqueue("ordinary", {"n": -1})  # the workers still claim and finish work
            wait_until(lambda: app.admin.jobs.get(canary).state is JobState.COMPLETED, timeout=settle, message="a job after the round")
        for j in [*ids, *children, canary]:
            job = app.admin.jobs.get(j)
            assert job.state is JobState.COMPLETED, f"ordinary job {j} ended {job.state}: {reasons(job)}"
            assert self.runs[j] == 1, f"ordinary job {j} ran {self.runs[j]} times"
        for j in poisoned:
            check_bad(app.admin.jobs.get(j))
        every = [*ids, *children, *poisoned, canary]
        self.interfaces_show(every, [j for j in poisoned if app.admin.jobs.get(j).state is JobState.DEAD])
        return {"ordinary": len(ids) + len(children) + 1, "poisoned": len(poisoned)}

    def children_of(self, parents: list[int]) -> list[int]:
        return [j.id for j in self.app.admin.jobs.list(type="child", limit=10_000) if j.parent_id in set(parents)]

    def interfaces_show(self, ids: list[int], dead: list[int]) -> None:
        """The admin API, the dashboard and the CLI list and show every job."""
        web = create_app(self.app, tokens=[Token("poison", SECRET, Role.WRITE)])
        paths = ["/api/dlq", "/api/stats", "/jobs", "/dlq"] + [p for j in ids for p in (f"/api/jobs/{j}", f"/jobs/{j}")]
        listed, answers = asyncio.run(fetch(web, paths))
        assert set(ids) <= {j["id"] for j in listed["jobs"]}
        for path, (status, text) in zip(paths, answers):
            assert status == 200, f"{path}: {status} {text[:500]}"
        runner = CliRunner()
        listed_cli = runner.invoke(cli, ["jobs", "--database-url", self.url, "--json", "-n", "10000"])
        assert listed_cli.exit_code == 0, listed_cli.output[-2000:]
        assert set(ids) <= {j["id"] for j in json.loads(listed_cli.output)}
        table = runner.invoke(cli, ["jobs", "--database-url", self.url, "-n", "10000"])
        assert table.exit_code == 0, table.output[-2000:]
        for j in dead:
            shown = runner.invoke(cli, ["dlq", "show", str(j), "--database-url", self.url])
            assert shown.exit_code == 0, shown.output[-2000:]


async def fetch(web: Any, paths: list[str]) -> tuple[Any, list[tuple[int, str]]]:
    """The job list and each path's answer, asked of the ASGI app in-process (no server needed)."""
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin", headers={"Authorization": f"Bearer {SECRET}"}) as client:
        listed: list[Any] = []
        params: dict[str, Any] = {"limit": 500}
        while True:  # every page of the list
            page = await client.get("/api/jobs", params=params)
            assert page.status_code == 200, page.text[:500]
            listed += page.json()["jobs"]
            if page.json()["next_before_id"] is None:
                break
            params["before_id"] = page.json()["next_before_id"]
        answers = [(r.status_code, r.text) for r in [await client.get(p) for p in paths]]
        return {"jobs": listed}, answers


def settled(job: Job) -> bool:
    return job.state in TERMINAL or job.state is JobState.SCHEDULED and job.type == "poison"


def reasons(job: Job) -> list[str]:
    return [e.error for e in job.errors]


def readable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return bool(text) and "\x00" not in text


def check_bad(job: Job) -> None:
    """A bad job ended in a terminal state with a readable reason (or waits within the bounds)."""
    assert job.state in TERMINAL or job.state is JobState.SCHEDULED, f"job {job.id} is {job.state}"
    if job.state is JobState.SCHEDULED:
        assert job.run_at - datetime.now(UTC) < BOUND, f"job {job.id} scheduled at {job.run_at}"
    if job.state in (JobState.DEAD, JobState.CANCELLED):
        assert job.errors, f"job {job.id} ended {job.state} without a reason"
    if job.errors:
        assert all(readable(e.error) for e in job.errors), f"job {job.id}: unreadable reason {reasons(job)!r:.500}"
        assert all(e.traceback is None or readable(e.traceback) for e in job.errors)


def check(database_url: str, examples: int, ordinary: int = 12, workers: int = 2, shrink: bool = False) -> list[dict[str, int]]:
    """Run ``examples`` hypothesis rounds against ``database_url``; each round's counts.

    A failure raises with the falsifying plans; ``shrink`` makes hypothesis look for the smallest
    (slow: every try is a round with real workers)."""
    harness = Harness(database_url)
    counts: list[dict[str, int]] = []
    phases = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if shrink else [])

    @settings(max_examples=examples, deadline=None, database=None, phases=phases, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(plans())
    @example(KNOWN)
    def rounds(drawn: list[Plan]) -> None:
        counts.append(harness.round(drawn, ordinary, workers))

    try:
        rounds()
    finally:
        harness.close()
    return counts
