"""Storage backends, chosen by the database URL's scheme."""

from __future__ import annotations

from conveyor.backends.base import Backend
from conveyor.errors import ConfigError


def from_url(url: str) -> Backend:
    """``sqlite:///path.db`` → SQLiteBackend; ``postgresql://…`` → PostgresBackend."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from conveyor.backends.sqlite import SQLiteBackend

        return SQLiteBackend(url)
    if scheme in ("postgres", "postgresql"):
        from conveyor.backends.postgres import PostgresBackend

        return PostgresBackend(url)
    raise ConfigError("database_url", f"unsupported scheme {scheme!r}: use sqlite:///path.db or postgresql://host/db")
