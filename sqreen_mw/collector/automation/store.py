"""What automation keeps in the collector's database: blocks, firings, API-made playbooks, the allowlist, the actions
version — the :class:`AutomationStore` interface (the SQLite implementation is ``collector/_sqlite_automation.py``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._records import EventRecord

__all__ = ["AllowEntry", "AutomationStore", "Block", "Firing"]


@dataclass(frozen=True, slots=True)
class Block:
    """A block: ``kind`` "ip" (``value`` an address or CIDR) or "user" (``value`` an identifier map)."""

    id: str
    kind: str
    value: Any
    reason: str
    playbook: str | None
    created_at: float
    expires_at: float | None  # None: permanent
    lifted_at: float | None = None
    firing_id: str | None = None

    def active(self, now: float) -> bool:
        return self.lifted_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True, slots=True)
class Firing:
    """A playbook's threshold reached for one actor, and what was done about it."""

    id: str
    playbook: str
    actor_kind: str  # "ip" | "user" | "property"
    actor_value: Any
    at: float
    count: int
    event_ids: list[str]
    responses: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0  # storage order (0 until stored), the tiebreaker of the newest-first order


@dataclass(frozen=True, slots=True)
class AllowEntry:
    """An allowlist entry made through the admin API (the file's ``[allow]`` is not stored)."""

    id: str
    kind: str  # "ip" | "user"
    value: Any
    created_at: float


class AutomationStore(Protocol):
    """Storage methods automation needs; safe to call from several threads. Changes to blocks and playbooks bump the
    actions version in the same transaction and return the new version."""

    def store_events(self, events: Sequence[EventRecord]) -> list[EventRecord]:
        """Store events (skipping ids already stored) and return the ones that were new, in order."""
        ...

    def scan_events(
        self, names: Sequence[str], since: float, until: float, batch: int = 2000,
        fields: frozenset[str] = frozenset({"properties", "user_identifiers", "request"}),
    ) -> Iterator[list[EventRecord]]:
        """Events of these names with since <= ts < until, oldest first (ts, then seq), in chunks; only the JSON
        fields named in ``fields`` (properties, user_identifiers, request) need be filled in."""
        ...

    def actions_version(self) -> int: ...

    def bump_actions_version(self) -> int: ...

    def insert_block(self, block: Block) -> int: ...

    def set_block_expiry(self, block_id: str, expires_at: float | None) -> int: ...

    def lift_block(self, block_id: str, at: float) -> tuple[Block | None, int]: ...

    def get_block(self, block_id: str) -> Block | None: ...

    def list_blocks(self, *, include_inactive: bool, now: float, limit: int = 10_000) -> list[Block]: ...

    def insert_firing(self, firing: Firing) -> None: ...

    def list_firings(
        self, *, playbook: str | None, since: float | None, limit: int, after: tuple[float, int] | None
    ) -> list[Firing]: ...

    def save_playbook(self, name: str, definition: dict[str, Any], at: float) -> int: ...

    def delete_playbook(self, name: str) -> int: ...

    def load_playbooks(self) -> list[dict[str, Any]]: ...

    def add_allow(self, entry: AllowEntry) -> None: ...

    def remove_allow(self, entry_id: str) -> bool: ...

    def list_allow(self) -> list[AllowEntry]: ...

    def save_protected(self, networks: Sequence[str], at: float) -> None: ...

    def load_protected(self) -> list[str]: ...
