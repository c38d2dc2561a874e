"""Cost of one claim of 10 on the common path and on the flow-controlled path (rate limit,
concurrency limit, aging), 20,000 pending jobs, both backends: `python bench/flow_claim.py`."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conveyor import Conveyor
from conveyor.backends.base import ClaimLimit, ClaimParams, LimitKind

PG_URL = os.environ.get("CONVEYOR_TEST_PG", "postgresql://root@127.0.0.1:5432/test")
VARIANTS: dict[str, dict[str, object]] = {
    "common": {},
    "rate limit": {"limits": (ClaimLimit("rate:type:a", LimitKind.RATE, 10**6, 1.0, types=("a",)),)},
    "concurrency limit": {"limits": (ClaimLimit("running:type:a", LimitKind.RUNNING, 10**6, types=("a",)),)},
    "aging": {"aging": (("default", 60.0),)},
}


def measure(url: str, label: str, claims: int = 200) -> None:
    app = Conveyor(url)

    @app.job()
    def a(p: dict) -> None:  # type: ignore[type-arg]
        return None

    @app.job()
    def b(p: dict) -> None:  # type: ignore[type-arg]
        return None

    for _ in range(20):
        app.enqueue_many([("a" if i % 2 else "b", {"i": i}, {"priority": i % 3}) for i in range(1000)])
    for name, extra in VARIANTS.items():
        started = time.perf_counter()
        for _ in range(claims):
            app.backend.jobs_claim(ClaimParams("bench", ("default",), 10, 30.0, **extra))  # type: ignore[arg-type]
        print(f"{label:9} {name:18} {(time.perf_counter() - started) / claims * 1000:6.2f} ms per claim of 10")
    app.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        measure(f"sqlite:///{folder}/bench.db", "sqlite")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in PG_URL else "?"
        measure(f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}", "postgres")
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
