"""Webhooks in the Standard Webhooks scheme: signing, verification against replays, and delivery.

A message is signed as ``HMAC-SHA256(key, f"{id}.{timestamp}.{body}")`` and sent with the
headers ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64>``; secrets
look like ``whsec_<base64 key>``. Receivers in any language can verify it with the scheme's
own libraries. Delivery is one HTTP POST; retries with backoff belong to the job that calls
it, so a delivery that keeps failing ends in the dead-letter queue like any other job.

>>> secret = new_secret()
>>> headers = sign_headers(secret, "msg_1", b'{"type":"order.completed"}')
>>> verify(secret, headers, b'{"type":"order.completed"}')
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx

from conveyor.errors import WebhookDeliveryError, WebhookError, WebhookHostUnresolved, WebhookURLRefused, WebhookVerificationError

__all__ = [
    "DEFAULT_TOLERANCE",
    "Delivery",
    "ReplayGuard",
    "WebhookDeliveryError",
    "WebhookError",
    "WebhookHostUnresolved",
    "WebhookURLRefused",
    "WebhookVerificationError",
    "check_url",
    "deliver",
    "encode_body",
    "new_message_id",
    "new_secret",
    "sign",
    "sign_headers",
    "verify",
]

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300.0
"""Seconds a message's timestamp may differ from the receiver's clock (the scheme's five minutes)."""

Resolver = Callable[[str, int], list[str]]


def new_secret(size: int = 24) -> str:
    """A fresh signing secret, ``whsec_`` and the base64 of ``size`` random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(size)).decode()


def new_message_id() -> str:
    """A unique ``webhook-id``; keep the same one across retries of one message."""
    return "msg_" + secrets.token_hex(12)


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret (a secret without the prefix is read as base64 too)."""
    text = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise WebhookError("webhook secret is not base64 (expected whsec_<base64>)") from None
    if not key:
        raise WebhookError("webhook secret is empty")
    return key


def encode_body(payload: Any) -> bytes:
    """The exact bytes that are signed and sent: bytes as they are, anything else as compact JSON."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_headers(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``, timestamped now unless told otherwise."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sign(secret, msg_id, ts, body)}


class ReplayGuard:
    """Remembers the ids of messages a receiver accepted, for as long as their timestamps are valid.

    A replayed message older than the tolerance already fails ``verify``; this catches the
    replays inside the window. Call ``remember`` only once the message was processed, so the
    sender's retry of a message the receiver failed on is still accepted.
    """

    def __init__(self, tolerance: float = DEFAULT_TOLERANCE) -> None:
        self.tolerance = tolerance
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def seen(self, msg_id: str) -> bool:
        with self._lock:
            return msg_id in self._seen

    def remember(self, msg_id: str, timestamp: float, now: float | None = None) -> None:
        current = time.time() if now is None else now
        with self._lock:
            self._seen[msg_id] = float(timestamp)
            horizon = current - 2 * self.tolerance
            for old in [k for k, ts in self._seen.items() if ts < horizon]:
                del self._seen[old]

    def __len__(self) -> int:
        return len(self._seen)


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
    guard: ReplayGuard | None = None,
) -> None:
    """Check a received message; raise ``WebhookVerificationError`` saying why it is refused.

    The timestamp must be within ``tolerance`` seconds of ``now`` (either way), one of the
    ``v1`` signatures must match (constant-time), and, with a ``guard``, the id must be new.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not an integer: {stamp!r}") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(f"webhook-timestamp {timestamp} is more than {tolerance:g} s from now")
    expected = sign(secret, msg_id, timestamp, body).partition(",")[2].encode()
    offered = [part.partition(",") for part in signatures.split()]
    if not any(version == "v1" and hmac.compare_digest(expected, value.encode()) for version, _, value in offered):
        raise WebhookVerificationError("no matching v1 signature")
    if guard is not None and guard.seen(msg_id):
        raise WebhookVerificationError(f"message {msg_id} was already received (replay)")


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise WebhookHostUnresolved(f"//{host}", f"cannot resolve host: {exc}") from None
    return [str(info[4][0]) for info in infos]


def check_url(url: str, *, allow_private: bool = False, resolve: Resolver = system_resolver) -> str:
    """Refuse URLs a webhook must not reach: not http(s), or resolving to a non-public address.

    Private, loopback, link-local, multicast and reserved addresses are refused unless
    ``allow_private`` (a local demo or test), so a registered URL cannot be used to probe
    the network the sender runs in. Checked at registration and again at every delivery,
    because a name may resolve differently later; a delivery then connects to the very
    address it checked (see ``deliver``).
    """
    vet(url, allow_private=allow_private, resolve=resolve)
    return url


@dataclass(frozen=True, slots=True)
class Vetted:
    """A webhook URL that passed the checks, and the addresses its host was checked at."""

    parts: SplitResult
    host: str
    port: int
    addresses: tuple[str, ...]

    def pinned_url(self, address: str) -> str:
        """The URL with a checked address in place of the host name."""
        literal = f"[{address}]" if ":" in address else address
        netloc = literal if self.parts.port is None else f"{literal}:{self.port}"
        return urlunsplit((self.parts.scheme, netloc, self.parts.path or "/", self.parts.query, ""))


def vet(url: str, *, allow_private: bool = False, resolve: Resolver = system_resolver) -> Vetted:
    """``check_url``'s checks; the host's checked addresses, to connect to."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise WebhookURLRefused(url, "scheme must be http or https")
    host = parts.hostname
    if not host:
        raise WebhookURLRefused(url, "no host")
    if parts.username or parts.password:
        raise WebhookURLRefused(url, "credentials in the URL are not allowed")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookURLRefused(url, "invalid port") from None
    try:
        addresses = [host] if is_ip(host) else resolve(host, port)
    except WebhookURLRefused as exc:
        raise type(exc)(url, exc.reason) from None
    if not addresses:
        raise WebhookURLRefused(url, "host resolves to no address")
    if not allow_private:
        for text in addresses:
            given = ipaddress.ip_address(text.split("%")[0])
            for address in (given, *embedded_ipv4(given)):
                if not address.is_global or address.is_multicast:
                    raise WebhookURLRefused(url, f"{host} is a private, loopback or reserved address ({address})")
    return Vetted(parts, host, port, tuple(addresses))


NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix: the IPv4 address is the last 32 bits
NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215's local-use prefix: a translator inside some network
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d, still routed as IPv4 by some stacks


def embedded_ipv4(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The IPv4 addresses an IPv6 address reaches through a translator or tunnel, to be checked as plain ones.

    ``::ffff:10.0.0.1`` (mapped), ``64:ff9b::a00:1`` (NAT64), ``2002:a00:1::`` (6to4), ``::a00:1``
    (IPv4-compatible) and Teredo all lead to 10.0.0.1 on a network that translates them, though
    the IPv6 address itself looks global. A local-use NAT64 prefix may embed the address at any
    of several offsets, so the whole prefix counts as private.
    """
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in NAT64 or address in IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address in NAT64_LOCAL:
        found.append(ipaddress.IPv4Address("0.0.0.0"))  # reserved, so refused: where it leads is not knowable here
    return found


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery the receiver accepted (2xx)."""

    url: str
    msg_id: str
    status_code: int
    duration: float
    response: str  # the first 1,000 characters of the answer, for the job's result


def deliver(
    url: str,
    secret: str,
    payload: Any,
    *,
    msg_id: str,
    timestamp: int | None = None,
    timeout: float = 10.0,
    allow_private: bool = False,
    client: httpx.Client | None = None,
    headers: Mapping[str, str] | None = None,
    resolve: Resolver = system_resolver,
) -> Delivery:
    """POST one signed message; return the Delivery on 2xx, raise ``WebhookDeliveryError`` otherwise.

    The host name is resolved and checked once, and the request goes to that address (with the
    name in ``Host`` and, over TLS, in SNI and the certificate check), so the name cannot be
    rebound to a private address between the check and the connection. Redirects are not
    followed (they could lead to a refused address). A 429 or 503 answer's
    ``Retry-After`` is kept on the error (``retry_after``, seconds); raised out of a job, it makes
    the retry wait at least that long, the attempt counted.

    >>> deliver(endpoint.url, endpoint.secret, {"type": "order.completed", "data": {...}}, msg_id=event_id)
    """
    try:
        target = vet(url, allow_private=allow_private, resolve=resolve)
    except WebhookHostUnresolved as exc:  # DNS may be back on the next attempt
        raise WebhookDeliveryError(url, exc.reason) from None
    body = encode_body(payload)
    sent = {"content-type": "application/json", "user-agent": "conveyor-webhooks/1", **(headers or {})}
    sent.update(sign_headers(secret, msg_id, body, timestamp))
    sent["host"] = target.parts.netloc  # the name, as the receiver expects it; the connection goes to the checked address
    tls = {"sni_hostname": target.host} if target.parts.scheme == "https" else {}  # the certificate is checked for the name
    started = time.monotonic()
    own = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=False)
    try:
        response = post_to_first(http, [target.pinned_url(a) for a in target.addresses], body, sent, timeout, tls)
    except httpx.HTTPError as exc:
        raise WebhookDeliveryError(url, f"{type(exc).__name__}: {exc}") from exc
    finally:
        if own:
            http.close()
    if not 200 <= response.status_code < 300:
        raise WebhookDeliveryError(
            url, f"HTTP {response.status_code}", status_code=response.status_code, retry_after=retry_after(response)
        )
    return Delivery(url, msg_id, response.status_code, time.monotonic() - started, response.text[:1000])


def post_to_first(
    http: httpx.Client, urls: list[str], body: bytes, headers: dict[str, str], timeout: float, extensions: dict[str, Any]
) -> httpx.Response:
    """POST to the first address that takes the connection (a name may have IPv6 and IPv4 ones)."""
    for url in urls[:-1]:
        try:
            return http.post(url, content=body, headers=headers, timeout=timeout, extensions=extensions)
        except httpx.ConnectError:
            continue
    return http.post(urls[-1], content=body, headers=headers, timeout=timeout, extensions=extensions)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
