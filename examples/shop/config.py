"""ShopConfig: every knob of the shop, read from the environment in one place.

Failure injection defaults to an ordinary day (10% of emails and 5% of invoices fail on their
first try), so the demo shows retries and recoveries on the dashboard.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = "examples/shop/data"


@dataclass(frozen=True, slots=True)
class ShopConfig:
    """Where the shop keeps things and how its simulated world behaves."""

    database_url: str = f"sqlite:///{DEFAULT_DATA_DIR}/shop.db"
    data_dir: Path = Path(DEFAULT_DATA_DIR)  # invoices/ and reports/ live here
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    mail_from: str = "Conveyor Shop <orders@shop.example>"
    mailbox: Path | None = None  # the demo SMTP server's JSON-lines file; enables GET /demo/mail
    email_failure_rate: float = 0.10  # of first attempts
    pdf_failure_rate: float = 0.05  # of first attempts
    payment_latency: float = 0.1  # seconds per charge
    payment_failure_rate: float = 0.0  # gateway outages (answered 503, nothing stored)
    followup_delay: float = 24 * 3600.0
    retry_base: float = 1.0  # first backoff of the shop's jobs, doubling per attempt
    webhook_attempts: int = 8
    webhook_timeout: float = 10.0
    webhook_allow_private: bool = False  # loopback receivers in the demo and tests only
    webhook_max_endpoints: int = 10  # POST /webhooks answers 409 past this many
    webhook_disable_after: int = 10  # failed delivery attempts in a row that disable an endpoint
    cleanup_after: float = 7 * 24 * 3600.0  # completed jobs older than this are purged at 3 AM

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ShopConfig:
        """Defaults, then ``DATABASE_URL`` and ``SHOP_*`` variables (``SHOP_SMTP_PORT``...), then overrides."""
        environ = os.environ if env is None else env
        values: dict[str, Any] = {}
        data_dir = environ.get("SHOP_DATA_DIR")
        if data_dir:
            values["data_dir"] = Path(data_dir)
            values["database_url"] = f"sqlite:///{Path(data_dir) / 'shop.db'}"
        if environ.get("DATABASE_URL"):
            values["database_url"] = environ["DATABASE_URL"]
        for f in fields(cls):
            raw = environ.get(f"SHOP_{f.name.upper()}")
            if raw is None or f.name == "data_dir":
                continue
            values[f.name] = parse(f.name, str(f.type), raw)
        values.update(overrides)
        return cls(**values)

    @property
    def invoice_dir(self) -> Path:
        return self.data_dir / "invoices"

    @property
    def report_dir(self) -> Path:
        return self.data_dir / "reports"


def parse(name: str, kind: str, raw: str) -> Any:
    """One environment value as its field's type; the error names the variable."""
    try:
        if kind == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError("expected 1/0, true/false or yes/no")
            return raw.lower() in ("1", "true", "yes")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("Path"):
            return Path(raw) if raw else None
        return raw
    except ValueError as exc:
        raise ValueError(f"SHOP_{name.upper()}={raw!r}: {exc}") from None
