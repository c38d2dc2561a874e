"""The database's clock as SQLite spells it: epoch seconds with fractions, in every statement.

``unixepoch('subsec')`` would be the plain spelling, but SQLite 3.40 (this machine's) silently
returns NULL for it; ``julianday('now')`` has kept sub-second precision for far longer. Within one
statement SQLite returns the same 'now' for every call, so one statement sees one moment.
"""

NOW = "((julianday('now') - 2440587.5) * 86400.0)"
