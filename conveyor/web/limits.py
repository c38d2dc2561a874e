"""Request size limits: an ASGI middleware that refuses oversized bodies (413) and headers (431).

Both HTTP apps (the admin API and the example shop) sit behind it, so a hostile client cannot
make a worker thread buffer megabytes of JSON or pages of headers before validation even runs.
A declared ``content-length`` is checked before the app sees the request; a chunked body is
counted as it arrives and cut off at the limit.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 1_048_576
MAX_HEADER_BYTES = 16_384


class SizeLimit:
    """Wrap an ASGI app: bodies over ``max_body_bytes`` get 413, headers over ``max_header_bytes`` 431.

    >>> api.add_middleware(SizeLimit, max_body_bytes=64 * 1024)
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if sum(len(name) + len(value) for name, value in headers) > self.max_header_bytes:
            await refuse(send, 431, f"request headers are over the limit of {self.max_header_bytes} bytes")
            return
        declared = next((value for name, value in headers if name == b"content-length"), None)
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await refuse(send, 400, "content-length is not a number")
                return
            if length > self.max_body_bytes:
                await refuse(send, 413, f"request body is {length} bytes, over the limit of {self.max_body_bytes}")
                return
        await self.app(scope, *self._counting(receive, send))

    def _counting(self, receive: Receive, send: Send) -> tuple[Receive, Send]:
        """A receive that cuts a body off at the limit (answering 413), and a send that then stays quiet."""
        received = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    refused = True
                    if not started:
                        await refuse(send, 413, f"request body is over the limit of {self.max_body_bytes} bytes")
                    return {"type": "http.disconnect"}  # the app stops reading; its answer is dropped below
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        return limited_receive, guarded_send


async def refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": "request too large" if status != 400 else "bad request", "detail": message}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})
