"""Rate limits, concurrency limits, aging and type filters in the claim — both backends."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest

from conveyor import Conveyor, JobState
from conveyor.backends.base import ClaimLimit, ClaimParams, FinishParams, Lease, LimitKind
from conveyor.ratelimit import QueuePolicy, RateLimit, claim_limits
from conveyor.testing import wait_until


def declare(app: Conveyor) -> None:
    @app.job()
    def limited(p: dict) -> None:  # type: ignore[type-arg]
        return None

    @app.job()
    def other(p: dict) -> None:  # type: ignore[type-arg]
        return None

    @app.job(queue="invoices")
    def invoice(p: dict) -> None:  # type: ignore[type-arg]
        return None


def params(limit: int, *limits: ClaimLimit, worker: str = "w1", queues: tuple[str, ...] = ("default",), **extra: object) -> ClaimParams:
    return ClaimParams(worker, queues, limit, 30.0, tuple(limits), **extra)  # type: ignore[arg-type]


RATE5 = ClaimLimit("rate:type:limited", LimitKind.RATE, 5, 1.0, types=("limited",))
RUN2 = ClaimLimit("running:type:limited", LimitKind.RUNNING, 2, types=("limited",))


def test_a_rate_limit_leaves_jobs_over_it_pending_without_spending_attempts(app: Conveyor) -> None:
    declare(app)
    ids = app.enqueue_many([("limited", {"n": i}) for i in range(12)])
    first = app.backend.jobs_claim(params(100, RATE5))
    assert [j.id for j in first] == ids[:5]
    assert app.backend.jobs_claim(params(100, RATE5)) == []  # over the limit: nothing, not a claim-and-release
    waiting = app.admin.jobs.get(ids[5])
    assert waiting.state is JobState.PENDING and waiting.attempt == 0
    started = time.monotonic()
    second = wait_until(lambda: app.backend.jobs_claim(params(100, RATE5)), timeout=5)
    assert time.monotonic() - started > 0.5  # the window slid: one second after the first five
    assert [j.id for j in second] == ids[5:10]


def test_a_rate_limited_type_does_not_hold_back_other_types(app: Conveyor) -> None:
    declare(app)
    limited = app.enqueue_many([("limited", {"n": i}, {"priority": 10}) for i in range(10)])
    others = app.enqueue_many([("other", {"n": i}) for i in range(3)])
    claimed = app.backend.jobs_claim(params(100, RATE5))
    assert [j.id for j in claimed] == limited[:5] + others


def test_types_sharing_a_group_share_one_budget(app: Conveyor) -> None:
    declare(app)
    (group,) = claim_limits([("limited", RateLimit(3, 60.0, "smtp"), None), ("other", RateLimit(3, 60.0, "smtp"), None)], [])
    assert group.key == "rate:group:smtp" and set(group.types) == {"limited", "other"}
    app.enqueue_many([("limited", {}), ("other", {}), ("limited", {}), ("other", {}), ("limited", {})])
    assert len(app.backend.jobs_claim(params(100, group))) == 3
    assert app.backend.jobs_claim(params(100, group)) == []


def test_a_concurrency_limit_counts_running_jobs_of_every_worker(app: Conveyor) -> None:
    declare(app)
    ids = app.enqueue_many([("limited", {"n": i}) for i in range(5)])
    a = app.backend.jobs_claim(params(10, RUN2, worker="a"))
    assert [j.id for j in a] == ids[:2]
    assert app.backend.jobs_claim(params(10, RUN2, worker="b")) == []
    app.backend.jobs_finish([FinishParams(Lease(a[0].id, a[0].lease_token), JobState.COMPLETED)])
    b = app.backend.jobs_claim(params(10, RUN2, worker="b"))
    assert [j.id for j in b] == [ids[2]]
    assert app.admin.jobs.count(state="running") == 2


def test_a_queue_concurrency_limit(app: Conveyor) -> None:
    declare(app)
    app.enqueue_many([("invoice", {"n": i}) for i in range(4)])
    app.enqueue_many([("other", {"n": i}) for i in range(2)])
    (limit,) = claim_limits([], [QueuePolicy("invoices", concurrency=1)])
    claimed = app.backend.jobs_claim(params(10, limit, queues=("invoices", "default")))
    assert sorted(j.queue for j in claimed) == ["default", "default", "invoices"]
    assert app.backend.jobs_claim(params(10, limit, queues=("invoices", "default"))) == []


@pytest.mark.parametrize("kind", [LimitKind.RUNNING, LimitKind.RATE])
def test_concurrent_claimers_never_take_more_than_the_limit(app: Conveyor, kind: LimitKind) -> None:
    declare(app)
    app.enqueue_many([("limited", {"n": i}) for i in range(60)])
    limit = ClaimLimit(f"{kind}:type:limited", kind, 7, 60.0 if kind is LimitKind.RATE else 0.0, types=("limited",))
    barrier = threading.Barrier(8)
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        barrier.wait()
        for _ in range(5):
            jobs = app.backend.jobs_claim(params(3, limit, worker=f"w{n}"))
            with lock:
                claimed.extend(j.id for j in jobs)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == len(set(claimed)) == 7
    assert app.admin.jobs.count(state="running") == 7


def test_aging_serves_a_long_waiting_low_priority_job_first(app: Conveyor) -> None:
    declare(app)
    old = app.enqueue("other", {"old": True}, priority=-10, run_at=app.now() - timedelta(seconds=30))
    urgent = app.enqueue_many([("other", {"n": i}, {"priority": 20}) for i in range(5)])
    assert [j.id for j in app.backend.jobs_claim(params(1))] == [urgent[0]]  # strict priority by default
    assert [j.id for j in app.backend.jobs_claim(params(1, aging=(("default", 60.0),)))] == [urgent[1]]  # not waited long enough
    assert [j.id for j in app.backend.jobs_claim(params(1, aging=(("default", 10.0),)))] == [old]
    assert [j.id for j in app.backend.jobs_claim(params(5, aging=(("default", 10.0),)))] == urgent[2:]


def test_a_type_filter_claims_only_those_types(app: Conveyor) -> None:
    declare(app)
    app.enqueue_many([("other", {"n": 1}, {"priority": 5}), ("limited", {"n": 1}), ("limited", {"n": 2})])
    claimed = app.backend.jobs_claim(params(5, types=("limited",)))
    assert [j.type for j in claimed] == ["limited", "limited"]


def test_limit_declarations_are_checked() -> None:
    assert RateLimit.parse("120/m") == RateLimit(120, 60.0)
    assert RateLimit.parse("5/10s") == RateLimit(5, 10.0)
    assert RateLimit.parse("1000/hour").per == 3600.0
    from conveyor.errors import DeclarationError, OptionError

    for bad in ("0/s", "ten/s", "5/fortnight", "5"):
        with pytest.raises(OptionError):
            RateLimit.parse(bad)
    with pytest.raises(DeclarationError):
        claim_limits([("a", RateLimit(1, 1.0, "g"), None), ("b", RateLimit(2, 1.0, "g"), None)], [])
    app = Conveyor("sqlite:///unused.db")
    with pytest.raises(DeclarationError, match="rate_limit"):
        app.job(rate_limit="lots")(lambda p: None)
    with pytest.raises(DeclarationError, match="concurrency"):
        app.job(concurrency=0)(lambda p: None)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    from datetime import UTC, datetime

    from conveyor.outcome import Snooze
    from conveyor.ratelimit import Throttled, retry_after_seconds

    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Tue, 01 Jan 2030 12:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("Tue, 01 Jan 2030 11:00:00 GMT", now=now) == 0.0  # already past
    assert retry_after_seconds("soon", default=7) == 7.0
    assert retry_after_seconds(None, default=9) == 9.0
    assert retry_after_seconds(timedelta(minutes=2)) == 120.0
    snooze = Throttled("3")
    assert isinstance(snooze, Snooze) and snooze.seconds == 3.0
