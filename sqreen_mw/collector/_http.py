"""HTTP helpers shared by the collector endpoints: JSON answers, bounded body reading, threaded work."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._wire import Rejected

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


async def read_body(request: Request, limit: int) -> bytes:
    """The raw request body, refusing (413) to read more than ``limit`` bytes.

    :raises Rejected: the body is (or announces being) larger than ``limit``.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Rejected(413, {"error": f"body is larger than {limit} bytes"})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(413, {"error": f"body is larger than {limit} bytes"})
        chunks.append(chunk)
    return b"".join(chunks)
