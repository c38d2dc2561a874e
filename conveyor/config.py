"""Settings and their precedence: defaults, then conveyor.toml, then CONVEYOR_* variables, then code/CLI.

Only this module reads the environment. Every error names the key it is about.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigError

DEFAULT_URL = "sqlite:///conveyor.db"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a Conveyor process can be told; see docs/configuration.md for each setting."""

    database_url: str = DEFAULT_URL
    concurrency: int = 10
    queues: tuple[str, ...] = ()  # empty: every queue the app declares
    poll_interval: float = 0.5  # seconds between polls when no notification arrives
    lease_seconds: float = 15.0  # a run's lease; renewed every third of it
    rescue_interval: float = 5.0
    shutdown_grace: float = 30.0
    finish_batch: int = 100  # outcomes written back per transaction
    finish_delay: float = 0.005  # longest an outcome waits for its batch
    db_timeout: float = 30.0  # longest wait for a PostgreSQL connection before BackendUnavailable
    max_result_bytes: int = 65_536  # a larger result or ctx.once value fails the run (conveyor/result.py)
    db_pool_size: int = 10  # PostgreSQL: most connections a process opens for its work (plus one that LISTENs)
    db_pooler: str | None = None  # "transaction": database_url goes through PgBouncer in transaction mode
    db_listen_url: str | None = None  # PostgreSQL: a direct URL for LISTEN (with db_pooler; unset: workers poll)
    admin_token: str | None = None
    admin_read_token: str | None = None
    # -- monitoring and retention (see docs/operations.md) --
    admin_tokens: tuple[str, ...] = ()  # more named tokens, each "name:read:secret" or "name:write:secret"
    retain_completed: float | None = 86400.0  # seconds a completed job is kept after it finished
    retain_cancelled: float | None = 7 * 86400.0
    retain_completed_per_type: int | None = None  # also keep only the newest N completed jobs per type
    prune_interval: float = 60.0  # seconds between retention passes in each worker
    prune_batch: int = 1000  # rows deleted per short transaction
    vacuum_dead_rows: int | None = 20000  # PostgreSQL: the pruner VACUUMs a Conveyor table with this many dead rows (None: never)
    health_pending_age: float = 300.0  # a due job waiting longer than this makes health degraded
    health_dead_growth: int = 10  # more new dead jobs than this in the last 15 minutes: degraded
    worker_stale_after: float = 60.0  # a worker silent this long counts as gone
    # -- faults (see docs/faults.md) --
    max_memory_mb: int | None = None  # RLIMIT_DATA of each worker process: a greedy handler gets MemoryError

    @classmethod
    def load(cls, toml_path: str | os.PathLike[str] | None = "conveyor.toml", env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        settings = cls()
        path = Path(toml_path) if toml_path else None
        if path is not None and path.is_file():
            try:
                data = tomllib.loads(path.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(str(path), f"not valid TOML: {exc}") from None
            settings = settings.merged(data.get("conveyor", data), source=str(path))
        environ = os.environ if env is None else env
        from_env = {f.name: environ[f"CONVEYOR_{f.name.upper()}"] for f in fields(cls) if f"CONVEYOR_{f.name.upper()}" in environ}
        if "DATABASE_URL" in environ and "database_url" not in from_env and "database_url" not in overrides:
            from_env["database_url"] = environ["DATABASE_URL"]
        settings = settings.merged(from_env, source="environment")
        return settings.merged({k: v for k, v in overrides.items() if v is not None}, source="argument")

    def merged(self, values: dict[str, Any], source: str) -> Settings:
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, raw in values.items():
            if key not in known:
                raise ConfigError(key, f"unknown setting (from {source}); known: {', '.join(sorted(known))}")
            changes[key] = coerce(key, known[key].type, raw)
        return replace(self, **changes) if changes else self


def coerce(key: str, kind: Any, raw: Any) -> Any:
    text = str(kind)
    try:
        if "tuple" in text:
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(i.strip() for i in items if str(i).strip())
        if raw is None or ("None" in text and isinstance(raw, str) and raw.strip().lower() in ("none", "off")):
            return None  # an optional setting switched off from TOML or the environment
        if text.startswith("int"):
            value: Any = int(raw)
            if value < 1:
                raise ValueError("must be >= 1")
            return value
        if text.startswith("float"):
            value = float(raw)
            if value <= 0:
                raise ValueError("must be > 0")
            return value
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, f"invalid value {raw!r}: {exc}") from None
