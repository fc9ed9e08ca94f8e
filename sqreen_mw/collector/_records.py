"""Values exchanged between the collector endpoints and its storage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class EventRecord(NamedTuple):
    """A validated event.

    ``users`` are its identifier values as text (for the ``user`` filter); ``seq`` is its position in storage
    (0 until stored), the tiebreaker of the newest-first order; ``blocked`` marks an event the agent tracked while
    refusing the request (it never feeds a playbook).
    """

    id: str
    name: str
    ts: float
    received_at: float
    app: str
    client_ip: str | None
    properties: dict[str, Any]
    user_identifiers: dict[str, str | int] | None
    request: dict[str, Any] | None
    body: Any
    users: tuple[str, ...]
    seq: int = 0
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters of the admin event listing; ``after`` is the (ts, seq) of the last event of the previous page."""

    name: str | None = None
    since: float | None = None
    until: float | None = None
    ip: str | None = None
    user: str | None = None
    limit: int = 100
    after: tuple[float, int] | None = None


@dataclass(frozen=True, slots=True)
class AgentSession:
    """One agent login."""

    session_id: str
    app: str
    hostname: str | None
    pid: int | None
    sdk_version: str | None
    runtime: str | None
    started_at: float
    last_heartbeat_at: float | None = None
    logged_out_at: float | None = None
    stats: dict[str, Any] | None = None
