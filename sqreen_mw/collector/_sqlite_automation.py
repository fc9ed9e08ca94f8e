"""SQLite tables of automation (blocks, firings, playbooks, allowlist, the actions version): a mixin of
:class:`~sqreen_mw.collector._sqlite.SQLiteStorage`, sharing its connection and lock.

The tables are created with ``IF NOT EXISTS`` and nothing else reads them, so a database that has them still opens
with a version of the collector that does not know them: they need no schema version of their own.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from ._records import EventRecord
from .automation.store import AllowEntry, Block, Firing

AUTOMATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('actions_version', 0);
CREATE TABLE IF NOT EXISTS blocks (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    reason TEXT NOT NULL,
    playbook TEXT,
    firing_id TEXT,
    created_at REAL NOT NULL,
    expires_at REAL,
    lifted_at REAL
);
CREATE INDEX IF NOT EXISTS blocks_active ON blocks (lifted_at, expires_at);
CREATE TABLE IF NOT EXISTS firings (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    playbook TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_value TEXT NOT NULL,
    at REAL NOT NULL,
    count INTEGER NOT NULL,
    event_ids TEXT NOT NULL,
    responses TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS firings_at ON firings (at);
CREATE INDEX IF NOT EXISTS firings_playbook_at ON firings (playbook, at);
CREATE TABLE IF NOT EXISTS playbooks (name TEXT PRIMARY KEY, definition TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS allowlist (id TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL,
                                      created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS protected_networks (network TEXT PRIMARY KEY, seen_at REAL NOT NULL);
"""

#: The JSON columns :meth:`AutomationTables.scan_events` can decode.
ALL_FIELDS = frozenset({"properties", "user_identifiers", "request"})
_BLOCK_COLUMNS = "id, kind, value, reason, playbook, created_at, expires_at, lifted_at, firing_id"
_FIRING_COLUMNS = "id, playbook, actor_kind, actor_value, at, count, event_ids, responses, seq"


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _block(row: Sequence[Any]) -> Block:
    return Block(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6], row[7], row[8])


def _firing(row: Sequence[Any]) -> Firing:
    return Firing(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], json.loads(row[6]),
                  json.loads(row[7]), row[8])


def _blocked(raw: str | None, request: Any) -> bool:
    # The request's own top-level "blocked" key (set by ingest); the text test only avoids decoding most requests.
    if raw is None or '"blocked":true' not in raw:
        return False
    decoded = json.loads(raw) if request is None else request
    return isinstance(decoded, dict) and decoded.get("blocked") is True


def new_id(prefix: str) -> str:
    """A random public id such as ``b_4f0c9a...`` (blocks), ``f_...`` (firings)."""
    return f"{prefix}_{uuid.uuid4().hex}"


