"""Admin read API of protocol v1: ``GET /api/v1/events`` and ``GET /api/v1/agents`` (bearer token)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import json
import logging
import math
import re
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._schema import MAX_INT, format_timestamp, parse_timestamp
from ._auth import admin_denied
from ._http import JSON, error
from ._records import UNREADABLE, ip_key
from ._storage import AgentSession, EventQuery, EventRecord, Storage

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: The query parameters of ``GET /api/v1/events``; any other is refused (a typo must not match everything).
EVENT_PARAMETERS = ("name", "app", "user", "ip", "since", "until", "limit", "cursor")
_LIMIT = re.compile(r"[0-9]{1,4}")
_TS_RANGE = (-62135596800.0, 253402300799.999999)
_log = logging.getLogger("sqreen_mw.collector")


class BadParameter(ValueError):
    """A query parameter with a value the API cannot use; the message names it."""


def _time(value: float | None) -> str | None:
    return None if value is None else format_timestamp(value)


def encode_cursor(event: EventRecord) -> str:
    """Opaque cursor pointing after ``event`` in the newest-first order."""
    return base64.urlsafe_b64encode(json.dumps([event.ts, event.seq]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, int]:
    """Inverse of :func:`encode_cursor`; :raises BadParameter: not a cursor this API gave."""
    message = "cursor is not a cursor returned by this API (pass 'next' as is, with the same filters)"
    if len(cursor) > 200:  # ours are ~40 characters
        raise BadParameter(message)
    try:
        ts, seq = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise BadParameter(message) from None
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not isinstance(seq, int) or isinstance(seq, bool):
        raise BadParameter(message)
    # Values SQLite can compare: a 64-bit seq, a finite time within the years the API can show.
    if not 0 <= seq <= MAX_INT or not math.isfinite(ts) or not _TS_RANGE[0] <= ts <= _TS_RANGE[1]:
        raise BadParameter(message)
    return float(ts), seq


def _ip_filter(text: str) -> tuple[str | None, tuple[bytes, bytes] | None]:
    """The ``ip`` parameter: an address or other text (exact match), or a network in CIDR form (a key range)."""
    if "/" not in text:
        return text, None
    try:
        network = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise BadParameter(
            f"ip must be an IP address or a network in CIDR form (203.0.113.0/24, 2001:db8::/32), got {text!r}"
        ) from None
    low, high = ip_key(str(network.network_address)), ip_key(str(network.broadcast_address))
    if low is None or high is None:  # pragma: no cover - the addresses of a parsed network always parse
        raise BadParameter(f"ip network {text!r} has no addresses")
    return None, (low, high)


def parse_query(params: Any) -> EventQuery:
    """Turn ``/api/v1/events`` query parameters into an :class:`EventQuery` (limit not yet +1).

    :raises BadParameter: a parameter is unknown or its value malformed; the message names it.
    """
    unknown = sorted({key for key in params if key not in EVENT_PARAMETERS})
    if unknown:
        raise BadParameter(
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}:"
            f" the known ones are {', '.join(EVENT_PARAMETERS)}"
        )
    times: dict[str, float | None] = {}
    for key in ("since", "until"):
        text = params.get(key)
        try:
            times[key] = None if text is None else parse_timestamp(text)
        except (ValueError, OverflowError):
            raise BadParameter(f"{key} must be an ISO 8601 date-time, got {text!r}") from None
    text = params.get("limit")
    if text is None:
        limit = DEFAULT_LIMIT
    elif _LIMIT.fullmatch(text) and 1 <= int(text) <= MAX_LIMIT:
        limit = int(text)
    else:
        shown = text if len(text) <= 20 else text[:17] + "..."
        raise BadParameter(f"limit must be an integer from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}), got {shown!r}")
    for key in ("name", "ip", "user", "app"):
        if params.get(key) == "":
            raise BadParameter(f"{key} must not be empty (leave it out to match everything)")
        if "\x00" in params.get(key, ""):  # never stored (ingest refuses it), and PostgreSQL refuses it in a query
            raise BadParameter(f"{key} must not contain a NUL character")
    cursor = params.get("cursor")
    ip, ip_range = (None, None) if params.get("ip") is None else _ip_filter(params["ip"])
    return EventQuery(
        name=params.get("name"),
        since=times["since"],
        until=times["until"],
        ip=ip,
        user=params.get("user"),
        limit=limit,
        after=None if cursor is None else decode_cursor(cursor),
        app=params.get("app"),
        ip_range=ip_range,
    )


def event_json(event: EventRecord) -> dict[str, Any]:
    """An event as the admin API shows it."""
    return {
        "id": event.id,
        "name": event.name,
        "timestamp": format_timestamp(event.ts),
        "received_at": format_timestamp(event.received_at),
        "app": event.app,
        "properties": event.properties,
        "user_identifiers": event.user_identifiers,
        "request": event.request,
        "body": event.body,
    }


def agent_json(agent: AgentSession) -> dict[str, Any]:
    """A session as the admin API shows it: never its session_id, which is the agent's credential."""
    return {
        "agent_id": agent.agent_id,
        "app": agent.app,
        "hostname": agent.hostname,
        "pid": agent.pid,
        "sdk_version": agent.sdk_version,
        "runtime": agent.runtime,
        "started_at": _time(agent.started_at),
        "last_heartbeat_at": _time(agent.last_heartbeat_at),
        "logged_out_at": _time(agent.logged_out_at),
        "stats": agent.stats,
    }


