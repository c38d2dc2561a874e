"""The standing guard (issue 14): poison values among ordinary jobs never stall a worker or a queue.

A short run of bench/poison.py's property on both backends; ``python bench/faults.py --only
poison --examples N`` runs the long one.
"""

from __future__ import annotations

from bench.poison import check


def test_poison_values_never_stall_a_worker_or_cost_an_ordinary_job(database_url: str) -> None:
    rounds = check(database_url, examples=2)  # and the known poison values first
    assert len(rounds) == 3 and all(r["ordinary"] > 0 and r["poisoned"] > 0 for r in rounds)
