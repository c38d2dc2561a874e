"""The one bridge from the asyncio worker to the synchronous backend: a dedicated thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Bridge:
    """Runs backend calls on their own thread so the event loop never blocks on I/O.

    One thread keeps one SQLite connection (writers queue anyway) and needs no locking;
    each call is a whole batch (a claim, a flush of completions), so its cost is per batch.
    """

    def __init__(self, name: str = "conveyor-db") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
