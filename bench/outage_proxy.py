"""OutageProxy: a TCP proxy on 127.0.0.1 in front of PostgreSQL that can play a database outage.

Processes connect to the proxy's port instead of PostgreSQL's. ``outage(seconds)`` cuts every
open connection at once and refuses new ones (the port is closed) for that long, which is what
clients see while a server restarts, without disturbing anyone else using the real server.
The proxy runs its own asyncio loop on a background thread.

``cut_at_commit(trigger)`` plays the nastier failure: the connection breaks while a COMMIT is in
flight. On the first connection that sends ``trigger`` (say ``b"INSERT INTO shop_orders"``), the
next COMMIT is forwarded to the server (or, with ``forward=False``, swallowed) and the client's
side is cut at once: the client never learns whether its transaction committed.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time


class OutageProxy:
    """Forward 127.0.0.1:<port> to ``target``; ``outage()`` drops and refuses connections for a while.

    >>> proxy = OutageProxy(("127.0.0.1", 5432)); proxy.start()
    >>> proxy.outage(3.0)    # returns when the port accepts again
    """

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()
        self.outages: list[tuple[float, float]] = []  # wall-clock (start, end) of each outage
        self.dropped = 0  # connections cut by outages
        self.refused_since: float | None = None
        self.commit_cut: tuple[bytes, bool] | None = None  # (trigger, forward the COMMIT), armed by cut_at_commit
        self.commits_cut = 0
        self.thread = threading.Thread(target=self.loop.run_forever, name="outage-proxy", daemon=True)

    def start(self) -> OutageProxy:
        self.thread.start()
        self._call(self._open())
        return self

    def stop(self) -> None:
        self._call(self._close(cut=True))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()  # its selector and self-pipe, or they leak into whatever runs next

    def outage(self, seconds: float) -> None:
        """Cut every connection and refuse new ones for ``seconds``; blocks until service is back."""
        began = time.time()
        self._call(self._close(cut=True))
        time.sleep(seconds)
        self._call(self._open())
        self.outages.append((began, time.time()))

    def cut_at_commit(self, trigger: bytes, forward: bool = True) -> None:
        """Arm one cut: after a connection sends ``trigger``, cut it at its next COMMIT (sent on, or not)."""
        self.commit_cut = (trigger, forward)

    def url(self, base: str) -> str:
        """``base`` (a postgresql:// URL on the target) pointed at the proxy instead."""
        host, port = self.target
        return base.replace(f"{host}:{port}", f"127.0.0.1:{self.port}", 1)

    # -- on the proxy's loop -------------------------------------------------------------

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)  # type: ignore[arg-type]

    async def _open(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self, cut: bool) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if cut:
            for writer in list(self.links):
                self.dropped += 1
                writer.transport.abort()  # a reset, as when the server process dies
            self.links.clear()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, server_writer)
        self.links.update(pair)
        try:
            await asyncio.gather(self._upstream(client_reader, server_writer, client_writer), pump(server_reader, client_writer))
        finally:
            for writer in pair:
                self.links.discard(writer)
                writer.transport.abort()

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: asyncio.StreamWriter) -> None:
        """Client to server, watching for the armed trigger and the COMMIT after it."""
        triggered = cut = False
        try:
            while data := await reader.read(65536):
                armed = self.commit_cut
                if armed is not None and not triggered and armed[0] in data:
                    triggered = True
                elif armed is not None and triggered and b"COMMIT" in data:
                    self.commit_cut = None
                    self.commits_cut += 1
                    cut = True
                    if armed[1]:
                        writer.write(data)
                    client.transport.abort()  # before any answer can come back
                    await writer.drain()
                    writer.close()  # a clean end for the server: it reads the COMMIT (if sent), then end of input
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not cut:
                writer.transport.abort()


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
