"""The explorer's URL parameters: time range, filters and cursor, parsed and validated, and links built from them."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from ..._schema import parse_timestamp
from .._api import BadParameter, decode_cursor
from .._sqlite_explorer import ExplorerFilter

PRESETS = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}
DEFAULT_RANGE = "24h"
#: Bucket sizes the charts use, smallest first; a range takes the smallest giving at most MAX_BUCKETS buckets.
BUCKETS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400, 7 * 86_400)
MAX_BUCKETS = 120
FILTER_KEYS = ("range", "since", "until", "name", "user", "ip", "app", "prop")
MAX_TEXT = 1024


@dataclass(frozen=True, slots=True)
class Filters:
    """What the URL asked for: the raw values (for forms and links) and the storage filter they mean."""

    raw: dict[str, str]
    query: ExplorerFilter
    since: float
    until: float

    def link(self, path: str, **changes: str | None) -> str:
        """``path`` with these filters, some changed (None removes one), as a query string."""
        values = {**self.raw, **changes}
        kept = {k: v for k, v in values.items() if v}
        return f"{path}?{urlencode(kept)}" if kept else path


def bucket_for(span: float) -> int:
    """Chart bucket (seconds) for a range of ``span`` seconds."""
    for bucket in BUCKETS:
        if span / bucket <= MAX_BUCKETS:
            return bucket
    return BUCKETS[-1]


def _time(params: Mapping[str, str], key: str, errors: list[str]) -> float | None:
    text = params.get(key, "").strip()
    if not text:
        return None
    try:
        return parse_timestamp(text)
    except (ValueError, OverflowError):
        errors.append(f"{key} must be an ISO 8601 date-time such as 2026-01-31T08:00Z (no offset: UTC), got {text!r}")
        return None


def parse_filters(
    params: Mapping[str, str], *, cursor: bool = False, now: float | None = None
) -> tuple[Filters, list[str]]:
    """Read the filters of a page; bad values are left out and explained in the returned messages."""
    errors: list[str] = []
    now = time.time() if now is None else now
    raw = {k: params[k][:MAX_TEXT] for k in FILTER_KEYS if params.get(k)}
    for key in [k for k, v in raw.items() if "\x00" in v]:  # never stored, and PostgreSQL refuses it in a query
        errors.append(f"{key} must not contain a NUL character")
        del raw[key]
    since, until = _time(params, "since", errors), _time(params, "until", errors)
    preset = raw.get("range", DEFAULT_RANGE)
    if preset not in PRESETS:
        errors.append(f"range must be one of {', '.join(PRESETS)}, got {preset!r}")
        preset = DEFAULT_RANGE
        raw.pop("range", None)
    if until is None:
        until = now if since is None else max(now, since + 60)
    if since is None:
        since = until - PRESETS[preset]
    if since >= until:
        errors.append("since must be earlier than until")
        since, until = until - PRESETS[DEFAULT_RANGE], until
    network = None
    if ip := raw.get("ip", "").strip():
        try:
            network = ipaddress.ip_network(ip, strict=False)
        except ValueError:
            errors.append(f"ip must be an IP address or a CIDR such as 203.0.113.0/24, got {ip!r}")
    prop = None
    if text := raw.get("prop"):
        key, sep, value = text.partition("=")
        if not sep or not key:
            errors.append(f"prop must be key=value, got {text!r}")
        elif '"' in key:
            errors.append(f"prop key must not contain a double quote, got {key!r}")
        else:
            prop = (key, value)
    after = None
    if cursor and params.get("cursor"):
        try:
            after = decode_cursor(params["cursor"])
        except BadParameter as exc:
            errors.append(str(exc))
    query = ExplorerFilter(
        name=raw.get("name"),
        since=since,
        until=until,
        user=raw.get("user"),
        network=network,
        app=raw.get("app"),
        prop=prop,
        after=after,
    )
    return Filters(raw, query, since, until), errors


def without_range(filters: Filters) -> Filters:
    """The same filters over all time (an actor's whole story)."""
    return replace(filters, query=replace(filters.query, since=None, until=None))
