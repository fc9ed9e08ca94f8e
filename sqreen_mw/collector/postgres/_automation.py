"""The :class:`~sqreen_mw.collector.automation.store.AutomationStore` methods on PostgreSQL, mixed into
:class:`~.storage.PostgresStorage`: blocks, firings, API-made playbooks, the allowlist, the actions version.

Each change to the actions bumps the version row and sends ``NOTIFY sqreen_mw_actions`` in the same transaction:
PostgreSQL delivers the notification at commit, so a listener never hears of a change it cannot yet read.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .._records import EventRecord
from .._sqlite_automation import ALL_FIELDS, _blocked, _dump
from ..automation.store import AllowEntry, Block, Firing

__all__ = ["CHANNEL", "AutomationTables"]

#: The LISTEN/NOTIFY channel of actions-version changes; the payload is the new version.
CHANNEL = "sqreen_mw_actions"
_BLOCK_COLUMNS = "id, kind, value, reason, playbook, created_at, expires_at, lifted_at, firing_id"
_FIRING_COLUMNS = "id, playbook, actor_kind, actor_value, at, count, event_ids, responses, seq"


def _block(row: Sequence[Any]) -> Block:
    return Block(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6], row[7], row[8])


def _firing(row: Sequence[Any]) -> Firing:
    return Firing(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], json.loads(row[6]),
                  json.loads(row[7]), row[8])


def _firing_key(kind: str, value: Any) -> str:
    from ..automation.service import actor_key, actor_text  # the text automation names hits by

    return actor_text(actor_key(kind, value))


class AutomationTables:
    """Automation's tables; the host class provides ``_tx`` and ``_in_transaction``."""

    _tx: Callable[[], Any]
    _in_transaction: Callable[[Callable[[Any], Any]], Any]

    @staticmethod
    def _bump(conn: Any) -> int:
        version = int(conn.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'actions_version' RETURNING value").fetchone()[0])
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(version)))
        return version

    # --- events ---------------------------------------------------------------------------------------------

    def scan_events(
        self, names: Sequence[str], since: float, until: float, batch: int = 2000,
        fields: frozenset[str] = ALL_FIELDS,
    ) -> Iterator[list[EventRecord]]:
        """Events of these names with since <= ts < until, oldest first (ts, then seq), in chunks of ``batch``;
        each name walks its (name, ts, seq) index from a cursor and the names are merged."""
        walks = [self._scan_name(name, since, until, batch, fields) for name in dict.fromkeys(names)]
        merged = walks[0] if len(walks) == 1 else heapq.merge(*walks, key=lambda e: (e.ts, e.seq))
        chunk: list[EventRecord] = []
        for event in merged:
            chunk.append(event)
            if len(chunk) >= batch:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _scan_name(
        self, name: str, since: float, until: float, batch: int, fields: frozenset[str]
    ) -> Iterator[EventRecord]:
        want_props, want_users, want_request = (f in fields for f in ("properties", "user_identifiers", "request"))
        sql = (
            "SELECT seq, id, name, ts, received_at, app, client_ip, properties, user_identifiers, request"
            " FROM events WHERE name = %s AND ts >= %s AND ts < %s AND (ts, seq) > (%s, %s)"
            " ORDER BY ts, seq LIMIT %s"
        )
        after: tuple[float, int] = (since, -1)
        while True:
            with self._tx() as conn:
                rows = conn.execute(sql, (name, since, until, *after, batch)).fetchall()
            for row in rows:
                users = None if row[8] is None or not want_users else json.loads(row[8])
                request = None if row[9] is None or not want_request else json.loads(row[9])
                yield EventRecord(
                    row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]) if want_props else {}, users,
                    request, None, tuple(str(v) for v in users.values()) if users else (), row[0],
                    _blocked(row[9], request),
                )  # fmt: skip
            if len(rows) < batch:
                return
            after = (rows[-1][3], rows[-1][0])

    # --- actions version, blocks ----------------------------------------------------------------------------

    def actions_version(self) -> int:
        with self._tx() as conn:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'actions_version'").fetchone()[0])

    def bump_actions_version(self) -> int:
        return int(self._in_transaction(self._bump))

    def insert_block(self, block: Block) -> int:
        """Store a block; return the new actions version."""
        b = block

        def work(conn: Any) -> int:
            conn.execute(
                f"INSERT INTO blocks ({_BLOCK_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",  # noqa: S608
                (b.id, b.kind, _dump(b.value), b.reason, b.playbook, b.created_at, b.expires_at, b.lifted_at,
                 b.firing_id),
            )
            return self._bump(conn)

        return int(self._in_transaction(work))

    def set_block_expiry(self, block_id: str, expires_at: float | None) -> int:
        """Extend (or shorten) an active block; return the new actions version."""

        def work(conn: Any) -> int:
            conn.execute("UPDATE blocks SET expires_at = %s WHERE id = %s", (expires_at, block_id))
            return self._bump(conn)

        return int(self._in_transaction(work))

    def lift_block(self, block_id: str, at: float) -> tuple[Block | None, int]:
        """Lift an active block: (the block as lifted, new version), or (None, version) when none was active."""

        def work(conn: Any) -> tuple[Block | None, int]:
            row = conn.execute(
                f"UPDATE blocks SET lifted_at = %s WHERE id = %s AND lifted_at IS NULL"  # noqa: S608
                f" RETURNING {_BLOCK_COLUMNS}", (at, block_id),
            ).fetchone()
            if row is None:
                version = conn.execute("SELECT value FROM meta WHERE key = 'actions_version'").fetchone()[0]
                return None, int(version)
            return _block(row), self._bump(conn)

        result: tuple[Block | None, int] = self._in_transaction(work)
        return result

    def get_block(self, block_id: str) -> Block | None:
        with self._tx() as conn:
            row = conn.execute(f"SELECT {_BLOCK_COLUMNS} FROM blocks WHERE id = %s", (block_id,)).fetchone()  # noqa: S608
        return None if row is None else _block(row)

    def list_blocks(self, *, include_inactive: bool, now: float, limit: int = 10_000) -> list[Block]:
        """Active blocks (or all, newest first, with ``include_inactive``)."""
        if include_inactive:
            sql, args = f"SELECT {_BLOCK_COLUMNS} FROM blocks ORDER BY seq DESC LIMIT %s", (limit,)  # noqa: S608
        else:
            sql = (
                f"SELECT {_BLOCK_COLUMNS} FROM blocks WHERE lifted_at IS NULL"  # noqa: S608
                " AND (expires_at IS NULL OR expires_at > %s) ORDER BY seq DESC LIMIT %s"
            )
            args = (now, limit)  # type: ignore[assignment]
        with self._tx() as conn:
            return [_block(row) for row in conn.execute(sql, args)]

    # --- firings --------------------------------------------------------------------------------------------

    def insert_firing(self, firing: Firing) -> None:
        f = firing
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO firings (id, playbook, actor_kind, actor_value, actor_key, at, count, event_ids,"
                " responses) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (f.id, f.playbook, f.actor_kind, _dump(f.actor_value), _firing_key(f.actor_kind, f.actor_value),
                 f.at, f.count, _dump(f.event_ids), _dump(f.responses)),
            )

    def list_firings(
        self, *, playbook: str | None, since: float | None, limit: int, after: tuple[float, int] | None
    ) -> list[Firing]:
        """Firings newest first (at, then seq, descending)."""
        where: list[str] = []
        args: list[Any] = []
        if playbook is not None:
            where.append("playbook = %s")
            args.append(playbook)
        if since is not None:
            where.append("at >= %s")
            args.append(since)
        if after is not None:
            where.append("(at, seq) < (%s, %s)")
            args.extend(after)
        clause = " WHERE " + " AND ".join(where) if where else ""
        sql = f"SELECT {_FIRING_COLUMNS} FROM firings{clause} ORDER BY at DESC, seq DESC LIMIT %s"  # noqa: S608
        with self._tx() as conn:
            return [_firing(row) for row in conn.execute(sql, [*args, limit])]

    # --- playbooks, allowlist, protected networks -------------------------------------------------------------

    def save_playbook(self, name: str, definition: dict[str, Any], at: float) -> int:
        def work(conn: Any) -> int:
            conn.execute(
                "INSERT INTO playbooks (name, definition, updated_at) VALUES (%s, %s, %s) ON CONFLICT (name)"
                " DO UPDATE SET definition = excluded.definition, updated_at = excluded.updated_at",
                (name, _dump(definition), at),
            )
            return self._bump(conn)

        return int(self._in_transaction(work))

    def delete_playbook(self, name: str) -> int:
        def work(conn: Any) -> int:
            conn.execute("DELETE FROM playbooks WHERE name = %s", (name,))
            return self._bump(conn)

        return int(self._in_transaction(work))

    def load_playbooks(self) -> list[dict[str, Any]]:
        with self._tx() as conn:
            rows = conn.execute("SELECT definition FROM playbooks ORDER BY name").fetchall()
        return [json.loads(row[0]) for row in rows]

    def add_allow(self, entry: AllowEntry) -> None:
        with self._tx() as conn:
            conn.execute("INSERT INTO allowlist (id, kind, value, created_at) VALUES (%s, %s, %s, %s)",
                         (entry.id, entry.kind, _dump(entry.value), entry.created_at))

    def remove_allow(self, entry_id: str) -> bool:
        with self._tx() as conn:
            return int(conn.execute("DELETE FROM allowlist WHERE id = %s", (entry_id,)).rowcount) == 1

    def list_allow(self) -> list[AllowEntry]:
        with self._tx() as conn:
            rows = conn.execute("SELECT id, kind, value, created_at FROM allowlist ORDER BY created_at").fetchall()
        return [AllowEntry(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def save_protected(self, networks: Sequence[str], at: float) -> None:
        with self._tx() as conn:
            conn.cursor().executemany(
                "INSERT INTO protected_networks (network, seen_at) VALUES (%s, %s) ON CONFLICT (network)"
                " DO UPDATE SET seen_at = excluded.seen_at", [(n, at) for n in networks])

    def load_protected(self) -> list[str]:
        with self._tx() as conn:
            return [str(r[0]) for r in conn.execute("SELECT network FROM protected_networks")]
