"""Workflows on both backends: chains from handlers, declared graphs, dependencies, fan-in, status."""

from __future__ import annotations

import threading
import time

import pytest

from conveyor import (
    After,
    Conveyor,
    JobContext,
    JobState,
    OptionError,
    WorkflowError,
    chain,
    group,
    step,
)
from conveyor.testing import running_worker, wait_until


class Journal:
    """What ran, in order, across worker threads."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self.lock = threading.Lock()

    def add(self, name: str) -> None:
        with self.lock:
            self.entries.append(name)

    def index(self, name: str) -> int:
        return self.entries.index(name)


def order_pipeline(app: Conveyor, journal: Journal, email_fails: bool = False, tolerate_email_failure: bool = False) -> None:
    @app.job(max_attempts=1)
    def process_order(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
        journal.add("process_order")
        ctx.enqueue("send_order_confirmation", p)

    @app.job(max_attempts=2, backoff=0.01)
    def send_order_confirmation(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
        journal.add("send_order_confirmation")
        try:
            if email_fails:
                raise ConnectionError("SMTP down")
        except ConnectionError:
            if not tolerate_email_failure:
                raise
            ctx.log.warning("confirmation email failed; continuing the workflow")
        ctx.enqueue("generate_invoice", p)
        ctx.enqueue("sync_inventory", p)

    @app.job()
    def generate_invoice(p: dict) -> None:  # type: ignore[type-arg]
        journal.add("generate_invoice")

    @app.job()
    def sync_inventory(p: dict) -> None:  # type: ignore[type-arg]
        journal.add("sync_inventory")


def test_chained_steps_run_in_order_in_one_workflow(app: Conveyor) -> None:
    journal = Journal()
    order_pipeline(app, journal)
    root = app.enqueue("process_order", {"order_id": "o1"})
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.count(state="completed") == 4)
    assert journal.index("process_order") < journal.index("send_order_confirmation")
    assert journal.index("send_order_confirmation") < journal.index("generate_invoice")
    assert journal.index("send_order_confirmation") < journal.index("sync_inventory")
    status = app.admin.workflows.status(str(root))  # a root job outside any workflow names one after itself
    assert status.state == "completed" and len(status.jobs) == 4
    (tree,) = status.tree()
    assert tree.job.type == "process_order"
    (confirmation,) = tree.children
    assert {c.job.type for c in confirmation.children} == {"generate_invoice", "sync_inventory"}
    assert all(c.job.parent_id == confirmation.job.id for c in confirmation.children)


def test_a_step_that_fails_for_good_stops_the_chain(app: Conveyor) -> None:
    journal = Journal()
    order_pipeline(app, journal, email_fails=True)
    app.enqueue("process_order", {"order_id": "o1"}, workflow_id="order-o1")
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.count(type="send_order_confirmation", state="dead") == 1)
        time.sleep(0.3)  # nothing may follow
    assert journal.entries == ["process_order", "send_order_confirmation", "send_order_confirmation"]
    assert app.admin.jobs.count(type=["generate_invoice", "sync_inventory"]) == 0
    assert app.admin.workflows.status("order-o1").state == "failed"


def test_conditional_chaining_tolerates_the_email_failure(app: Conveyor) -> None:
    journal = Journal()
    order_pipeline(app, journal, email_fails=True, tolerate_email_failure=True)
    app.enqueue("process_order", {"order_id": "o1"}, workflow_id="order-o1")
    with running_worker(app):
        wait_until(lambda: app.admin.workflows.status("order-o1").state == "completed")
    assert {"generate_invoice", "sync_inventory"} <= set(journal.entries)


def fan_in_jobs(app: Conveyor, journal: Journal) -> None:
    @app.job(max_attempts=1)
    def work(p: dict) -> int:  # type: ignore[type-arg]
        journal.add(f"work-{p['n']}")
        if p.get("fail"):
            raise RuntimeError(f"work {p['n']} failed")
        return int(p["n"]) * 10

    @app.job()
    def summarize(p: dict, ctx: JobContext) -> int:  # type: ignore[type-arg]
        journal.add("summarize")
        results = ctx.parent_results()
        return sum(r for r in results.values() if isinstance(r, int))


def test_declared_chain_group_and_fan_in_callback(app: Conveyor) -> None:
    journal = Journal()
    fan_in_jobs(app, journal)
    first = step("work", {"n": 1})
    callback = step("summarize", {})
    flow = chain(first, group(step("work", {"n": 2}), step("work", {"n": 3}), step("work", {"n": 4})), callback)
    handle = app.enqueue_workflow(flow, workflow_id="wf-1")
    assert len(handle.job_ids) == 5
    assert app.admin.jobs.get(handle.job_id(callback)).state is JobState.WAITING
    assert app.admin.jobs.get(handle.job_id(first)).state is JobState.PENDING
    with running_worker(app, concurrency=4):
        wait_until(lambda: app.admin.workflows.status("wf-1").state == "completed")
    assert journal.entries[0] == "work-1" and journal.entries[-1] == "summarize"
    assert app.admin.jobs.get(handle.job_id(callback)).result == 20 + 30 + 40  # the group's results, not the chain head's


def test_depends_on_waits_then_becomes_pending(app: Conveyor) -> None:
    journal = Journal()
    fan_in_jobs(app, journal)
    parent = app.enqueue("work", {"n": 1}, delay=0.5)
    child = app.enqueue("summarize", {}, depends_on=[parent])
    assert app.admin.jobs.get(child).state is JobState.WAITING
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.get(child).state is JobState.COMPLETED)
    assert journal.entries == ["work-1", "summarize"]
    done_parent_child = app.enqueue("summarize", {}, depends_on=[parent])
    assert app.admin.jobs.get(done_parent_child).state is JobState.PENDING  # parent already completed


def test_a_dead_parent_cancels_dependents_unless_the_edge_continues(app: Conveyor) -> None:
    journal = Journal()
    fan_in_jobs(app, journal)
    bad = app.enqueue("work", {"n": 1, "fail": True})
    cancelled = app.enqueue("summarize", {}, depends_on=[bad])
    grandchild = app.enqueue("summarize", {}, depends_on=[cancelled])
    continues = app.enqueue("summarize", {}, depends_on=[After(bad, on_failure="continue")])
    with running_worker(app):
        wait_until(lambda: app.admin.jobs.get(continues).state is JobState.COMPLETED)
        wait_until(lambda: app.admin.jobs.get(grandchild).state is JobState.CANCELLED)
    reason = app.admin.jobs.get(cancelled).errors[-1].error
    assert f"job {bad} it depends on did not complete" in reason
    assert app.admin.jobs.get(cancelled).state is JobState.CANCELLED
    assert journal.entries.count("summarize") == 1


def test_unknown_dependencies_and_cycles_are_refused_and_nothing_is_stored(app: Conveyor) -> None:
    journal = Journal()
    fan_in_jobs(app, journal)
    with pytest.raises(WorkflowError, match="unknown job ids \\[999999\\]"):
        app.enqueue("summarize", {}, depends_on=[999_999])
    with pytest.raises(OptionError):
        app.enqueue("summarize", {}, depends_on=["not-an-id"])
    a = step("work", {"n": 1})
    b = step("work", {"n": 2}, after=[a])
    a.after.append((b, "cancel"))
    with pytest.raises(WorkflowError, match="cycle"):
        app.enqueue_workflow(chain(a))
    good = step("work", {"n": 3})
    with pytest.raises(WorkflowError):
        app.enqueue_workflow(chain(good, step("summarize", {}, after=[123_456_789])))
    assert app.admin.jobs.count() == 0


def test_cancel_and_retry_a_workflow(app: Conveyor) -> None:
    journal = Journal()
    attempts = {"n": 0}

    @app.job(max_attempts=1)
    def flaky(p: dict) -> None:  # type: ignore[type-arg]
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise RuntimeError("first time fails")

    fan_in_jobs(app, journal)
    head = step("flaky", {})
    tail = step("summarize", {})
    handle = app.enqueue_workflow(chain(head, tail), workflow_id="wf-retry")
    with running_worker(app):
        wait_until(lambda: app.admin.workflows.status("wf-retry").state == "failed")
        assert app.admin.jobs.get(handle.job_id(tail)).state is JobState.CANCELLED
        assert app.admin.workflows.retry("wf-retry", actor="test") == 1
        wait_until(lambda: app.admin.workflows.status("wf-retry").state == "completed")
    other = app.enqueue_workflow(chain(step("work", {"n": 1}, delay=3600), step("summarize", {})), workflow_id="wf-cancel")
    assert app.admin.workflows.cancel("wf-cancel", actor="test") == 2
    assert app.admin.workflows.status("wf-cancel").state == "cancelled"
    assert {app.admin.jobs.get(i).state for i in other.job_ids} == {JobState.CANCELLED}


def test_fan_out_from_a_handler_with_a_fan_in_callback(app: Conveyor) -> None:
    done = Journal()

    @app.job()
    def fan_out(p: dict, ctx: JobContext) -> None:  # type: ignore[type-arg]
        kids = [ctx.enqueue("leaf", {"n": i}) for i in range(p["n"])]
        ctx.enqueue("total", {}, depends_on=kids)

    @app.job()
    async def leaf(p: dict) -> int:  # type: ignore[type-arg]
        return int(p["n"])

    @app.job()
    def total(p: dict, ctx: JobContext) -> int:  # type: ignore[type-arg]
        done.add("total")
        return sum(ctx.parent_results().values())

    root = app.enqueue("fan_out", {"n": 300})
    with running_worker(app, concurrency=50):
        wait_until(lambda: app.admin.jobs.count(type="total", state="completed") == 1, timeout=60)
    (callback,) = app.admin.jobs.list(type="total")
    assert callback.result == sum(range(300)) and done.entries == ["total"]
    assert app.admin.workflows.status(str(root)).state == "completed"


def test_parents_finishing_concurrently_in_two_workers_still_wake_the_child(app: Conveyor) -> None:
    @app.job()
    async def part(p: dict) -> None:  # type: ignore[type-arg]
        return None

    @app.job()
    def joined(p: dict) -> None:  # type: ignore[type-arg]
        return None

    parents = app.enqueue_many([("part", {"n": i}) for i in range(200)])
    child = app.enqueue("joined", {}, depends_on=parents)
    with running_worker(app, concurrency=20), running_worker(app, concurrency=20):
        wait_until(lambda: app.admin.jobs.get(child).state is JobState.COMPLETED, timeout=30)
