"""The operator surface, ``app.admin``: every action once on both backends, its state rules and its audit rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor import Conveyor, InvalidTransition, JobNotFound, JobState, ScheduleNotFound, Selection, WorkflowError
from conveyor.backends.base import ClaimParams, FinishParams, Lease, WorkerInfo
from conveyor.testing import wait_until
from tests.contract.jobs import declare


@pytest.fixture(autouse=True)
def _jobs(app: Conveyor) -> None:
    declare(app)


def finish(app: Conveyor, job_id: int | list[int], state: JobState) -> int:
    """Claim every due job of the ``default`` queue: end ``job_id``'s runs in ``state``, complete the rest."""
    chosen = set(job_id) if isinstance(job_id, list) else {job_id}
    claimed = app.backend.jobs_claim(ClaimParams("w", ("default",), 100, 30))
    for job in claimed:
        end = state if job.id in chosen else JobState.COMPLETED
        app.backend.jobs_finish([FinishParams(Lease(job.id, job.lease_token), end, error="boom" if end is JobState.DEAD else None)])
    assert chosen <= {j.id for j in claimed}
    return min(chosen)


def audit_rows(app: Conveyor) -> list[tuple[str, str, str, object]]:
    return [(e.actor, e.action, e.target, e.detail.get("count")) for e in reversed(app.admin.audit.list())]


def test_jobs_get_list_count(app: Conveyor) -> None:
    ids = app.enqueue_many([("plain", {"n": i}) for i in range(3)])
    email = app.enqueue("send_email", {"to": "a"})
    admin = app.admin
    assert admin.jobs.get(ids[0]).payload == {"n": 0}
    with pytest.raises(JobNotFound):
        admin.jobs.get(999_999)
    assert [j.id for j in admin.jobs.list(type="plain")] == ids[::-1]
    assert [j.id for j in admin.jobs.list(limit=2)] == [email, ids[2]]
    assert admin.jobs.count(queue="email") == 1 and admin.jobs.count() == 4


async def test_jobs_aget(app: Conveyor) -> None:
    job_id = app.enqueue("plain", {"n": 1})
    assert (await app.admin.jobs.aget(job_id)).id == job_id


def test_one_job_retry_cancel_purge_follow_one_rule_and_audit(app: Conveyor) -> None:
    jobs = app.admin.jobs
    cancelled = app.enqueue("plain", {"n": 1})
    assert jobs.cancel(cancelled, actor="ops:ann") == 1
    with pytest.raises(InvalidTransition):
        jobs.cancel(cancelled, actor="ops:ann")  # already finished
    assert jobs.retry(cancelled, actor="ops:ann") == 1  # retry: dead or cancelled, everywhere
    assert jobs.get(cancelled).state is JobState.PENDING
    with pytest.raises(InvalidTransition):
        jobs.purge(cancelled, actor="ops:ann")  # purge: finished jobs only
    dead = finish(app, cancelled, JobState.DEAD)
    assert jobs.purge(dead, actor="ops:ann") == 1
    with pytest.raises(JobNotFound):
        jobs.get(dead)
    assert audit_rows(app) == [
        ("ops:ann", "job.cancel", f"job:{cancelled}", None),
        ("ops:ann", "job.retry", f"job:{cancelled}", None),
        ("ops:ann", "job.purge", f"job:{dead}", None),
    ]


def test_an_empty_selection_selects_nothing(app: Conveyor) -> None:
    pending = app.enqueue_many([("plain", {"n": i}) for i in range(4)])
    dead = finish(app, pending[0], JobState.DEAD)
    jobs, letters = app.admin.jobs, app.admin.dead_letters
    assert jobs.cancel(Selection.of([]), actor="ops") == 0
    assert jobs.cancel(Selection.matching(), actor="ops") == 0
    assert jobs.cancel(Selection.matching(queue=[], type=None), actor="ops") == 0
    assert letters.purge(Selection.matching(ids=[], state="dead"), actor="ops") == 0  # not "every dead job"
    assert jobs.purge(Selection.of([]), actor="ops") == 0
    assert jobs.retry(Selection.of([]), actor="ops") == 0
    assert letters.retry(Selection.of([]), actor="ops") == 0 and letters.purge(Selection.matching(), actor="ops") == 0
    assert app.admin.dead_letters.count() == 1 and jobs.get(dead).state is JobState.DEAD
    assert jobs.count() == 4
    targets = [(e.action, e.target, e.detail["count"]) for e in reversed(app.admin.audit.list())]
    assert targets[:2] == [("jobs.cancel", "ids:(none)", 0), ("jobs.cancel", "filter:(none)", 0)]
    assert all(count == 0 for _, _, count in targets)


