"""Claims by a listening process (a worker) keep priority and FIFO order, on both backends.

On PostgreSQL such a process starts each claim just after the last job it claimed (claim
hints, conveyor/backends/postgres/hints.py), so that dead index entries left behind under a
pinned MVCC horizon are never walked; these tests pin down that nothing in front of the hint
is left behind: a later job of higher priority, a job that committed out of id order, a
delayed job that came due, a retried job.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import psycopg
import pytest

from conveyor import Conveyor, JobState
from conveyor.backends.base import ClaimParams, FinishParams, Lease
from conveyor.backends.postgres.backend import CLAIM_JOBS
from conveyor.backends.postgres.hints import NO_HINT
from conveyor.job import Job
from conveyor.testing import wait_until
from tests.contract.jobs import declare


@pytest.fixture
def heard(app: Conveyor) -> Iterator[threading.Event]:
    """An event set by every wake-up of this process's listener, once it is listening."""
    declare(app)
    event = threading.Event()
    stop = app.backend.listen(event.set)
    if app.backend.flavour == "postgres":
        wait_until(event.is_set, timeout=10)  # the listener fires once it has connected
    event.clear()
    yield event
    stop()


def claim(app: Conveyor, n: int) -> list[int]:
    return [j.id for j in app.backend.jobs_claim(ClaimParams("w1", ("default",), n, 30.0))]


def claim_jobs(app: Conveyor, n: int) -> list[Job]:
    return app.backend.jobs_claim(ClaimParams("w1", ("default",), n, 30.0))


def test_a_later_job_of_higher_priority_is_claimed_first(app: Conveyor, heard: threading.Event) -> None:
    a, b, c = (app.enqueue("plain", {"n": n}) for n in "abc")
    assert claim(app, 1) == [a]
    heard.clear()
    high = app.enqueue("plain", {"n": "high"}, priority=5)
    wait_until(heard.is_set, timeout=10)
    assert claim(app, 2) == [high, b]
    assert claim(app, 2) == [c]


def test_a_delayed_job_that_came_due_is_claimed_before_younger_ones(app: Conveyor, heard: threading.Event) -> None:
    delayed = app.enqueue("plain", {"n": "delayed"}, delay=0.3)
    a, b = (app.enqueue("plain", {"n": n}) for n in "ab")
    assert claim(app, 1) == [a]
    job = app.backend.job_get(delayed)
    assert job is not None
    wait_until(lambda: app.backend.now() >= job.run_at, timeout=10)
    assert claim(app, 2) == [delayed, b]


def test_a_retried_job_is_claimed_again_in_its_place(app: Conveyor, heard: threading.Event) -> None:
    a, b, c = (app.enqueue("plain", {"n": n}) for n in "abc")
    (first,) = claim_jobs(app, 1)
    assert claim(app, 1) == [b]
    heard.clear()
    won = app.backend.jobs_finish([FinishParams(Lease(first.id, first.lease_token), JobState.PENDING, error="boom", worker_id="w1")])
    assert won == [a]
    wait_until(heard.is_set, timeout=10)
    assert claim(app, 2) == [a, c]


def test_a_job_that_commits_out_of_id_order_is_still_claimed(pg_url: str) -> None:
    """PostgreSQL only: ids come from a sequence at insert, so a transaction that inserted first can
    commit last (SQLite has one writer at a time: ids always commit in order)."""
    app = Conveyor(pg_url, poll_interval=0.05)
    declare(app)
    heard = threading.Event()
    stop = app.backend.listen(heard.set)
    try:
        wait_until(heard.is_set, timeout=10)
        with app.transaction() as tx:
            early = app.enqueue("plain", {"n": "early"}, connection=tx)
            late = app.enqueue("plain", {"n": "late"})
            assert early < late
            assert claim(app, 5) == [late]
            heard.clear()
        wait_until(heard.is_set, timeout=10)
        assert claim(app, 5) == [early]
    finally:
        stop()
        app.close()


def claim_buffers(url: str, hint: tuple[int, int]) -> int:
    """Buffers the claim's reads of the claim index touch from ``hint`` on (EXPLAIN ANALYZE, rolled back)."""
    with psycopg.connect(url) as conn:
        (plan,) = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + CLAIM_JOBS,
            {"queues": ["default"], "hp": [hint[0]], "hid": [hint[1]], "n": 10, "worker": "probe", "lease": 30.0},
        ).fetchone()
        conn.rollback()
    nodes = [(plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]]
    touched = 0
    while nodes:
        node = nodes.pop()
        nodes += node.get("Plans", [])
        if node.get("Index Name") == "conveyor_jobs_claim":
            touched += int(node["Shared Hit Blocks"]) + int(node["Shared Read Blocks"])
    return touched


def test_under_a_pinned_horizon_the_hinted_claim_skips_the_dead_entries(pg_url: str) -> None:
    """A long REPEATABLE READ transaction keeps every claimed job's old row version alive; the
    claim from the start walks them all, the hinted claim starts after them."""
    app = Conveyor(pg_url, poll_interval=0.05)
    declare(app)
    heard = threading.Event()
    stop = app.backend.listen(heard.set)
    pin = psycopg.connect(pg_url)
    try:
        wait_until(heard.is_set, timeout=10)
        pin.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        pin.execute("SELECT count(*) FROM conveyor_jobs").fetchone()  # the snapshot that pins the horizon
        app.enqueue_many([("plain", {"n": str(i)}) for i in range(3000)])
        last = 0
        for _ in range(29):
            last = max(claim(app, 100))
        remaining = claim_jobs(app, 1)
        assert len(remaining) == 1 and remaining[0].id > last
        hinted = claim_buffers(pg_url, (0, remaining[0].id))
        full = claim_buffers(pg_url, NO_HINT)
        assert hinted * 10 < full, (hinted, full)
    finally:
        pin.rollback()
        pin.close()
        stop()
        app.close()