class AdminApi:
    """Read access to events and agents for people and the explorer.

    :param storage: the collector's storage.
    :param admin_token: the bearer token to require; None disables the API (every call answers 401).
    """

    def __init__(self, storage: Storage, admin_token: str | None) -> None:
        self.storage = storage
        self.admin_token = admin_token

    def routes(self) -> list[Route]:
        """The admin routes, under ``/api/v1``."""
        return [
            Route("/api/v1/events", self.events, methods=["GET"]),
            Route("/api/v1/agents", self.agents, methods=["GET"]),
        ]

    def _denied(self, request: Request) -> Response | None:
        reason = admin_denied(self.admin_token, request)
        return None if reason is None else error(401, reason, {"WWW-Authenticate": "Bearer"})

    async def events(self, request: Request) -> Response:
        """``GET /api/v1/events``: filtered events, newest first, paginated by cursor."""
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            query = parse_query(request.query_params)
        except BadParameter as exc:
            return error(400, str(exc))
        limit = query.limit
        # One extra row tells whether there is a next page.
        rows = await to_thread.run_sync(self.storage.query_events, _with_limit(query, limit + 1))
        page = rows[:limit]
        return JSON(
            {
                "events": [_showable(event_json(event), event.id) for event in page],
                "next": encode_cursor(page[-1]) if len(rows) > limit else None,
            }
        )

    async def agents(self, request: Request) -> Response:
        """``GET /api/v1/agents``: agent sessions, newest first."""
        if (denied := self._denied(request)) is not None:
            return denied
        agents = await to_thread.run_sync(self.storage.list_agents)
        return JSON({"agents": [_showable(agent_json(agent), agent.agent_id) for agent in agents]})


def _with_limit(query: EventQuery, limit: int) -> EventQuery:
    return dataclasses.replace(query, limit=limit)


_check_encodable = json.JSONEncoder(allow_nan=False).encode


def _showable(item: dict[str, Any], name: str | None) -> dict[str, Any]:
    """``item``, with each field the JSON encoder refuses (stored by an older version: too deep, non-finite)
    replaced by a marker, so one row never turns a whole page into a 500."""
    try:
        _check_encodable(item)
        return item
    except (ValueError, TypeError, RecursionError):
        pass
    out: dict[str, Any] = {}
    for key, value in item.items():
        try:
            _check_encodable(value)
            out[key] = value
        except (ValueError, TypeError, RecursionError):
            _log.warning("stored %s of %s cannot be encoded as JSON: shown as a marker", key, name)
            out[key] = UNREADABLE
    return out
