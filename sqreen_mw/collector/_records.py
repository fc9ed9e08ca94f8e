"""Values exchanged between the collector endpoints and its storage."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, NamedTuple

#: What the admin API shows in place of a stored value it cannot decode or encode (stored by an older version).
UNREADABLE = "[sqreen-mw: stored value cannot be shown]"


class StorageUnavailable(Exception):
    """The database cannot take the write now (locked, read-only, disk full): the agent should retry later."""


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
    """Filters of the admin event listing; ``after`` is the (ts, seq) of the last event of the previous page.

    ``ip`` matches ``client_ip`` exactly; ``ip_range`` is an inclusive range of :func:`ip_key` values (a network).
    """

    name: str | None = None
    since: float | None = None
    until: float | None = None
    ip: str | None = None
    user: str | None = None
    limit: int = 100
    after: tuple[float, int] | None = None
    app: str | None = None
    ip_range: tuple[bytes, bytes] | None = None


@dataclass(frozen=True, slots=True)
class AgentSession:
    """One agent login.

    ``session_id`` is the agent's credential, never shown; ``agent_id`` is its public name (admin API, logs).
    """

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
    agent_id: str | None = None


def ip_key(text: str | None) -> bytes | None:
    """A client IP as 16 sortable bytes (IPv4 as IPv4-mapped IPv6), or None when it is not an IP address.

    A network is then the contiguous range of keys from its first to its last address.
    """
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return b"\0" * 10 + b"\xff\xff" + address.packed
    return address.packed
