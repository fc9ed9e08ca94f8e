"""The explorer's rollup tables on SQLite: counts maintained at ingest, and the backfill of older databases.

Rollups are updated in the transaction that stores the events (:func:`update_rollups`, called from
``SQLiteStorage._insert``), so they are never ahead of or behind the events:

- ``explorer_minute (minute, name, n)``: events per minute and name, the chart of short ranges;
- ``explorer_hour (kind, hour, value, n)``: per hour, events by name (kind 0), client IP (1), user (2), app (3) and
  login outcome of ``sq.auth_track`` (4): the chart of long ranges, totals and the top lists.

A database made before the rollups existed gets them on first open: the schema script records the highest event seq
already stored (in the transaction that creates the tables, so no insert slips between), later events are counted at
ingest, and :func:`backfill_step` counts the older ones a chunk per short transaction, in the background, so neither
ingest nor the pages wait for the whole history.
"""

from __future__ import annotations

import json
import json.encoder
import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ._records import EventRecord

try:
    import orjson
except ImportError:  # pragma: no cover - exercised by the tests with orjson hidden
    orjson = None  # type: ignore[assignment]

__all__ = ["ROLLUP_SCHEMA", "backfill_progress", "backfill_step", "record", "update_rollups", "user_key"]

ROLLUP_SCHEMA = """
CREATE TABLE IF NOT EXISTS explorer_minute (
    minute INTEGER NOT NULL,
    name TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (minute, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS explorer_hour (
    kind INTEGER NOT NULL,
    hour INTEGER NOT NULL,
    value TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (kind, hour, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS explorer_backfill (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_seq INTEGER NOT NULL,
    until_seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO explorer_backfill SELECT 1, 1, coalesce(max(seq), 0) FROM events
"""

KIND_NAME, KIND_IP, KIND_USER, KIND_APP, KIND_LOGIN = 0, 1, 2, 3, 4
_KINDS = (KIND_NAME, KIND_IP, KIND_USER, KIND_APP, KIND_LOGIN)
LOGIN_EVENT = "sq.auth_track"
#: Events counted per backfill transaction: short enough that ingest barely notices.
BACKFILL_CHUNK = 5000
EVENT_COLUMNS = "seq, id, name, ts, received_at, app, client_ip, properties, user_identifiers, request, body"
_UPSERT_MINUTE = (
    "INSERT INTO explorer_minute (minute, name, n) VALUES (?, ?, ?)"
    " ON CONFLICT (minute, name) DO UPDATE SET n = n + excluded.n"
)
_UPSERT_HOUR = (
    "INSERT INTO explorer_hour (kind, hour, value, n) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (kind, hour, value) DO UPDATE SET n = n + excluded.n"
)
_quote = json.encoder.encode_basestring_ascii


def _stdlib_user_key(identifiers: dict[str, Any]) -> str:
    # Canonical JSON (sorted keys, ASCII) of an identifier map, built by hand: json.dumps costs several times more,
    # once per event at ingest. Values are str or int (the validator made sure).
    items = sorted(identifiers.items()) if len(identifiers) > 1 else identifiers.items()
    return "{" + ",".join(f"{_quote(k)}:{_quote(v) if type(v) is str else int(v)}" for k, v in items) + "}"


