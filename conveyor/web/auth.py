"""Who may look and who may steer: bearer tokens, the dashboard's session cookie, and CSRF.

Every admin endpoint needs a token: read-only tokens see, read-write tokens also retry, cancel
and purge. Mounted in a host app, ``create_app(app, resolver=...)`` lets the host decide instead:
the resolver reads the request (the host's own session or user) and returns an ``Access`` naming
the caller and whether it may act, or None; bearer tokens, when configured, still work beside it. The dashboard logs in once with a token through a form and then carries a signed,
HttpOnly session cookie (the token never appears in a URL); its mutating forms also carry a
CSRF value derived from that session. Signatures use the token's own secret, so removing a
token from the configuration ends its sessions too. Each session is also a row in the database
(``conveyor_sessions``): a cookie counts only while its row is there, so logging out ends the
session for whoever holds a copy of the cookie, in every web process. Failed logins are counted
per client address (``LoginThrottle``): past a few, that address is refused for a while, and
each failure is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from fastapi import HTTPException, Request, status

from conveyor.config import Settings
from conveyor.errors import ConfigError

SESSION_COOKIE = "conveyor_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
SESSION_SECONDS = 12 * 3600

log = logging.getLogger("conveyor.web")


class Role(StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class Token:
    """A named secret; its name is what the audit log records as the actor."""

    name: str
    secret: str
    role: Role

    def allows(self, role: Role) -> bool:
        return self.role is Role.WRITE or role is Role.READ


@dataclass(frozen=True, slots=True)
class Identity:
    """A request's authenticated caller, and how it proved it."""

    token: Token
    session: str | None = None  # set when authenticated by the dashboard's cookie: the cookie's value
    session_id: str | None = None  # the id of that session's row

    @property
    def name(self) -> str:
        return self.token.name


@dataclass(frozen=True, slots=True)
class Access:
    """What a host app's resolver decided about a request: who the caller is (the audit log's actor) and whether it may act."""

    name: str
    write: bool = False


Resolver = Callable[[Request], "Access | None"]
"""Decides a request's caller from the host app's own authentication; None: not signed in."""


class Tokens:
    """The configured tokens; lookups compare against every secret in constant time."""

    def __init__(self, tokens: Iterable[Token]) -> None:
        self.tokens = tuple(tokens)
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ConfigError("admin_tokens", "token names must be unique")
        if any(len(t.secret) < 8 for t in self.tokens):
            raise ConfigError("admin_tokens", "a token must be at least 8 characters long")

    @classmethod
    def from_settings(cls, settings: Settings) -> Tokens:
        """``admin_token`` (read-write, named "admin"), ``admin_read_token`` ("read") and ``admin_tokens``."""
        found: list[Token] = []
        if settings.admin_token:
            found.append(Token("admin", settings.admin_token, Role.WRITE))
        if settings.admin_read_token:
            found.append(Token("read", settings.admin_read_token, Role.READ))
        for entry in settings.admin_tokens:
            name, _, rest = entry.partition(":")
            role, _, secret = rest.partition(":")
            if not name or role not in (Role.READ, Role.WRITE) or not secret:
                raise ConfigError("admin_tokens", "each entry must be NAME:read:SECRET or NAME:write:SECRET")
            found.append(Token(name, secret, Role(role)))
        return cls(found)

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def match(self, secret: str) -> Token | None:
        """The token with this secret; every candidate is compared so timing reveals nothing."""
        given = secret.encode()
        found: Token | None = None
        for token in self.tokens:
            if hmac.compare_digest(given, token.secret.encode()):
                found = token
        return found

    def named(self, name: str) -> Token | None:
        return next((t for t in self.tokens if t.name == name), None)

    # -- the dashboard's session --------------------------------------------------------

    def session_for(self, token: Token, now: float | None = None) -> tuple[str, str]:
        """A new session's cookie value and its id (the row ``conveyor_sessions`` must hold for it)."""
        expires = int((now or time.time()) + SESSION_SECONDS)
        nonce = secrets.token_hex(16)
        body = f"{token.name}.{expires}.{nonce}"
        return f"{body}.{sign(token, 'session', body)}", nonce

    def from_session(self, value: str, now: float | None = None) -> tuple[Token, str] | None:
        """The token a cookie was signed for and its session id, if the signature holds and it has not expired."""
        parts = value.rsplit(".", 3)
        if len(parts) != 4:
            return None
        name, expires, nonce, signature = parts
        token = self.named(name)
        if token is None or not expires.isdigit():
            return None
        if not hmac.compare_digest(signature, sign(token, "session", f"{name}.{expires}.{nonce}")):
            return None
        return (token, nonce) if int(expires) > (now or time.time()) else None


