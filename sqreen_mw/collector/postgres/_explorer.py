"""The Event Explorer's queries on PostgreSQL (a mixin of :class:`~.storage.PostgresStorage`), the same answers as
on SQLite (:mod:`.._sqlite_explorer`).

The overview reads two rollup tables kept in the transaction that stores the events (:data:`COUNT_FRESH`), so
they are never ahead of or behind the events, whichever replica stored them:

- ``explorer_minute (minute, name, n)``: events per minute and name, the chart of short ranges;
- ``explorer_hour (kind, hour, value, n)``: per hour, events by name (kind 0), client IP (1), user (2), app (3) and
  login outcome of ``sq.auth_track`` (4): the chart of long ranges, totals and the top lists.

A batch only appends its grouped counts to ``explorer_minute_delta`` and ``explorer_hour_delta`` (schema version 5):
tables with no index, so a batch makes no conflict check, updates no row and waits for no other batch. Every few
seconds one replica folds the deltas into the keyed tables (:mod:`._fold`), and the views read the keyed rows plus
the deltas not folded yet, in one statement (one snapshot: a fold moves counts atomically, so each is read once).
The keyed tables' ``shard`` column is from schema version 4, whose batches counted up one of :data:`SHARDS` rows per
key in place; folds write shard 0 and merge the others of past hours into it.

Breakdowns and filtered listings walk the events
through the ``(ts, seq)`` / ``(name, ts, seq)`` / ``(ip_key, ts, seq)`` / ``event_users`` indexes, newest first,
bounded like SQLite's (:data:`~.._sqlite_explorer.BREAKDOWN_SCAN` events at most per breakdown).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from .. import _sqlite_explorer as _shared
from .._records import EventRecord, ip_key
from .._sqlite_explorer import BreakdownRow, ExplorerFilter, Overview
from .._sqlite_rollups import KIND_APP, KIND_IP, KIND_LOGIN, KIND_NAME, KIND_USER, LOGIN_EVENT, user_key

__all__ = [
    "COUNT_FRESH", "DELTA_TABLES", "ROLLUP_TABLES", "SHARDS", "ExplorerQueries", "backfill_rollups", "rollup_keys",
    "update_rollups", "user_events",
]

#: Schema version 2: the rollup tables (byte-ordered text, as every indexed text column of the schema), and the
#: event's name on its user rows, so a user's timeline counts names without reading the events.
ROLLUP_TABLES = """
ALTER TABLE event_users ADD COLUMN IF NOT EXISTS name text COLLATE "C";
CREATE TABLE IF NOT EXISTS explorer_minute (
    minute bigint NOT NULL,
    name text COLLATE "C" NOT NULL,
    shard smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (minute, name, shard)
);
CREATE TABLE IF NOT EXISTS explorer_hour (
    kind smallint NOT NULL,
    hour bigint NOT NULL,
    value text COLLATE "C" NOT NULL,
    shard smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (kind, hour, value, shard)
);
"""
#: Schema version 5: the counts of batches not folded yet, appended as they are (see the module's docstring). No
#: index: a batch's rows are only ever read whole, by a fold or by a view's scan, and the folds keep them few.
DELTA_TABLES = """
CREATE TABLE IF NOT EXISTS explorer_minute_delta (
    minute bigint NOT NULL,
    name text COLLATE "C" NOT NULL,
    n bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS explorer_hour_delta (
    kind smallint NOT NULL,
    hour bigint NOT NULL,
    value text COLLATE "C" NOT NULL,
    n bigint NOT NULL
);
"""
_EVENT_COLUMNS = "seq, id, name, ts, received_at, app, client_ip, properties, user_identifiers, request, body"
_UPSERT_MINUTE = """
INSERT INTO explorer_minute (minute, name, n, shard)
SELECT *, %b::smallint FROM unnest(%b::bigint[], %b::text[], %b::bigint[])
ON CONFLICT (minute, name, shard) DO UPDATE SET n = explorer_minute.n + excluded.n
"""
_UPSERT_HOUR = """
INSERT INTO explorer_hour (kind, hour, value, n, shard)
SELECT *, %b::smallint FROM unnest(%b::smallint[], %b::bigint[], %b::text[], %b::bigint[])
ON CONFLICT (kind, hour, value, shard) DO UPDATE SET n = explorer_hour.n + excluded.n
"""
#: Rows per rollup key in schema version 4: each batch added to one shard, drawn at random, so that concurrent
#: batches (every one of them touching the current minute's and hour's rows) rarely waited for each other's commit;
#: readers sum the shards, folds merge them.
SHARDS = 8
_KINDS = (KIND_NAME, KIND_IP, KIND_USER, KIND_APP, KIND_LOGIN)
_GROUPS = {"name": "name", "ip": "client_ip", "app": "app", "user": "user_identifiers"}
# A property's value as JSON text (None when absent): strings, numbers and booleans stay apart ("2" vs 2, true vs 1).
_PROPERTY_JSON = "(properties::json -> %s)::text"


# Transaction-local settings of every explorer query. A breakdown's 50,000 rows are sorted for its
# count(DISTINCT ...): in memory, not in temporary files (the default work_mem, 4 MB, spills them). Each query reads a
# bounded number of rows along an index, which is where the planner's cost estimates (the whole range's rows) are
# furthest off: JIT compilation (70 ms spent compiling a 15 ms walk, measured) and parallel workers (started for a
# walk that stops after a page) cost more than they save.
_AGGREGATE = ("SET LOCAL work_mem = '32MB'", "SET LOCAL jit = off", "SET LOCAL max_parallel_workers_per_gather = 0")
# PostgreSQL has no statistics on a property's JSON value, so it guesses that a handful of rows match it and plans a
# scan of the whole table (and a sort) rather than walking the (ts, seq) index newest first until the page is full,
# which stops after a few hundred rows whenever the property is common: 1.2 s against a few ms on 1,000,000
# events. A property filter walks an index, as SQLite does (a rare property then reads the index to the end).
_WALK = (*_AGGREGATE, "SET LOCAL enable_seqscan = off", "SET LOCAL enable_bitmapscan = off",
         "SET LOCAL enable_sort = off")


#: The rollup counts of a batch, as data-modifying CTEs of the statement that stores it (``storage._STORE_BATCH``),
#: counting its ``fresh`` rows (stored by this statement; their ``minute``, ``hour``, ``user_key`` and ``login`` come
#: from :func:`rollup_keys`), grouped in SQL and appended to the delta tables: plain inserts, no row shared with
#: any other batch, so no order to keep.
COUNT_FRESH = f"""
, minutes AS (
    INSERT INTO explorer_minute_delta (minute, name, n)
    SELECT minute, name COLLATE "C", count(*) FROM fresh GROUP BY 1, 2
), hours AS (
    INSERT INTO explorer_hour_delta (kind, hour, value, n)
    SELECT kind, hour, value COLLATE "C", count(*) FROM (
        SELECT {KIND_NAME} AS kind, hour, name AS value FROM fresh
        UNION ALL SELECT {KIND_IP}, hour, client_ip FROM fresh WHERE client_ip IS NOT NULL
        UNION ALL SELECT {KIND_USER}, hour, user_key FROM fresh WHERE user_key IS NOT NULL
        UNION ALL SELECT {KIND_APP}, hour, app FROM fresh
        UNION ALL SELECT {KIND_LOGIN}, hour, login FROM fresh WHERE login IS NOT NULL
    ) AS k GROUP BY 1, 2, 3
)"""  # noqa: S608 - constants only
# The overview's reads of the rollups: the deltas of its range not folded yet, once, grouped (few rows: the folds keep
# them few), then the keyed rows of the range with those deltas' sums, per query. One snapshot for all (the
# transaction is REPEATABLE READ), so a fold committed meanwhile cannot make a count appear twice or not at all.
_HOUR_DELTAS = """
SELECT kind, CASE WHEN kind = 0 THEN hour END, value, sum(n)::bigint FROM explorer_hour_delta
WHERE hour >= %s AND hour < %s GROUP BY 1, 2, 3
"""
_MINUTE_DELTAS = """
SELECT minute, name, sum(n)::bigint FROM explorer_minute_delta WHERE minute >= %s AND minute < %s GROUP BY 1, 2
"""
_TOP = """
SELECT value, sum(n) AS c FROM (
    SELECT value, n FROM explorer_hour WHERE kind = %s AND hour >= %s AND hour < %s
    UNION ALL SELECT * FROM unnest(%b::text[], %b::bigint[])
) AS r GROUP BY value ORDER BY c DESC, value LIMIT %s
"""


def rollup_keys(events: Sequence[EventRecord]) -> list[list[Any]]:
    """The per-event columns :data:`COUNT_FRESH` counts by: minute, hour, user key (None without users) and login
    outcome (None unless a login event), as :func:`update_rollups` derives them."""
    minutes = [int(e.ts // 60) for e in events]
    return [
        minutes, [m // 60 for m in minutes],
        [user_key(e.user_identifiers) if e.user_identifiers else None for e in events],
        [("success" if e.properties.get("success") is True else "failure") if e.name == LOGIN_EVENT else None
         for e in events],
    ]  # fmt: skip


def _columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def update_rollups(conn: Any, fresh: Sequence[EventRecord]) -> None:
    """Add stored events to the keyed rollup rows (shard 0), inside the caller's transaction: the backfill of the
    migration to schema version 2 (batches append to the delta tables instead, :data:`COUNT_FRESH`)."""
    if not fresh:
        return
    minutes: Counter[tuple[int, str]] = Counter()
    hours: Counter[tuple[int, int, str]] = Counter()
    for e in fresh:
        minute = int(e.ts // 60)
        hour = minute // 60
        minutes[minute, e.name] += 1
        hours[KIND_NAME, hour, e.name] += 1
        hours[KIND_APP, hour, e.app] += 1
        if e.client_ip is not None:
            hours[KIND_IP, hour, e.client_ip] += 1
        if e.user_identifiers:
            hours[KIND_USER, hour, user_key(e.user_identifiers) or ""] += 1
        if e.name == LOGIN_EVENT:
            hours[KIND_LOGIN, hour, "success" if e.properties.get("success") is True else "failure"] += 1
    # Sorted, in one order for every replica (minutes, then hours; keys ascending, as the "C" collation compares
    # text, byte by byte: UTF-8 bytes sort as code points, as Python sorts str): concurrent batches lock the rows
    # they share in the same order, so they queue instead of deadlocking.
    conn.execute(_UPSERT_MINUTE, [0, *_columns(sorted((m, name, n) for (m, name), n in minutes.items()))])
    conn.execute(_UPSERT_HOUR, [0, *_columns(sorted((k, h, v, n) for (k, h, v), n in hours.items()))])


def backfill_rollups(conn: Any, record: Callable[[Sequence[Any]], EventRecord], chunk: int = 20_000) -> None:
    """Count every stored event into the (new, empty) rollup tables and name its user rows, in the caller's
    transaction: the migration to schema version 2. ``LOCK TABLE`` holds back inserts meanwhile, so no event is
    counted twice or missed."""
    conn.execute("LOCK TABLE events IN SHARE MODE")
    conn.execute("UPDATE event_users AS u SET name = e.name FROM events AS e WHERE e.ts = u.ts AND e.seq = u.seq")
    last = 0
    while True:
        rows = conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > %s ORDER BY seq LIMIT %s",  # noqa: S608 - fixed
            (last, chunk),
        ).fetchall()
        if not rows:
            return
        update_rollups(conn, [record(row) for row in rows])
        last = int(rows[-1][0])


def user_events(alias: str) -> str:
    """The FROM clause of the events of a user's rows (``u``, walked in its index's order), each event ``alias``.

    An event is found by its (ts, seq), the key of events_ts (schema version 6 has no index on seq alone). A plain
    join on both columns makes PostgreSQL multiply their selectivities: it expects one row of the whole join, then
    hashes the user's rows with the events and sorts them (measured on 30,000 events). One lookup per user row,
    ``LIMIT 1`` (a (ts, seq) is one event), keeps the walk in order and stops with the page.
    """
    return (f"event_users AS u CROSS JOIN LATERAL (SELECT * FROM events AS x WHERE x.ts = u.ts"  # noqa: S608
            f" AND x.seq = u.seq LIMIT 1) AS {alias}")


def _prop_match(key: str, value: str, where: list[str], args: list[Any]) -> None:
    # As on SQLite: a stored string equal to the text, a boolean spelled true / false, or a number equal to it.
    clauses = ["(json_typeof(properties::json -> %s) IN ('string', 'boolean') AND properties::json ->> %s = %s)"]
    args.extend([key, key, value])
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if math.isfinite(number):
        clauses.append(
            "(CASE WHEN json_typeof(properties::json -> %s) = 'number'"
            " THEN (properties::json ->> %s)::numeric = %s::numeric END)"
        )
        args.extend([key, key, repr(number)])
    where.append("(" + " OR ".join(clauses) + ")")


def _filter_sql(f: ExplorerFilter, *, cursor: bool) -> tuple[str, str, list[Any]]:
    """(source, where clause, arguments) for the events matching ``f``; with a user, ``u`` is event_users."""
    where: list[str] = []
    args: list[Any] = []
    t = ""
    source = "events"
    if f.user is not None:
        t, source = "u.", user_events("events")
        where.append("u.value = %s")
        args.append(f.user)
    if f.name is not None:
        where.append(f"{t}name = %s")
        args.append(f.name)
    if f.since is not None:
        where.append(f"{t}ts >= %s")
        args.append(f.since)
    if f.until is not None:
        where.append(f"{t}ts < %s")
        args.append(f.until)
    if f.network is not None:  # the range of sortable address keys from the network's first to its last address
        where.append("ip_key BETWEEN %s AND %s")
        args.extend([ip_key(str(f.network.network_address)), ip_key(str(f.network.broadcast_address))])
    if f.app is not None:
        where.append("app = %s")
        args.append(f.app)
    if f.prop is not None:
        _prop_match(f.prop[0], f.prop[1], where, args)
    if cursor and f.after is not None:
        where.append(f"({t}ts, {t}seq) < (%s, %s)")
        args.extend(f.after)
    return source, (" WHERE " + " AND ".join(where)) if where else "", args


def _search_sql(f: ExplorerFilter, limit: int) -> tuple[str, list[Any]]:
    source, clause, args = _filter_sql(f, cursor=True)
    t = "u." if f.user is not None else ""
    sql = (f"SELECT {_event_columns(f)} FROM {source}{clause}"  # noqa: S608 - fixed fragments, bound values
           f" ORDER BY {t}ts DESC, {t}seq DESC LIMIT %s")
    return sql, [*args, limit]


def _event_columns(f: ExplorerFilter) -> str:
    return ", ".join(f"events.{c}" for c in _EVENT_COLUMNS.split(", ")) if f.user is not None else _EVENT_COLUMNS


def _group_value(group: str, value: Any) -> Any:
    if (group == "user" or group.startswith("property:")) and isinstance(value, str):
        return json.loads(value)
    return value


#: The explorer's reads are never prepared on the server: psycopg prepares a statement on its sixth run on a
#: connection, and from the eleventh PostgreSQL may settle on a generic plan, which for the user timeline's counts
#: took 142-273 ms instead of 14-25 ms on 1,000,000 events. Planned for their values each time instead (a fraction
#: of a millisecond for these statements).
_PREPARE = False


class ExplorerQueries:
    """Mixin of :class:`~.storage.PostgresStorage`: the explorer's read side (the host provides ``_tx`` and
    ``_event``-style row decoding through :meth:`_explorer_record`)."""

    def _tx(self) -> AbstractContextManager[Any]:  # pragma: no cover - provided by PostgresStorage
        raise NotImplementedError

    @staticmethod
    def _explorer_record(row: Sequence[Any]) -> EventRecord:  # pragma: no cover - provided by PostgresStorage
        raise NotImplementedError

    def _rows(self, sql: str, args: Sequence[Any], *, walk: bool = False) -> list[tuple[Any, ...]]:
        """Run one explorer query in its own transaction; ``walk``: make the planner walk an index in (ts, seq)
        order rather than scan and sort the table (see :data:`_WALK`)."""
        with self._tx() as conn:
            for setting in _WALK if walk else _AGGREGATE:
                conn.execute(setting)
            return list(conn.execute(sql, args, prepare=_PREPARE).fetchall())

    def rollup_backfill(self) -> tuple[int, int] | None:
        """Always None: the migration that made the rollups counted the older events in its own transaction."""
        return None

    def overview(self, since: float, until: float, bucket: int, top: int = 10) -> Overview:
        """Counts per name in buckets of ``bucket`` seconds (a multiple of 60), totals and top lists of the range.

        Buckets of an hour or more come from the hourly rollup, and the range is then widened to whole hours; the
        top lists always count whole hours (the hours the range touches).
        """
        bucket = int(bucket)
        if bucket < 60 or bucket % 60:
            raise ValueError(f"bucket must be a whole number of minutes in seconds, got {bucket}")
        out = Overview(bucket=bucket)
        hour_lo, hour_hi = int(since // 3600), int(-(-until // 3600))
        tops: dict[int, list[tuple[str, int]]] = {}
        with self._tx() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            for setting in _AGGREGATE:
                conn.execute(setting)
            deltas: dict[int, tuple[list[str], list[int]]] = {kind: ([], []) for kind in _KINDS}
            chart: list[tuple[int, str, int]] = []  # (minute or hour, name, n) of the deltas
            for kind, hour, value, n in conn.execute(_HOUR_DELTAS, (hour_lo, hour_hi), prepare=_PREPARE).fetchall():
                deltas[kind][0].append(value)
                deltas[kind][1].append(n)
                if hour is not None:
                    chart.append((hour, value, n))
            if bucket % 3600 == 0:
                per = bucket // 3600
                rows = conn.execute(
                    "SELECT hour / %s AS b, value, sum(n) FROM explorer_hour WHERE kind = 0 AND hour >= %s"
                    " AND hour < %s GROUP BY b, value",
                    (per, hour_lo, hour_hi), prepare=_PREPARE,
                ).fetchall()
                first, last = hour_lo // per, (hour_hi - 1) // per
            else:
                per = bucket // 60
                lo, hi = int(since // 60), int(-(-until // 60))
                rows = conn.execute(
                    "SELECT minute / %s AS b, name, sum(n) FROM explorer_minute WHERE minute >= %s AND minute < %s"
                    " GROUP BY b, name",
                    (per, lo, hi), prepare=_PREPARE,
                ).fetchall()
                chart = conn.execute(_MINUTE_DELTAS, (lo, hi), prepare=_PREPARE).fetchall()
                first, last = lo // per, (hi - 1) // per
            rows.extend((at // per, name, n) for at, name, n in chart)
            for kind in _KINDS:
                tops[kind] = [
                    (str(value), int(n))
                    for value, n in conn.execute(
                        _TOP, (kind, hour_lo, hour_hi, *deltas[kind], top if kind != KIND_NAME else 1000),
                        prepare=_PREPARE,
                    ).fetchall()
                ]
        out.times = [b * bucket for b in range(first, last + 1)]
        index = {b: i for i, b in enumerate(range(first, last + 1))}
        for b, name, n in rows:
            out.series.setdefault(name, [0] * len(out.times))[index[b]] += int(n)
        names = tops[KIND_NAME]
        out.total = sum(n for _, n in names)
        out.names = names[:top]
        out.ips, out.users, out.apps = tops[KIND_IP], tops[KIND_USER], tops[KIND_APP]
        out.logins = dict(tops[KIND_LOGIN])
        return out

    def search_events(self, f: ExplorerFilter, limit: int) -> list[EventRecord]:
        """Events matching ``f``, newest first (ts, then seq, descending), at most ``limit``."""
        sql, args = _search_sql(f, limit)
        return [self._explorer_record(row) for row in self._rows(sql, args, walk=f.prop is not None)]

    def search_plan(self, f: ExplorerFilter, limit: int) -> list[str]:
        """PostgreSQL's ``EXPLAIN`` of :meth:`search_events` (tests and diagnostics)."""
        sql, args = _search_sql(f, limit)
        return [str(row[0]) for row in self._rows(f"EXPLAIN {sql}", args, walk=f.prop is not None)]

    def get_event(self, event_id: str) -> EventRecord | None:
        """The stored event with this id, or None."""
        rows = self._rows(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = %s", (event_id,))  # noqa: S608
        return self._explorer_record(rows[0]) if rows else None

    def breakdown(self, f: ExplorerFilter, group: str, limit: int = 100) -> tuple[list[BreakdownRow], int, bool]:
        """Groups of the events matching ``f`` by ``group`` ("name", "ip", "app", "user" or "property:<key>").

        Reads the newest :data:`~.._sqlite_explorer.BREAKDOWN_SCAN` matching events at most.

        :return: (groups by count descending, events read, whether the scan stopped at its bound).
        :raises ValueError: unknown group, or a property key with a double quote (refused on every store alike).
        """
        args: list[Any] = []
        if group.startswith("property:"):
            key = group.removeprefix("property:")
            _shared.prop_path(key)  # the same keys as on SQLite
            expr = _PROPERTY_JSON
            args.append(key)
        elif group in _GROUPS:
            expr = _GROUPS[group] if group != "name" or f.user is None else "events.name"
        else:
            raise ValueError(f"group must be name, ip, app, user or property:<key>, got {group!r}")
        scan = _shared.BREAKDOWN_SCAN
        source, clause, fargs = _filter_sql(f, cursor=False)
        t = "u." if f.user is not None else ""
        # Counted with hash tables rather than sorts: one pass groups the scanned rows by (g), (g, user) and (g, ip),
        # the outer query reads each group's count and its numbers of distinct users and IPs off those sets
        # (GROUPING() tells them apart: 3 for (g), 1 for (g, user), 2 for (g, ip)).
        inner = (
            f"SELECT ({expr}) COLLATE \"C\" AS g, user_identifiers AS uid, client_ip AS ip"  # noqa: S608
            f" FROM {source}{clause} ORDER BY {t}ts DESC LIMIT {int(scan)}"
        )
        sets = (
            f"SELECT g, uid, ip, count(*) AS n, GROUPING(uid, ip) AS k FROM ({inner}) AS scanned"  # noqa: S608
            " GROUP BY GROUPING SETS ((g), (g, uid), (g, ip))"
        )
        sql = (
            "SELECT g, sum(n) FILTER (WHERE k = 3) AS c, count(uid) FILTER (WHERE k = 1),"  # noqa: S608
            " count(ip) FILTER (WHERE k = 2), sum(sum(n) FILTER (WHERE k = 3)) OVER ()"
            f" FROM ({sets}) AS grouped GROUP BY g ORDER BY c DESC, g NULLS LAST LIMIT %s"
        )
        rows = self._rows(sql, [*args, *fargs, limit])
        scanned = int(rows[0][4]) if rows else 0  # the window sums every group, before LIMIT
        groups = [BreakdownRow(_group_value(group, g), int(c), int(u), int(i)) for g, c, u, i, _ in rows]
        return groups, scanned, scanned >= scan

    def actor_summary(self, f: ExplorerFilter) -> tuple[list[tuple[str, int]], float | None, float | None]:
        """Per-name counts, first and last timestamp of the events matching ``f`` (one IP or one user).

        Reads the newest :data:`~.._sqlite_explorer.BREAKDOWN_SCAN` matching events at most.
        """
        source, clause, args = _filter_sql(f, cursor=False)
        t = "u." if f.user is not None else ""
        if f.user is not None and f.network is None and f.app is None and f.prop is None:
            # A user's rows carry the event's name: read them alone, not 50,000 events looked up by (ts, seq).
            source = "event_users AS u"
        inner = (f"SELECT {t}name AS name, {t}ts AS ts FROM {source}{clause}"  # noqa: S608
                 f" ORDER BY {t}ts DESC LIMIT {int(_shared.BREAKDOWN_SCAN)}")
        sql = (f"SELECT name, count(*) AS c, min(ts), max(ts) FROM ({inner}) AS scanned"  # noqa: S608
               " GROUP BY name ORDER BY c DESC, name")
        rows = self._rows(sql, args)
        if not rows:
            return [], None, None
        return [(r[0], int(r[1])) for r in rows], min(r[2] for r in rows), max(r[3] for r in rows)