def _orjson_user_key(identifiers: dict[str, Any]) -> str:
    # The same text, 4x faster, wherever orjson writes the stdlib's bytes: ASCII without U+007F (which the stdlib
    # escapes), integers within 64 bits (the validator made sure).
    try:
        out: bytes = orjson.dumps(identifiers, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # a lone surrogate
        return _stdlib_user_key(identifiers)
    if out.isascii() and b"\x7f" not in out:
        return out.decode()
    return _stdlib_user_key(identifiers)


_user_key = _stdlib_user_key if orjson is None else _orjson_user_key


def user_key(identifiers: dict[str, Any] | None) -> str | None:
    """The text a user is counted under in the rollups: its identifier map as canonical JSON."""
    return None if not identifiers else _user_key(identifiers)


def update_rollups(db: sqlite3.Connection, fresh: Sequence[tuple[int, EventRecord]]) -> None:
    """Add newly stored events to the rollup tables, inside the caller's transaction."""
    if not fresh:
        return
    # Counted by Counter() in C over plain values, one hour at a time (a batch nearly always falls in one hour):
    # building and hashing a (kind, hour, value) tuple per event and key, then sorting those tuples, cost ~3x more.
    events = [e for _, e in fresh]
    minutes = [int(e.ts // 60) for e in events]
    names = [e.name for e in events]
    minute_keys = Counter(zip(minutes, names, strict=True))
    hours = [minute // 60 for minute in minutes]
    distinct = set(hours)
    if len(distinct) == 1:
        groups = [(hours[0], events, names)]
    else:
        groups = []
        for hour in sorted(distinct):
            chosen = [e for h, e in zip(hours, events, strict=True) if h == hour]
            groups.append((hour, chosen, [e.name for e in chosen]))
    user = _user_key
    counts: dict[int, list[tuple[int, Counter[str]]]] = {kind: [] for kind in _KINDS}
    for hour, chosen, chosen_names in groups:
        counts[KIND_NAME].append((hour, Counter(chosen_names)))
        counts[KIND_APP].append((hour, Counter([e.app for e in chosen])))
        counts[KIND_IP].append((hour, Counter([e.client_ip for e in chosen if e.client_ip is not None])))
        counts[KIND_USER].append((hour, Counter([user(e.user_identifiers) for e in chosen if e.user_identifiers])))
        if LOGIN_EVENT in chosen_names:
            counts[KIND_LOGIN].append((hour, Counter([
                "success" if e.properties.get("success") is True else "failure"
                for e in chosen if e.name == LOGIN_EVENT
            ])))  # fmt: skip
    # In key order (kind, hour, value): B-tree upserts in key order touch far fewer pages. Sorting the plain strings
    # of each group is what keeps it cheap.
    db.executemany(_UPSERT_MINUTE, sorted([(m, name, n) for (m, name), n in minute_keys.items()]))
    db.executemany(
        _UPSERT_HOUR,
        [(kind, hour, value, n[value]) for kind in _KINDS for hour, n in counts[kind] for value in sorted(n)],
    )


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def record(row: Sequence[Any]) -> EventRecord:
    """An event from a row of :data:`EVENT_COLUMNS`."""
    users = _load(row[8])
    return EventRecord(
        row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]), users, _load(row[9]), _load(row[10]),
        tuple(str(v) for v in users.values()) if users else (), row[0],
    )  # fmt: skip


def backfill_progress(db: sqlite3.Connection) -> tuple[int, int] | None:
    """(events counted, events to count) of a running backfill, or None when the rollups are complete."""
    row = db.execute("SELECT next_seq, until_seq FROM explorer_backfill WHERE id = 1").fetchone()
    if row is None or row[0] > row[1]:
        return None
    return row[0] - 1, row[1]


def backfill_step(db: sqlite3.Connection, chunk: int | None = None) -> bool:
    """Count the next ``chunk`` (default :data:`BACKFILL_CHUNK`) older events into the rollups, in one transaction;
    False once there are none left."""
    chunk = BACKFILL_CHUNK if chunk is None else chunk
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT next_seq, until_seq FROM explorer_backfill WHERE id = 1").fetchone()
        if row is None or row[0] > row[1]:
            db.execute("COMMIT")
            return False
        start, until = int(row[0]), int(row[1])
        end = min(start + chunk - 1, until)
        rows = db.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq >= ? AND seq <= ?",  # noqa: S608 - fixed columns
            (start, end),
        ).fetchall()
        update_rollups(db, [(r[0], record(r)) for r in rows])
        db.execute("UPDATE explorer_backfill SET next_seq = ? WHERE id = 1", (end + 1,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return end < until
