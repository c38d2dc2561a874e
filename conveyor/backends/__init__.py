"""Storage backends, chosen by the database URL's scheme."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from conveyor.backends.base import Backend
from conveyor.errors import ConfigError


def from_url(
    url: str,
    db_timeout: float = 30.0,
    *,
    pool_size: int = 10,
    pooler: str | None = None,
    listen_url: str | None = None,
) -> Backend:
    """``sqlite:///path.db`` → SQLiteBackend; ``postgresql://…`` → PostgresBackend.

    ``db_timeout``: how long a PostgreSQL call waits for a connection before it fails with
    BackendUnavailable (a web app answers 503 sooner with a short one). PostgreSQL only:
    ``pool_size`` bounds the connections a process opens for its work (one more LISTENs);
    ``pooler="transaction"`` when ``url`` goes through PgBouncer in transaction mode, with
    ``listen_url`` a direct connection for LISTEN (see docs/operations.md).
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from conveyor.backends.sqlite.backend import SQLiteBackend

        return SQLiteBackend(url)
    if scheme in ("postgres", "postgresql"):
        from conveyor.backends.postgres.backend import PostgresBackend

        return PostgresBackend(url, pool_size=pool_size, timeout=db_timeout, pooler=pooler, listen_url=listen_url)
    raise ConfigError("database_url", f"unsupported scheme {scheme!r}: use sqlite:///path.db or postgresql://host/db")


def location(url: str) -> str:
    """The database a URL opens, for people: a SQLite file's absolute path, a server URL without its password.

    Logged by every worker at start and shown by ``conveyor status``, so a process that opened
    a different database than meant (a relative path from another directory) says so.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() == "sqlite":
        path = unquote(parts.path).removeprefix("/")
        return f"sqlite:///{os.path.abspath(path)}" if path else url
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(":" + parts.password + "@", ":***@", 1) if ":" + parts.password + "@" in netloc else netloc
    query = "&".join(
        f"{k}=***" if k.lower() == "password" else (f"{k}={v}" if v else k) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def sqlite_file(url: str) -> str | None:
    """The absolute path of the file a ``sqlite:`` URL opens; None for any other database."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        return None
    return os.path.abspath(unquote(parts.path).removeprefix("/"))
