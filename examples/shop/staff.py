"""Staff: who may list every order and manage webhook endpoints, with the admin dashboard's own tokens.

Orders hold customers' names and email addresses, and a webhook endpoint receives every future
order; so listing orders and registering, listing or removing endpoints need a bearer token from
Conveyor's admin settings (``CONVEYOR_ADMIN_TOKEN`` for read-write, ``CONVEYOR_ADMIN_READ_TOKEN``
or ``CONVEYOR_ADMIN_TOKENS`` entries), the same tokens the dashboard at ``/admin`` takes. With
none configured, these routes answer 401 to everyone.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException, Request

from conveyor.web.auth import Role, Token, Tokens


def staff(tokens: Tokens, role: Role) -> Callable[[Request], Token]:
    """A FastAPI dependency: the caller's token, which must allow ``role``."""

    def check(request: Request) -> Token:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        token = tokens.match(credentials.strip()) if scheme.lower() == "bearer" and credentials else None
        if token is None:
            raise HTTPException(401, "staff only: send Authorization: Bearer <admin token>", headers={"WWW-Authenticate": 'Bearer realm="shop"'})
        if not token.allows(role):
            raise HTTPException(403, f"token {token.name!r} is read-only")
        return token

    return check
