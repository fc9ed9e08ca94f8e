"""Rendering of the explorer's pages: the Jinja2 environment (autoescaped), its filters, and HTML responses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from starlette.responses import HTMLResponse

from ..._schema import format_timestamp
from ._security import HEADERS

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


def _iso(ts: float | None) -> str:
    return "" if ts is None else format_timestamp(ts)


def _pretty(value: Any) -> str:
    # ensure_ascii: stored data may hold lone surrogates, which UTF-8 output cannot carry.
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=True)


def _scalar(value: Any) -> str:
    """A property value as typed: strings as they are, anything else as JSON (true, 2.5, null)."""
    return value if isinstance(value, str) else _compact(value)


def _number(value: int) -> str:
    return f"{value:,}"


def _text(value: Any) -> str:
    """Text safe to encode as UTF-8 (lone surrogates of stored strings become U+FFFD)."""
    return str(value).encode("utf-8", "replace").decode("utf-8") if value is not None else ""


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # every template: event data is attacker-controlled
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(
    scalar=_scalar, iso=_iso, pretty=_pretty, compact=_compact, number=_number, text=_text, fromjson=json.loads
)


def render(template: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> HTMLResponse:
    """An HTML page with the explorer's security headers."""
    body = ENV.get_template(template).render(**context)
    body = body.encode("utf-8", "replace").decode("utf-8")
    return HTMLResponse(body, status_code=status, headers={**HEADERS, **(headers or {})})
