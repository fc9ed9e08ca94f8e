"""The explorer's web security: signed session cookies, CSRF tokens, login rate limit and response headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "sqreen_explorer"
#: Strict: no inline script or style, nothing from another origin, never framed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; connect-src 'self';"
    " form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: its id, expiry (epoch seconds) and CSRF token."""

    sid: str
    expires: int
    csrf: str


class Sessions:
    """Stateless sessions signed with HMAC-SHA256, plus a revocation list for logged-out ones.

    The key is derived from the admin token, so sessions survive a restart and all end when the token changes.

    :param admin_token: the collector's admin token.
    :param max_age: seconds a session lasts after login.
    """

    def __init__(self, admin_token: str, max_age: int = 8 * 3600) -> None:
        secret = admin_token.encode("utf-8", "surrogatepass")
        self._key = hmac.new(secret, b"sqreen-explorer-session", "sha256").digest()
        self.max_age = max_age
        self._revoked: dict[str, int] = {}  # sid -> expiry, dropped once expired
        self._lock = threading.Lock()

    def _sign(self, text: str) -> str:
        return _b64(hmac.new(self._key, text.encode(), hashlib.sha256).digest())

    def _session(self, sid: str, expires: int) -> Session:
        return Session(sid, expires, self._sign(f"csrf:{sid}"))

    def issue(self, now: float | None = None) -> tuple[str, Session]:
        """A new session and the cookie value that carries it."""
        sid = secrets.token_urlsafe(18)
        expires = int((time.time() if now is None else now) + self.max_age)
        payload = f"{sid}.{expires}"
        return f"{payload}.{self._sign(payload)}", self._session(sid, expires)

    def verify(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session of a cookie value, or None when it is missing, forged, expired or logged out."""
        if not cookie:
            return None
        sid, _, rest = cookie.partition(".")
        expires_text, _, signature = rest.partition(".")
        if not sid or not expires_text.isdigit() or not signature:
            return None
        if not hmac.compare_digest(signature, self._sign(f"{sid}.{expires_text}")):
            return None
        expires = int(expires_text)
        now = time.time() if now is None else now
        if expires <= now:
            return None
        with self._lock:
            if sid in self._revoked:
                return None
        return self._session(sid, expires)

    def revoke(self, session: Session) -> None:
        """Log a session out: its cookie stops working even if the browser keeps it."""
        now = time.time()
        with self._lock:
            self._revoked = {sid: exp for sid, exp in self._revoked.items() if exp > now}
            self._revoked[session.sid] = session.expires

    def login_token(self, nonce: str) -> str:
        """The CSRF token of the login form, bound to the pre-login cookie ``nonce``."""
        return self._sign(f"login:{nonce}")


def safe_path(target: str | None, default: str = "/") -> str:
    """``target`` when it is a path on this site, else ``default``: "//host" and "/\\host" would leave it."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    return target


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted CSRF token."""
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


class LoginLimiter:
    """At most ``failures`` failed logins per client address per ``window`` seconds.

    :param failures: failed attempts allowed in the window.
    :param window: seconds.
    """

    def __init__(self, failures: int = 5, window: float = 60.0) -> None:
        self.failures = failures
        self.window = window
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str, now: float | None = None) -> int:
        """Seconds to wait before this client may try again (0: it may try now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            seen = self._seen.get(client)
            if seen is None:
                return 0
            while seen and seen[0] <= now - self.window:
                seen.popleft()
            if not seen:
                del self._seen[client]
                return 0
            return 0 if len(seen) < self.failures else int(seen[0] + self.window - now) + 1

    def failed(self, client: str, now: float | None = None) -> None:
        """Count a failed attempt."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._seen) > 100_000:  # bounded memory under a spray from many addresses
                self._seen.clear()
            self._seen.setdefault(client, deque()).append(now)


class SecurityHeaders:
    """ASGI middleware adding the explorer's security headers to every HTTP response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in HEADERS.items() if k.encode() not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