def sign(token: Token, purpose: str, body: str) -> str:
    return hmac.new(token.secret.encode(), f"{purpose}\0{body}".encode(), hashlib.sha256).hexdigest()


def csrf_value(identity: Identity) -> str:
    """The value the dashboard's forms must send back; bound to this session."""
    return sign(identity.token, "csrf", identity.session or "")


def authenticate(request: Request) -> Identity | None:
    tokens: Tokens = request.app.state.tokens
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials:
        token = tokens.match(credentials.strip())
        return None if token is None else Identity(token)
    resolver: Resolver | None = getattr(request.app.state, "resolver", None)
    if resolver is not None:
        return resolved(request, resolver)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        signed = tokens.from_session(cookie)
        if signed is not None and request.app.state.conveyor.insights.sessions_live(signed[1]):
            return Identity(signed[0], session=cookie, session_id=signed[1])
    return None


def resolved(request: Request, resolver: Resolver) -> Identity | None:
    """The host's decision as an Identity. Its CSRF values are signed with the app's resolver secret
    and bound to the caller's name, so the dashboard's forms and the API's cookie-less writes work
    as with a token session."""
    access = resolver(request)
    if access is None:
        return None
    if not isinstance(access, Access):
        raise TypeError(f"the dashboard's resolver must return conveyor.web.Access or None, not {type(access).__name__}")
    token = Token(access.name, request.app.state.resolver_secret, Role.WRITE if access.write else Role.READ)
    return Identity(token, session=f"host:{access.name}")


class LoginThrottle:
    """Failed logins per client address: after ``limit`` within ``window`` seconds, refuse that address.

    The refusal lasts until the oldest of those failures leaves the window, and covers a right
    token too (otherwise guessing would simply carry on). Kept per web process, in memory: with
    several processes an address gets ``limit`` tries in each, still a few per window rather than
    thousands a second. At most ``addresses`` are remembered; the stalest are forgotten first.
    """

    def __init__(self, limit: int = 5, window: float = 300.0, addresses: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.addresses = addresses
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        found = self._failures.get(client, deque())
        while found and found[0] <= now - self.window:
            found.popleft()
        return found

    def wait(self, client: str, now: float | None = None) -> float:
        """Seconds this address must wait before it may try again; 0 when it may try now."""
        current = time.monotonic() if now is None else now
        with self._lock:
            recent = self._recent(client, current)
            if len(recent) < self.limit:
                return 0.0
            return max(recent[-self.limit] + self.window - current, 0.0)

    def failed(self, client: str, now: float | None = None) -> int:
        """Count one failure; the number of failures of this address inside the window."""
        current = time.monotonic() if now is None else now
        with self._lock:
            recent = self._recent(client, current)
            recent.append(current)
            self._failures.pop(client, None)
            self._failures[client] = recent  # newest last, so the stalest go first below
            while len(self._failures) > self.addresses:
                del self._failures[next(iter(self._failures))]
            return len(recent)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def unauthorised() -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "a valid bearer token is required (Authorization: Bearer <token>)",
        headers={"WWW-Authenticate": 'Bearer realm="conveyor"'},
    )


def reader(request: Request) -> Identity:
    """FastAPI dependency: any valid token."""
    identity = authenticate(request)
    if identity is None:
        raise unauthorised()
    return identity


def writer(request: Request) -> Identity:
    """FastAPI dependency: a read-write token; cookie sessions must also send the CSRF header."""
    identity = reader(request)
    if not identity.token.allows(Role.WRITE):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"token {identity.name!r} is read-only")
    if identity.session is not None:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent, csrf_value(identity)):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token")
    return identity
