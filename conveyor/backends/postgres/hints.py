"""Claim hints: per queue, the key after which this process's next claim starts reading.

Under a pinned MVCC horizon (a long transaction anywhere in the database) every job claimed
since the pin began leaves a dead entry at the front of the claim index that no scan may
skip or mark: a claim from the start visits them all, and its cost grows with the queue's
rate times the pin's length. A claim that starts just after the last job this process
claimed never sees them. The hint is only a hint, never a reason to leave a job behind:

- an enqueue's NOTIFY carries the smallest (priority, id) it made ready in each queue
  (``ready_payload``), and a hint behind it is lowered (a higher priority, or an insert that
  committed out of id order);
- any other move back to pending (retry, rescue, release, staging of due jobs, workflow
  wake-ups, DLQ retry) notifies with an empty payload, which clears every hint;
- hints are used only while this process is LISTENing (a lost connection clears them), and a
  claim from the start runs at least every ``FULL_EVERY`` seconds, which bounds the delay of
  the rare job nothing announces (a claim that rolled back behind the hint).

See docs/discussions.md, "PostgreSQL under a pinned horizon".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

FULL_EVERY = 10.0
"""Seconds between claims that read each queue from its start, whatever the hints say."""
NO_HINT = (2**31, 0)
"""(priority, id) before every job: priorities are 32-bit, so a claim from here reads the whole queue."""

Key = tuple[int, int]


def ready_payload(queue: str, priority: int, job_id: int) -> str:
    """The NOTIFY payload announcing that ``queue`` has jobs ready from (priority, id) on."""
    return f"{queue}\t{priority}\t{job_id}"


def before(a: Key, b: Key) -> bool:
    """Whether key ``a`` comes before ``b`` in claim order (higher priority first, then lower id)."""
    return (-a[0], a[1]) < (-b[0], b[1])


class ClaimHints:
    """Thread-safe: the claim runs on the database thread, notifications arrive on the listener's."""

    def __init__(self) -> None:
        self._keys: dict[str, Key] = {}
        self._lock = threading.Lock()
        self._version = 0  # bumped whenever a hint moves back, so a claim in flight does not move it past
        self._full_at = 0.0
        self.listening = False

    def plan(self, queues: Sequence[str]) -> tuple[list[int], list[int], int]:
        """Per queue, the (priority, id) to read after, and the version to hand back to ``advance``."""
        now = time.monotonic()
        with self._lock:
            if not self.listening or now - self._full_at >= FULL_EVERY:
                self._full_at = now
                keys = [NO_HINT] * len(queues)
            else:
                keys = [self._keys.get(q, NO_HINT) for q in queues]
            return [k[0] for k in keys], [k[1] for k in keys], self._version

    def advance(self, claimed: Iterable[tuple[str, int, int]], version: int) -> None:
        """Move each queue's hint to the last job claimed in it (queue, priority, id), unless a
        notification moved a hint back while the claim ran (then keep what it said)."""
        last: dict[str, Key] = {}
        for queue, priority, job_id in claimed:
            if not (isinstance(queue, str) and isinstance(priority, int) and isinstance(job_id, int)):
                continue  # a row read value by value, with an unreadable value where a key was expected
            key = (priority, job_id)
            if queue not in last or before(last[queue], key):
                last[queue] = key
        with self._lock:
            if version == self._version and self.listening:
                self._keys.update(last)

    def heard(self, payload: str) -> None:
        """A NOTIFY: lower the named queue's hint to just before the announced key, or clear all."""
        parts = payload.rsplit("\t", 2)
        with self._lock:
            if len(parts) != 3 or not parts[1].lstrip("-").isdigit() or not parts[2].isdigit():
                self._clear()
                return
            queue, key = parts[0], (int(parts[1]), int(parts[2]) - 1)
            hint = self._keys.get(queue)
            if hint is not None and before(key, hint):
                self._keys[queue] = key
                self._version += 1

    def connected(self, listening: bool) -> None:
        """The LISTEN connection came up (nothing heard before it counts) or went down."""
        with self._lock:
            self.listening = listening
            self._clear()

    def _clear(self) -> None:
        self._keys.clear()
        self._version += 1
