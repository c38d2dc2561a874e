"""Storage backends, chosen by the database URL's scheme."""

from __future__ import annotations

from conveyor.backends.base import Backend
from conveyor.errors import ConfigError


def from_url(url: str, db_timeout: float = 30.0) -> Backend:
    """``sqlite:///path.db`` → SQLiteBackend; ``postgresql://…`` → PostgresBackend.

    ``db_timeout``: how long a PostgreSQL call waits for a connection before it fails with
    BackendUnavailable (a web app answers 503 sooner with a short one).
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from conveyor.backends.sqlite.backend import SQLiteBackend

        return SQLiteBackend(url)
    if scheme in ("postgres", "postgresql"):
        from conveyor.backends.postgres.backend import PostgresBackend

        return PostgresBackend(url, timeout=db_timeout)
    raise ConfigError("database_url", f"unsupported scheme {scheme!r}: use sqlite:///path.db or postgresql://host/db")
