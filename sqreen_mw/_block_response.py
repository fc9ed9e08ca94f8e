"""The answer a blocked request gets, rendered once when the client is made (never per request).

Default: ``403`` with ``{"error": "blocked", ...}`` as JSON, or a small self-contained HTML page when the request's
``Accept`` prefers ``text/html`` over JSON (a browser). ``init(block_status=..., block_body=...,
block_content_type=...)`` (env ``SQREEN_BLOCK_STATUS``, ``SQREEN_BLOCK_BODY``, ``SQREEN_BLOCK_CONTENT_TYPE``)
replace it: a custom body is
sent whatever the ``Accept``, with the given content type, or one guessed from the body (JSON when it parses as
JSON, HTML when it starts with ``<``, else plain text). Every block response has ``Cache-Control: no-store``, so a
cache never serves it to someone else, or keeps serving it after the block is lifted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from ._exceptions import ConfigurationError

__all__ = ["BlockResponse", "Rendered", "parse_block_body", "parse_block_content_type", "parse_block_status"]

DEFAULT_JSON = (
    b'{"error": "blocked", "message": "This request was blocked by the security policy of this application."}'
)
DEFAULT_HTML = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>403 Forbidden</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 4em auto; padding: 0 1em">
<h1>Access blocked</h1>
<p>This request was blocked by the security policy of this application.</p>
<p>If you think this is a mistake, contact the site's administrators.</p>
</body></html>
"""


def parse_block_status(name: str, value: Any) -> int:
    """``block_status``: an HTTP status code from 400 to 599 (a number or its text)."""
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be an HTTP status from 400 to 599, got {value!r}")
    try:
        status = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be an HTTP status from 400 to 599, got {value!r}") from None
    if not 400 <= status <= 599:
        raise ConfigurationError(f"{name} must be an HTTP status from 400 to 599, got {value!r}")
    return status


def parse_block_body(name: str, value: Any) -> bytes | None:
    """``block_body``: ``str`` (sent as UTF-8) or ``bytes``; ``None`` keeps the default bodies."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise ConfigurationError(f"{name} must be a str or bytes, got {type(value).__name__}")


def parse_block_content_type(name: str, value: Any) -> str | None:
    """``block_content_type``: a media type such as ``text/html; charset=utf-8``, or ``None`` to guess."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or not value.isascii() or "\n" in value or "\r" in value:
        raise ConfigurationError(f"{name} must be a one-line ASCII media type like 'text/html', got {value!r}")
    return value.strip()


def _guess(body: bytes) -> str:
    try:
        json.loads(body)
    except ValueError:
        pass
    else:
        return "application/json"
    if body.lstrip()[:1] == b"<":
        return "text/html; charset=utf-8"
    return "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Rendered:
    """One ready-to-send block response, in the shapes each adapter needs."""

    status: int
    status_line: str  # WSGI: "403 Forbidden"
    content_type: str
    body: bytes
    asgi_headers: tuple[tuple[bytes, bytes], ...]
    wsgi_headers: tuple[tuple[str, str], ...]


def _render(status: int, content_type: str, body: bytes) -> Rendered:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Blocked"
    headers = (("content-type", content_type), ("content-length", str(len(body))), ("cache-control", "no-store"))
    return Rendered(
        status,
        f"{status} {phrase}",
        content_type,
        body,
        tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers),
        tuple((k.title(), v) for k, v in headers),
    )


class BlockResponse:
    """The block response of one client: a JSON and an HTML rendering chosen by ``Accept``, or one custom body.

    :param status: the HTTP status (default 403).
    :param body: a custom body, or ``None`` for the defaults.
    :param content_type: the custom body's content type, or ``None`` to guess it from the body.
    :raises ConfigurationError: ``content_type`` without ``body``.
    """

    __slots__ = ("html", "json")

    def __init__(self, status: int = 403, body: bytes | None = None, content_type: str | None = None) -> None:
        if body is None:
            if content_type is not None:
                raise ConfigurationError("block_content_type is the type of a custom block_body: set block_body too")
            self.json = _render(status, "application/json", DEFAULT_JSON)
            self.html = _render(status, "text/html; charset=utf-8", DEFAULT_HTML)
        else:
            self.json = self.html = _render(status, content_type or _guess(body), body)

    def for_accept(self, accept: str | None) -> Rendered:
        """The rendering for a request's ``Accept`` header: HTML when it asks for ``text/html`` before any JSON."""
        if not accept or self.html is self.json:
            return self.json
        html = accept.find("text/html")
        if html < 0:
            return self.json
        js = accept.find("json")
        return self.html if js < 0 or html < js else self.json
