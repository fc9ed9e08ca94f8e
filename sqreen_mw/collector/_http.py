"""HTTP helpers shared by the collector endpoints: JSON answers, bounded body reading, threaded work."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._wire import Rejected

#: Seconds a client has to send a whole request body once its headers are in (slow clients hold memory).
BODY_READ_TIMEOUT = 30.0
_log = logging.getLogger("sqreen_mw.collector")

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class JSON(JSONResponse):
    """JSON response that escapes non-ASCII: stored event data may hold lone surrogates, which UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return _encode(content).encode("ascii")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSON:
    """A ``{"error": message}`` answer."""
    return JSON({"error": message}, status_code=status, headers=headers)


def rejected(exc: Rejected) -> JSON:
    """The answer for a refused body."""
    return JSON(exc.payload, status_code=exc.status)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404, 405) as JSON, like every other collector answer."""
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException only
        raise exc
    return error(exc.status_code, str(exc.detail), dict(exc.headers) if exc.headers else None)


def unavailable(exc: Exception, retry_after: int) -> JSON:
    """The 503 answer when the database cannot take a write: retryable, nothing was stored."""
    _log.warning("database unavailable, answered 503: %s", exc)
    return error(503, f"collector storage unavailable ({exc}): retry later", {"Retry-After": str(retry_after)})


async def storage_unavailable(request: Request, exc: Exception) -> Response:
    """Exception handler: a ``StorageUnavailable`` anywhere is a 503 with ``Retry-After``."""
    return unavailable(exc, 2)


async def read_body(request: Request, limit: int, time_limit: float = BODY_READ_TIMEOUT) -> bytes:
    """The raw request body, refusing (413) to read more than ``limit`` bytes, or (408) for longer than ``time_limit``
    seconds.

    :raises Rejected: the body is (or announces being) larger than ``limit``, or took too long to arrive.
    """
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and len(declared) < 20 and int(declared) > limit:
        raise Rejected(413, {"error": f"body is larger than {limit} bytes"})
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(time_limit) as scope:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Rejected(413, {"error": f"body is larger than {limit} bytes"})
            chunks.append(chunk)
    if scope.cancelled_caught:
        raise Rejected(408, {"error": f"body not received within {time_limit:g} s"})
    return b"".join(chunks)
