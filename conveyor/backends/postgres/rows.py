"""Reading job rows from PostgreSQL so that one value the driver cannot load never fails a read."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import pq

from conveyor.backends.base import Salvaged, Unreadable


def fetch_rows(cur: psycopg.Cursor[Any]) -> list[Any]:
    """A query's rows; if the driver cannot turn some value into Python (a time outside Python's
    years, JSON nested too deep), the rows value by value, the failing ones ``Unreadable``, so the
    reader can say what is wrong with that row and the others (and the transaction) go on."""
    try:
        return cur.fetchall()
    except (psycopg.DataError, ValueError, OverflowError, RecursionError):
        pass
    res = cur.pgresult
    if res is None:
        return []
    loaders = []
    for j in range(res.nfields):
        cls = cur.adapters.get_loader(res.ftype(j), pq.Format(res.fformat(j)))
        loaders.append(None if cls is None else cls(res.ftype(j), cur))
    rows: list[Any] = []
    for i in range(res.ntuples):
        row: list[Any] = []
        for j, loader in enumerate(loaders):
            raw = res.get_value(i, j)
            if raw is None:
                row.append(None)
                continue
            try:
                row.append(bytes(raw).decode() if loader is None else loader.load(raw))
            except (psycopg.Error, ValueError, OverflowError, RecursionError) as exc:
                name = (res.fname(j) or b"?").decode()
                row.append(Unreadable(f"{name} cannot be read ({type(exc).__name__}: {exc})"))
        rows.append(Salvaged(row))
    return rows
