"""Admin read API of protocol v1: ``GET /api/v1/events`` and ``GET /api/v1/agents`` (bearer token)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._schema import format_timestamp, parse_timestamp
from ._auth import admin_denied
from ._http import JSON, error
from ._storage import AgentSession, EventQuery, EventRecord, Storage

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


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
    try:
        ts, seq = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error):
        raise BadParameter(message) from None
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not isinstance(seq, int) or isinstance(seq, bool):
        raise BadParameter(message)
    return float(ts), seq


def parse_query(params: Any) -> EventQuery:
    """Turn ``/api/v1/events`` query parameters into an :class:`EventQuery` (limit not yet +1).

    :raises BadParameter: a value is malformed; the message names the parameter.
    """
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
    elif text.isdigit() and int(text) >= 1:
        limit = min(int(text), MAX_LIMIT)
    else:
        raise BadParameter(f"limit must be an integer from 1 to {MAX_LIMIT}, got {text!r}")
    for key in ("name", "ip", "user"):
        if params.get(key) == "":
            raise BadParameter(f"{key} must not be empty (leave it out to match everything)")
    cursor = params.get("cursor")
    return EventQuery(
        name=params.get("name"),
        since=times["since"],
        until=times["until"],
        ip=params.get("ip"),
        user=params.get("user"),
        limit=limit,
        after=None if cursor is None else decode_cursor(cursor),
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
    """A session as the admin API shows it."""
    return {
        "session_id": agent.session_id,
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
                "events": [event_json(event) for event in page],
                "next": encode_cursor(page[-1]) if len(rows) > limit else None,
            }
        )

    async def agents(self, request: Request) -> Response:
        """``GET /api/v1/agents``: agent sessions, newest first."""
        if (denied := self._denied(request)) is not None:
            return denied
        agents = await to_thread.run_sync(self.storage.list_agents)
        return JSON({"agents": [agent_json(agent) for agent in agents]})


def _with_limit(query: EventQuery, limit: int) -> EventQuery:
    return EventQuery(query.name, query.since, query.until, query.ip, query.user, limit, query.after)
