"""Eight claimers at once, as threads and as processes, over 5,000 jobs: each job claimed once."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter

from conveyor import Conveyor, JobState
from conveyor.backends import from_url
from conveyor.backends.base import ClaimParams

JOBS = 5000
CLAIMERS = 8


def fill(app: Conveyor) -> list[int]:
    @app.job()
    def noop(p: dict) -> None:  # type: ignore[type-arg]
        return None

    return app.enqueue_many([("noop", {"n": i}) for i in range(JOBS)])


def test_threads_claim_every_job_exactly_once(app: Conveyor, database_url: str) -> None:
    ids = fill(app)
    claimed: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(CLAIMERS)

    def claimer(n: int) -> None:
        backend = from_url(database_url)  # its own connections, like another process
        start.wait()
        mine: list[int] = []
        while jobs := backend.jobs_claim(ClaimParams(f"t{n}", ("default",), 7, 300)):
            mine.extend(j.id for j in jobs)
        backend.close()
        with lock:
            claimed.extend(mine)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(CLAIMERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(claimed)
    assert sorted(counts) == ids
    assert set(counts.values()) == {1}
    assert app.admin.jobs.count(state=JobState.RUNNING) == JOBS


def test_processes_claim_every_job_exactly_once(app: Conveyor, database_url: str) -> None:
    ids = fill(app)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.contract.claimer", database_url, f"p{n}", "10"], stdout=subprocess.PIPE, text=True
        )
        for n in range(CLAIMERS)
    ]
    claimed: list[int] = []
    per_process: list[int] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        mine = [int(x) for x in out.split()]
        per_process.append(len(mine))
        claimed.extend(mine)
    counts = Counter(claimed)
    assert sorted(counts) == ids
    assert set(counts.values()) == {1}
    assert sum(1 for n in per_process if n > 0) >= 2  # the claimers really competed
