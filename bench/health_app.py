"""The health benchmark's worker app: the bench jobs, with every claim transaction timed.

``CONVEYOR_HEALTH_CLAIMS`` names a folder; each worker process appends one line per claim
(wall-clock end, seconds the claim took, rows claimed) to ``claims-<pid>.txt`` there. The
timing wraps the backend's own claim call on the worker's database thread, so it is the
claim's round trip as the worker sees it: queueing in the pool, the statement, the commit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from bench.app import declare
from conveyor import Conveyor

app = declare(Conveyor())


def timed(claim: Callable[[Any], list[Any]], folder: str) -> Callable[[Any], list[Any]]:
    out = open(os.path.join(folder, f"claims-{os.getpid()}.txt"), "a", buffering=1)  # noqa: SIM115 - lives as long as the worker

    def claim_rows(params: Any) -> list[Any]:
        start = time.perf_counter()
        rows = claim(params)
        out.write(f"{time.time():.3f} {time.perf_counter() - start:.6f} {len(rows)}\n")
        return rows

    return claim_rows


if folder := os.environ.get("CONVEYOR_HEALTH_CLAIMS"):
    backend = app.backend
    backend.jobs_claim_rows = timed(backend.jobs_claim_rows, folder)  # type: ignore[method-assign]
