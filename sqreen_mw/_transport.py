"""Talking to the collector (protocol v1, ``docs/protocol.md``) over ``httpx.AsyncClient``.

The status policy lives in :func:`classify`: 2xx delivered; 401 log in again; 408, 429 and 5xx (and network errors)
retry, honouring ``Retry-After``; 413 split the batch; any other 4xx drop the batch with the collector's reason.
The API key travels in a header, never in a URL (httpx logs URLs).
"""

from __future__ import annotations

import email.utils
import gzip
import json
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ._version import __version__

_orjson_dumps: Callable[[Any], bytes] | None
try:
    from orjson import dumps as _orjson_dumps
except ImportError:  # an optional dependency
    _orjson_dumps = None

OK, RETRY, AUTH, SPLIT, DROP = "ok", "retry", "auth", "split", "drop"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    reason: str = ""
    retry_after: float | None = None
    body: Any = None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _reason(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    return f"HTTP {response.status_code}" + (f": {str(error)[:200]}" if error else "")


def classify(response: httpx.Response) -> Outcome:
    """Map a collector response to what the flusher does next."""
    status = response.status_code
    if 200 <= status < 300:
        try:
            body = response.json()
        except ValueError:
            body = None
        return Outcome(OK, body=body)
    if status == 401:
        return Outcome(AUTH, _reason(response))
    if status in (408, 429) or status >= 500:
        return Outcome(RETRY, _reason(response), _retry_after(response.headers.get("retry-after")))
    if status == 413:
        return Outcome(SPLIT, _reason(response))
    try:
        body = response.json()  # a 422 names the invalid events
    except ValueError:
        body = None
    return Outcome(DROP, _reason(response), body=body)


def encode_batch(events: list[Any]) -> bytes:
    """The batch body, UTF-8 JSON: by orjson when it is installed (several times cheaper), else by the standard
    library; what orjson refuses (an int over 64 bits, a lone surrogate, a key that is not a str) is left to the
    standard library, so the body, decoded, is the same either way. Events hold finite floats only (properties are
    checked, parsed bodies keep non-finite numbers as text): orjson would write ``null`` for a NaN.

    :raises TypeError: a value JSON cannot carry.
    :raises ValueError: a non-finite float, or (``UnicodeEncodeError``) a lone surrogate, which the collector refuses.
    """
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps({"events": events})
        except TypeError:  # orjson.JSONEncodeError
            pass
    return _stdlib_batch(events)


def compress_batch(batch_json: bytes) -> bytes:
    """The gzip body of a batch. Level 1: a third of level 5's CPU for about a quarter more bytes (a batch of
    request events: 23 bytes an event instead of 19), on a thread of the application's process."""
    return gzip.compress(batch_json, compresslevel=1)


def _stdlib_batch(events: list[Any]) -> bytes:
    return json.dumps({"events": events}, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


class Transport:
    """One agent session with the collector.

    Every session request carries ``X-Actions-Version`` (:attr:`actions_version`, ``-1`` until actions arrive), so
    the collector adds the actions to an answer only when the agent's are out of date (protocol: "Actions").
    """

    def __init__(
        self, url: str, token: str, app_name: str | None, timeout: float, client: httpx.AsyncClient | None = None,
        *, trusted_proxies: list[str] | None = None,
    ) -> None:
        self._token = token
        self._app_name = app_name
        self._timeout = timeout
        self._trusted_proxies = trusted_proxies
        self._client = client or httpx.AsyncClient(base_url=url, timeout=timeout)
        self._headers = {"User-Agent": f"sqreen_mw/{__version__}"}
        self.session: str | None = None
        self.actions_version = -1

    @property
    def url(self) -> str:
        """The collector's base URL, as configured."""
        return str(self._client.base_url).rstrip("/")

    async def _post(self, path: str, content: bytes, headers: dict[str, str]) -> Outcome:
        try:
            response = await self._client.post(path, content=content, headers={**self._headers, **headers})
        except Exception as exc:  # network errors, and e.g. no DNS executor left at interpreter exit
            return Outcome(RETRY, f"{type(exc).__name__}: {exc}")
        return classify(response)

    async def login(self) -> Outcome:
        body: dict[str, Any] = {
            "app_name": self._app_name,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "sdk_version": __version__,
            "runtime": f"{platform.python_implementation()} {platform.python_version()}",
        }
        if self._trusted_proxies is not None:
            body["trusted_proxies"] = self._trusted_proxies  # never blocked by the collector (["*"]: trust all)
        outcome = await self._post(
            "/api/v1/agent/login",
            json.dumps(body).encode(),
            {"X-Api-Key": self._token, "Content-Type": "application/json"},
        )
        if outcome.kind == OK and isinstance(outcome.body, dict) and outcome.body.get("session_id"):
            self.session = str(outcome.body["session_id"])
        elif outcome.kind == OK:
            return Outcome(RETRY, "login answer without session_id")
        return outcome

    def _session_headers(self, extra: dict[str, str]) -> dict[str, str]:
        return {"X-Session-Key": self.session or "", "Content-Type": "application/json",
                "X-Actions-Version": str(self.actions_version), **extra}

    async def poll_actions(self, wait: float) -> Outcome:
        """The push channel: ``GET /api/v1/agent/actions``, answered when the actions change or after ``wait`` s."""
        headers = {**self._headers, "X-Session-Key": self.session or "", "X-Actions-Version": str(self.actions_version)}
        try:
            response = await self._client.get("/api/v1/agent/actions", params={"wait": f"{wait:g}"}, headers=headers,
                                              timeout=wait + self._timeout)  # the answer may take the whole wait
        except Exception as exc:
            return Outcome(RETRY, f"{type(exc).__name__}: {exc}")
        return classify(response)

    async def heartbeat(self, stats: dict[str, Any]) -> Outcome:
        payload = json.dumps({"stats": stats}).encode()
        return await self._post("/api/v1/agent/heartbeat", payload, self._session_headers({}))

    async def send_batch(self, batch_json: bytes) -> Outcome:
        """POST a batch already encoded by :func:`encode_batch`, gzipped."""
        payload = compress_batch(batch_json)
        return await self._post("/api/v1/agent/batch", payload, self._session_headers({"Content-Encoding": "gzip"}))

    async def logout(self) -> None:
        if self.session is not None:
            await self._post("/api/v1/agent/logout", b"{}", self._session_headers({}))
            self.session = None

    async def aclose(self) -> None:
        await self._client.aclose()
