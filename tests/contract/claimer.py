"""A separate claiming process for the concurrency test: claims until the queue is empty, prints ids."""

from __future__ import annotations

import sys

from conveyor.backends import from_url
from conveyor.backends.base import ClaimParams


def main(url: str, worker: str, batch: int) -> None:
    backend = from_url(url)
    claimed: list[int] = []
    while True:
        jobs = backend.jobs_claim(ClaimParams(worker, ("default",), batch, 300))
        if not jobs:
            break
        claimed.extend(j.id for j in jobs)
    backend.close()
    print(" ".join(map(str, claimed)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
