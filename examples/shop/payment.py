"""PaymentGateway: a simulated card processor with test tokens, latency and outages.

``tok_visa`` and ``tok_mastercard`` are charged, ``tok_declined`` is declined, any other
token is refused as invalid. A configurable share of calls fails as a gateway outage, as real
processors sometimes do; the shop answers those with 503 and stores nothing.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from dataclasses import dataclass

ACCEPTED_TOKENS = frozenset({"tok_visa", "tok_mastercard"})


class PaymentError(Exception):
    """The card was not charged."""


class PaymentDeclined(PaymentError):
    """The card was declined."""


class GatewayUnavailable(PaymentError):
    """The payment gateway did not answer; nothing was charged."""


@dataclass(frozen=True, slots=True)
class Charge:
    id: str
    amount_cents: int
    reference: str


class PaymentGateway:
    """Charges and refunds, in memory; ``latency`` seconds per call."""

    def __init__(self, latency: float = 0.1, failure_rate: float = 0.0, rng: random.Random | None = None) -> None:
        self.latency = latency
        self.failure_rate = failure_rate
        self.rng = rng or random.Random()
        self.refunded: set[str] = set()
        self._lock = threading.Lock()

    def charge(self, token: str, amount_cents: int, reference: str) -> Charge:
        """Charge ``amount_cents`` to the card behind ``token``, or raise a PaymentError."""
        self._wait()
        with self._lock:
            outage = self.rng.random() < self.failure_rate
        if outage:
            raise GatewayUnavailable("payment gateway timed out; nothing was charged")
        if token == "tok_declined":
            raise PaymentDeclined("card declined")
        if token not in ACCEPTED_TOKENS:
            raise PaymentDeclined(f"invalid payment token {token!r}")
        return Charge("ch_" + secrets.token_hex(8), amount_cents, reference)

    def refund(self, charge: Charge) -> None:
        """Give a charge back (an order that could not be saved after its card was charged)."""
        self._wait()
        with self._lock:
            self.refunded.add(charge.id)

    def _wait(self) -> None:
        if self.latency > 0:
            time.sleep(self.latency)
