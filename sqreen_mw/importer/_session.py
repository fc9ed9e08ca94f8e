"""One agent session with the collector for an import (protocol v1), over a synchronous httpx client.

The same requests and headers as the SDK's ``Transport`` (its status policy, :func:`~sqreen_mw._transport.classify`,
is reused); synchronous because each sender thread holds one request at a time.
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import socket
import threading
import urllib.parse
from collections.abc import Iterator

import httpx

from .._transport import OK, RETRY, Outcome, classify
from .._version import __version__


class Session:
    """One agent session (protocol v1) over a synchronous httpx client; the same headers as the SDK."""

    def __init__(self, url: str, token: str, app_name: str | None, timeout: float, gzip: str = "auto") -> None:
        self._token = token
        self._app_name = app_name
        self._client = httpx.Client(base_url=url, timeout=timeout, headers={"User-Agent": f"sqreen_mw/{__version__}"})
        self.key: str | None = None
        self.app: str = app_name or "default"
        self.named_app: str | None = None  # the app the collector said it stores the events under
        self._lock = threading.Lock()
        # Compressing costs both sides CPU, which is what limits an import over loopback; elsewhere bytes matter more.
        self.compress = gzip == "always" or (gzip == "auto" and not _is_loopback(url))

    def _post(self, path: str, content: bytes | list[bytes], headers: dict[str, str]) -> Outcome:
        body = _Body(content if isinstance(content, list) else [content])
        # Its length, or httpx would send an iterable body chunked.
        headers = {**headers, "Content-Length": str(sum(map(len, body.pieces)))}
        try:
            return classify(self._client.post(path, content=body, headers=headers))
        except httpx.HTTPError as exc:
            return Outcome(RETRY, f"{type(exc).__name__}: {exc}")
        finally:
            body.pieces = []

    def login(self, stale: str | None = None) -> Outcome:
        """Open a session unless another thread already replaced ``stale`` with a new one."""
        with self._lock:
            if self.key is not None and self.key != stale:
                return Outcome(OK)
            body = {
                "app_name": self._app_name,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "sdk_version": __version__,
                "runtime": f"{platform.python_implementation()} {platform.python_version()} (sqreen-mw import)",
            }
            headers = {"X-Api-Key": self._token, "Content-Type": "application/json"}
            outcome = self._post("/api/v1/agent/login", json.dumps(body).encode(), headers)
            if outcome.kind != OK:
                return outcome
            if not isinstance(outcome.body, dict) or not outcome.body.get("session_id"):
                return Outcome(RETRY, "login answer without session_id")
            self.key = str(outcome.body["session_id"])
            if outcome.body.get("app"):
                self.named_app = str(outcome.body["app"])
            self.app = self.named_app or self.app
            return outcome

    def send(self, payload: bytes | list[bytes]) -> tuple[Outcome, str | None]:
        """POST a batch body (gzipped when :attr:`compress`), whole or in pieces; also return the session key used
        (for a 401)."""
        key = self.key
        headers = {"X-Session-Key": key or "", "Content-Type": "application/json"}
        if self.compress:
            headers["Content-Encoding"] = "gzip"
        return self._post("/api/v1/agent/batch", payload, headers), key

    def logout(self) -> None:
        if self.key is not None:
            self._post("/api/v1/agent/logout", b"{}", {"X-Session-Key": self.key, "Content-Type": "application/json"})
            self.key = None

    def close(self) -> None:
        self._client.close()


class _Body:
    """A request body that httpx reads piece by piece, and that lets go of its bytes once the answer is in.

    httpx's request and response objects form reference cycles, which live until the garbage collector's next
    pass over their generation: by then they have often reached the oldest one, rarely collected, so without
    this each would keep its batch body (megabytes) alive long after it was sent.
    """

    __slots__ = ("pieces",)

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.pieces)


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