def test_acting_on_everything_is_explicit_and_audited(app: Conveyor) -> None:
    ids = app.enqueue_many([("plain", {"n": i}) for i in range(3)])
    app.enqueue("send_email", {"to": "x"}, delay=3600)
    assert app.admin.jobs.cancel(Selection.every(), actor="ops") == 4
    assert app.admin.jobs.retry(Selection.matching(ids=ids[:2]), actor="ops") == 2
    assert app.admin.jobs.purge(Selection.every(), actor="ops") == 2  # the two still cancelled; the retried two are pending
    (purge, retry, cancel) = app.admin.audit.list()[:3]
    assert (cancel.action, cancel.target, cancel.detail["count"]) == ("jobs.cancel", "all", 4)
    assert cancel.detail["states"] == ["waiting", "scheduled", "pending", "running"]  # a running job is stopped too (issue 16)
    assert (retry.target, retry.detail["count"]) == (f'filter:{{"ids": [{ids[0]}, {ids[1]}]}}', 2)
    assert (purge.target, purge.detail["count"]) == ("all", 2)


def test_bulk_retry_means_dead_and_cancelled_for_jobs_dead_only_for_dead_letters(app: Conveyor) -> None:
    a, b, c, d = app.enqueue_many([("plain", {"n": i}) for i in range(4)])
    app.admin.jobs.cancel(a, actor="t")
    finish(app, b, JobState.DEAD)
    app.admin.jobs.cancel(Selection.of([c, d]), actor="t")  # c, d were completed by finish(): nothing to cancel
    assert app.admin.dead_letters.retry(Selection.of([a, b]), actor="t") == 1
    assert app.admin.jobs.get(a).state is JobState.CANCELLED and app.admin.jobs.get(b).state is JobState.PENDING
    finish(app, b, JobState.DEAD)
    assert app.admin.jobs.retry(Selection.of([a, b]), actor="t") == 2


def test_dead_letters_list_count_retry_purge(app: Conveyor) -> None:
    ids = app.enqueue_many([("plain", {"n": i}) for i in range(3)])
    finish(app, ids, JobState.DEAD)
    letters = app.admin.dead_letters
    assert [j.id for j in letters.list()] == ids[::-1] and letters.count() == 3
    assert letters.retry(Selection.of([ids[0]]), actor="ops") == 1
    assert letters.purge(Selection.matching(type="plain"), actor="ops") == 2
    assert letters.count() == 0 and app.admin.jobs.get(ids[0]).state is JobState.PENDING
    assert audit_rows(app) == [("ops", "dlq.retry", f"ids:{ids[0]}", 1), ("ops", "dlq.purge", 'filter:{"type": "plain"}', 2)]


def test_schedules_list_pause_resume_trigger(app: Conveyor) -> None:
    app.cron("0 0 1 1 *", "plain", {"n": 1}, name="yearly")
    schedules = app.admin.schedules
    assert [s.name for s in schedules.list()] == ["yearly"]
    schedules.pause("yearly", actor="ops")
    assert schedules.get("yearly").paused
    schedules.resume("yearly", actor="ops")
    assert not schedules.get("yearly").paused
    job_id = schedules.trigger("yearly", actor="ops")
    assert app.admin.jobs.get(job_id).payload == {"n": 1}
    with pytest.raises(ScheduleNotFound):
        schedules.pause("nope", actor="ops")
    assert [(a, t) for _, a, t, _ in audit_rows(app)] == [("cron.pause", "cron:yearly"), ("cron.resume", "cron:yearly"), ("cron.trigger", "cron:yearly")]


