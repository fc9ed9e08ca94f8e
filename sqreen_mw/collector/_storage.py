"""Collector storage: the :class:`Storage` interface (implemented by ``_sqlite.SQLiteStorage`` and
``postgres.storage.PostgresStorage``; the Event Explorer reads through ``explorer.ExplorerStorage``, which both
implement too).

Storage methods are synchronous and may block on disk; the endpoints call them through
``anyio.to_thread.run_sync`` so the event loop never waits on the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ._records import AgentSession, EventQuery, EventRecord

__all__ = ["AgentSession", "EventQuery", "EventRecord", "SchemaError", "Storage"]


class SchemaError(ValueError):
    """The database file was made by a version of the collector that this one cannot use (the CLI prints it)."""


class Storage(Protocol):
    """What the collector needs from a database. Implementations must be safe to call from several threads."""

    def insert_events(self, events: Sequence[EventRecord]) -> tuple[int, int]:
        """Store the events atomically, skipping ids already stored; return (accepted, duplicates)."""
        ...

    def store_events(self, events: Sequence[EventRecord]) -> list[EventRecord]:
        """Store the events atomically, skipping ids already stored; return the new ones, in order."""
        ...

    def query_events(self, query: EventQuery) -> list[EventRecord]:
        """Events matching ``query``, newest first (ts, then seq, descending)."""
        ...

    def create_session(self, session: AgentSession) -> None:
        """Record a new agent session."""
        ...

    def session_app(self, session_id: str) -> str | None:
        """The app of an active (not logged out) session, or None."""
        ...

    def heartbeat(self, session_id: str, stats: dict[str, Any], at: float) -> bool:
        """Store the stats of an active session; False when the session is unknown or logged out."""
        ...

    def logout(self, session_id: str, at: float) -> bool:
        """Mark an active session logged out; False when the session is unknown or already logged out."""
        ...

    def list_agents(self, limit: int = 1000) -> list[AgentSession]:
        """Sessions, newest first."""
        ...

    def delete_events_before(self, cutoff: float, limit: int = 10_000) -> int:
        """Delete up to ``limit`` of the oldest events with ``ts < cutoff`` (and what indexes them, such as their
        user rows), in one transaction; return how many. Retention calls it until it returns less than ``limit``."""
        ...

    def close(self) -> None:
        """Release the database; later calls raise ``RuntimeError``."""
        ...
