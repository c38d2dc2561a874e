"""Faults: injected failures of a first attempt, so the demo shows retries and recoveries."""

from __future__ import annotations

import random
import threading


class InjectedFault(Exception):
    """A failure the shop made up on purpose (SHOP_EMAIL_FAILURE_RATE, SHOP_PDF_FAILURE_RATE)."""


class Faults:
    """Fails a first attempt with the configured probability per kind; later attempts always pass."""

    def __init__(self, rates: dict[str, float], rng: random.Random | None = None) -> None:
        self.rates = rates
        self.rng = rng or random.Random()
        self._lock = threading.Lock()

    def check(self, kind: str, attempt: int, what: str) -> None:
        if attempt != 1:
            return
        with self._lock:
            hit = self.rng.random() < self.rates.get(kind, 0.0)
        if hit:
            raise InjectedFault(f"injected {kind} failure: {what}")