def test_workers_list_and_forget(app: Conveyor) -> None:
    app.backend.workers_heartbeat(WorkerInfo("w-old", "host", 1, ("default",), 4))
    (info,) = app.admin.workers.list()
    assert info.id == "w-old" and info.heartbeat_at is not None
    assert app.admin.workers.forget(older_than=3600.0, actor="ops") == 0
    wait_until(lambda: app.now() > info.heartbeat_at, message="the database clock to pass the heartbeat")
    assert app.admin.workers.forget(older_than=0.0, actor="ops") == 1
    assert app.admin.workers.list() == []
    assert [(a, c) for _, a, _, c in audit_rows(app)] == [("workers.forget", 0), ("workers.forget", 1)]


def test_workflows_list_status_cancel_retry(app: Conveyor) -> None:
    app.enqueue_many([("plain", {"n": i}) for i in range(2)], workflow_id="wf-cancel")
    failed = app.enqueue("plain", {"n": 9}, workflow_id="wf-retry")
    finish(app, failed, JobState.DEAD)  # wf-cancel's jobs complete on the way
    workflows = app.admin.workflows
    assert {w.workflow_id for w in workflows.list()} == {"wf-cancel", "wf-retry"}
    assert workflows.status("wf-retry").state == "failed"
    assert workflows.retry("wf-retry", actor="ops") == 1
    assert workflows.status("wf-retry").state == "running"
    late = app.enqueue("plain", {"n": 3}, workflow_id="wf-late", delay=3600)
    assert workflows.cancel("wf-late", actor="ops") == 1 and app.admin.jobs.get(late).state is JobState.CANCELLED
    with pytest.raises(WorkflowError):
        workflows.status("nope")
    assert [(a, t, c) for _, a, t, c in audit_rows(app)] == [("workflow.retry", "workflow:wf-retry", 1), ("workflow.cancel", "workflow:wf-late", 1)]


async def test_stats_health_prune_and_the_audit_log(app: Conveyor) -> None:
    ids = app.enqueue_many([("plain", {"n": i}) for i in range(3)])
    finish(app, ids, JobState.COMPLETED)
    admin = app.admin
    assert admin.stats().total.counts["completed"] == 3
    assert (await admin.astats()).total.counts["completed"] == 3
    assert admin.health().status == "ok"
    policy = admin.prune_policy(keep_completed_per_type=1)
    assert admin.prunable(policy) == 2
    assert admin.prune(policy, actor="ops") == 2 and admin.jobs.count() == 1
    (entry,) = admin.audit.list()
    assert (entry.actor, entry.action, entry.detail["count"]) == ("ops", "jobs.prune", 2)
    assert entry.at > datetime.now(UTC) - timedelta(hours=1)
    assert admin.via("cli").audit.record("ops", "custom.thing", "x") > entry.id
    assert admin.audit.list(limit=1)[0].detail == {"via": "cli"}


def test_old_facade_methods_warn_and_delegate(app: Conveyor) -> None:
    ids = app.enqueue_many([("plain", {"n": i}) for i in range(3)])
    dead = finish(app, ids[2], JobState.DEAD)  # the other two complete
    late = app.enqueue("plain", {"n": 3}, delay=3600)
    with pytest.warns(DeprecationWarning, match=r"app.cancel_jobs\(\) is deprecated.*app.admin.jobs.cancel"):
        assert app.cancel_jobs(ids=[]) == 0  # once meant: every job
    with pytest.warns(DeprecationWarning):
        assert app.purge(ids=[]) == 0 and app.retry_jobs(ids=[]) == 0  # once meant: the whole DLQ
    assert app.admin.jobs.get(dead).state is JobState.DEAD and app.admin.jobs.get(late).state is JobState.SCHEDULED
    with pytest.warns(DeprecationWarning):
        assert app.count_jobs(state="completed") == 2
    with pytest.warns(DeprecationWarning):
        app.retry(dead)
    assert app.admin.jobs.get(dead).state is JobState.PENDING
    newest = app.admin.audit.list(limit=1)[0]
    assert (newest.actor, newest.action) == ("app", "job.retry")
