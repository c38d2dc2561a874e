"""The flow-controlled claim's choice of jobs, shared by both backends (their SQL stays in them).

Inside the claim transaction a backend counts each limit's budget, then this module walks the
due jobs in claim order (aged first when a queue has aging, else priority then FIFO) and
takes those every covering limit still has room for. A job over a limit is not touched: it
stays pending, spends no attempt, and the claim simply returns fewer jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from conveyor.backends.base import ClaimLimit, ClaimParams, LimitKind


@dataclass(frozen=True, slots=True)
class Candidate:
    """A due job the claim may take."""

    id: int
    type: str
    queue: str
    priority: int
    run_at: float  # epoch seconds: since when it has been due, for aging


@dataclass(frozen=True, slots=True)
class Exclusion:
    """What a candidate query must leave out: spent limits' types and queues, rows already seen."""

    types_out: frozenset[str]
    seen: frozenset[int]
    types_in: tuple[str, ...] = ()


Page = Callable[[str, int, Exclusion], list[Candidate]]
"""Due jobs of one queue in priority-then-FIFO order: (queue, n, exclusion) → up to n rows."""
Levels = Callable[[str], list[int]]
"""The distinct priorities of a queue's due jobs."""
Heads = Callable[[str, int, int, Exclusion], list[Candidate]]
"""The first n due jobs (FIFO) of one priority level of a queue: (queue, priority, n, exclusion)."""


@dataclass(frozen=True, slots=True)
class Source:
    page: Page
    levels: Levels
    heads: Heads


def choose(params: ClaimParams, budgets: dict[str, int], now: float, source: Source) -> list[Candidate]:
    """Up to ``params.limit`` jobs within every limit's budget (``budgets`` is spent as it goes).

    Re-queries only when a limit ran out during the walk (its jobs are then excluded), so the
    number of queries is bounded by the number of limits.
    """
    limits = params.limits
    aging = dict(params.aging)
    picked: list[Candidate] = []
    seen: set[int] = set()
    for _ in range(len(limits) + 2):
        need = params.limit - len(picked)
        types_out = frozenset(t for lim in limits if budgets[lim.key] <= 0 and lim.queue is None for t in lim.types)
        queues_out = {lim.queue for lim in limits if budgets[lim.key] <= 0 and lim.queue is not None}
        queues = [q for q in params.queues if q not in queues_out]
        if need <= 0 or not queues:
            break
        exclusion = Exclusion(types_out, frozenset(seen), params.types)
        rows = fetch(queues, need, exclusion, aging, now, source)
        ran_out = False
        for row in rows:
            seen.add(row.id)
            if len(picked) >= params.limit:
                break
            covering = [lim for lim in limits if lim.covers(row.type, row.queue)]
            if all(budgets[lim.key] > 0 for lim in covering):
                picked.append(row)
                for lim in covering:
                    budgets[lim.key] -= 1
                    ran_out = ran_out or budgets[lim.key] == 0
        if not ran_out or len(rows) < need:
            break
    return picked


def fetch(queues: Sequence[str], n: int, exclusion: Exclusion, aging: dict[str, float], now: float, source: Source) -> list[Candidate]:
    """The next ``n`` candidates over ``queues``: aged ones first (oldest first), then by priority and FIFO."""
    aged: dict[int, Candidate] = {}
    normal: list[Candidate] = []
    for queue in queues:
        if queue in aging:
            cutoff = now - aging[queue]
            for level in source.levels(queue):
                for row in source.heads(queue, level, n, exclusion):
                    if row.run_at <= cutoff:
                        aged[row.id] = row
        normal.extend(source.page(queue, n, exclusion))
    ordered = sorted(aged.values(), key=lambda c: (c.run_at, c.id))
    ordered += sorted((c for c in normal if c.id not in aged), key=lambda c: (-c.priority, c.id))
    return ordered[:n]


def rate_starts(limits: Sequence[ClaimLimit], claimed: Sequence[tuple[str, str]]) -> list[str]:
    """One rate-limit key per (claimed job, rate limit covering it): the starts to log."""
    return [lim.key for job_type, queue in claimed for lim in limits if lim.kind is LimitKind.RATE and lim.covers(job_type, queue)]