class AutomationTables:
    """The :class:`~sqreen_mw.collector.automation.store.AutomationStore` methods on SQLite."""

    _lock: threading.Lock

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _bump(self, db: sqlite3.Connection) -> int:
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'actions_version'")
        return int(db.execute("SELECT value FROM meta WHERE key = 'actions_version'").fetchone()[0])

    def _in_transaction(self, work: Any) -> Any:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return result

    # --- events ---------------------------------------------------------------------------------------------

    def scan_events(
        self, names: Sequence[str], since: float, until: float, batch: int = 2000,
        fields: frozenset[str] = ALL_FIELDS,
    ) -> Iterator[list[EventRecord]]:
        """Events of these names with since <= ts < until, oldest first (ts, then seq), in chunks of ``batch``.

        Each name walks its (name, ts) index from a cursor, touching only its own rows; the names are merged in
        (ts, seq) order. Memory holds one chunk per name whatever the range holds. Only the JSON columns named in
        ``fields`` are decoded (the others are left empty): decoding is most of a replay's cost.
        """
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
            " FROM events INDEXED BY events_name_ts WHERE name = ? AND ts >= ? AND ts < ? AND (ts > ? OR seq > ?)"
            " ORDER BY ts, seq LIMIT ?"
        )  # the cursor as "ts >= cursor" bounds the index range, so each chunk starts where the last one ended
        after: tuple[float, int] = (since, -1)
        while True:
            with self._lock:
                rows = self._db().execute(sql, (name, after[0], until, *after, batch)).fetchall()
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
        with self._lock:
            return int(self._db().execute("SELECT value FROM meta WHERE key = 'actions_version'").fetchone()[0])

    def bump_actions_version(self) -> int:
        return int(self._in_transaction(self._bump))

    def insert_block(self, block: Block) -> int:
        """Store a block; return the new actions version."""
        b = block

        def work(db: sqlite3.Connection) -> int:
            db.execute(
                f"INSERT INTO blocks ({_BLOCK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (b.id, b.kind, _dump(b.value), b.reason, b.playbook, b.created_at, b.expires_at, b.lifted_at,
                 b.firing_id),
            )
            return self._bump(db)

        return int(self._in_transaction(work))

    def set_block_expiry(self, block_id: str, expires_at: float | None) -> int:
        """Extend (or shorten) an active block; return the new actions version."""

        def work(db: sqlite3.Connection) -> int:
            db.execute("UPDATE blocks SET expires_at = ? WHERE id = ?", (expires_at, block_id))
            return self._bump(db)

        return int(self._in_transaction(work))

    def lift_block(self, block_id: str, at: float) -> tuple[Block | None, int]:
        """Lift an active block: (the block as lifted, new version), or (None, version) when none was active."""

        def work(db: sqlite3.Connection) -> tuple[Block | None, int]:
            cur = db.execute("UPDATE blocks SET lifted_at = ? WHERE id = ? AND lifted_at IS NULL", (at, block_id))
            if cur.rowcount != 1:
                version = db.execute("SELECT value FROM meta WHERE key = 'actions_version'").fetchone()[0]
                return None, int(version)
            row = db.execute(f"SELECT {_BLOCK_COLUMNS} FROM blocks WHERE id = ?", (block_id,)).fetchone()  # noqa: S608
            return _block(row), self._bump(db)

        result: tuple[Block | None, int] = self._in_transaction(work)
        return result

    def get_block(self, block_id: str) -> Block | None:
        with self._lock:
            row = self._db().execute(f"SELECT {_BLOCK_COLUMNS} FROM blocks WHERE id = ?", (block_id,)).fetchone()  # noqa: S608
        return None if row is None else _block(row)

    def list_blocks(self, *, include_inactive: bool, now: float, limit: int = 10_000) -> list[Block]:
        """Active blocks (or all, newest first, with ``include_inactive``)."""
        if include_inactive:
            sql, args = f"SELECT {_BLOCK_COLUMNS} FROM blocks ORDER BY seq DESC LIMIT ?", (limit,)  # noqa: S608
        else:
            sql = (
                f"SELECT {_BLOCK_COLUMNS} FROM blocks WHERE lifted_at IS NULL"  # noqa: S608
                " AND (expires_at IS NULL OR expires_at > ?) ORDER BY seq DESC LIMIT ?"
            )
            args = (now, limit)  # type: ignore[assignment]
        with self._lock:
            return [_block(row) for row in self._db().execute(sql, args)]

    # --- firings --------------------------------------------------------------------------------------------

    def insert_firing(self, firing: Firing) -> None:
        f = firing
        with self._lock:
            self._db().execute(
                "INSERT INTO firings (id, playbook, actor_kind, actor_value, at, count, event_ids, responses)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (f.id, f.playbook, f.actor_kind, _dump(f.actor_value), f.at, f.count, _dump(f.event_ids),
                 _dump(f.responses)),
            )

    def list_firings(
        self, *, playbook: str | None, since: float | None, limit: int, after: tuple[float, int] | None
    ) -> list[Firing]:
        """Firings newest first (at, then seq, descending)."""
        where: list[str] = []
        args: list[Any] = []
        if playbook is not None:
            where.append("playbook = ?")
            args.append(playbook)
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if after is not None:
            where.append("(at, seq) < (?, ?)")
            args.extend(after)
        clause = " WHERE " + " AND ".join(where) if where else ""
        sql = f"SELECT {_FIRING_COLUMNS} FROM firings{clause} ORDER BY at DESC, seq DESC LIMIT ?"  # noqa: S608
        with self._lock:
            return [_firing(row) for row in self._db().execute(sql, [*args, limit])]

    # --- playbooks, allowlist, protected networks -------------------------------------------------------------

    def save_playbook(self, name: str, definition: dict[str, Any], at: float) -> int:
        def work(db: sqlite3.Connection) -> int:
            db.execute("INSERT OR REPLACE INTO playbooks (name, definition, updated_at) VALUES (?, ?, ?)",
                       (name, _dump(definition), at))
            return self._bump(db)

        return int(self._in_transaction(work))

    def delete_playbook(self, name: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM playbooks WHERE name = ?", (name,))
            return self._bump(db)

        return int(self._in_transaction(work))

    def load_playbooks(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db().execute("SELECT definition FROM playbooks ORDER BY name").fetchall()
        return [json.loads(row[0]) for row in rows]

    def add_allow(self, entry: AllowEntry) -> None:
        with self._lock:
            self._db().execute("INSERT INTO allowlist (id, kind, value, created_at) VALUES (?, ?, ?, ?)",
                               (entry.id, entry.kind, _dump(entry.value), entry.created_at))

    def remove_allow(self, entry_id: str) -> bool:
        with self._lock:
            return self._db().execute("DELETE FROM allowlist WHERE id = ?", (entry_id,)).rowcount == 1

    def list_allow(self) -> list[AllowEntry]:
        with self._lock:
            rows = self._db().execute("SELECT id, kind, value, created_at FROM allowlist ORDER BY created_at")
            return [AllowEntry(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def save_protected(self, networks: Sequence[str], at: float) -> None:
        with self._lock:
            self._db().executemany("INSERT OR REPLACE INTO protected_networks (network, seen_at) VALUES (?, ?)",
                                   [(n, at) for n in networks])

    def load_protected(self) -> list[str]:
        with self._lock:
            return [str(r[0]) for r in self._db().execute("SELECT network FROM protected_networks")]
