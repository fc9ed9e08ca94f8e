"""Authentication of agents (API key, session key) and of the admin API (bearer token)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from starlette.requests import Request

API_KEY_HEADER = "x-api-key"
SESSION_HEADER = "x-session-key"


def _same(a: str, b: str) -> bool:
    # compare_digest refuses non-ASCII str; bytes compare in constant time whatever they hold.
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def match_api_key(api_keys: Mapping[str, str], request: Request) -> str | None:
    """The app name bound to the request's ``X-Api-Key`` ("" when unbound), or None for a missing/unknown key."""
    presented = request.headers.get(API_KEY_HEADER)
    if not presented:
        return None
    found: str | None = None
    for key, app in api_keys.items():  # no early exit: the time taken does not depend on which key matched
        if _same(key, presented) and found is None:
            found = app
    return found


def session_key(request: Request) -> str | None:
    """The ``X-Session-Key`` header, or None."""
    return request.headers.get(SESSION_HEADER) or None


def admin_denied(admin_token: str | None, request: Request) -> str | None:
    """Why the request may not use the admin API, or None when it carries the right bearer token."""
    if admin_token is None:
        return "the admin API is disabled: configure an admin token (sqreen-mw serve --admin-token)"
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "missing admin token: send 'Authorization: Bearer <admin token>'"
    if not _same(token.strip(), admin_token):
        return "wrong admin token"
    return None
