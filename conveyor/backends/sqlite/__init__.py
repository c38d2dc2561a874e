"""The SQLite backend: one module per concern, mirrored in the other database's package."""

from conveyor.backends.sqlite.backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
