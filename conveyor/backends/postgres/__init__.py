"""The PostgreSQL backend: one module per concern, mirrored in the other database's package."""

from conveyor.backends.postgres.backend import PostgresBackend

__all__ = ["PostgresBackend"]
