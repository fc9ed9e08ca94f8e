"""The Event Explorer's queries on SQLite (a mixin of ``SQLiteStorage``).

The overview reads the rollup tables of :mod:`._sqlite_rollups`, kept at ingest. Breakdowns and filtered listings
walk the events themselves through the ``(ts)`` / ``(client_ip, ts)`` / ``event_users`` indexes, newest first,
bounded by ``limit`` (a breakdown reads at most ``BREAKDOWN_SCAN`` events and says when it stopped there).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ._records import EventRecord
from ._sqlite_rollups import (
    EVENT_COLUMNS,
    KIND_APP,
    KIND_IP,
    KIND_LOGIN,
    KIND_NAME,
    KIND_USER,
    ROLLUP_SCHEMA,
    backfill_progress,
    backfill_step,
    record,
    update_rollups,
    user_key,
)

__all__ = [
    "BREAKDOWN_SCAN",
    "EXPLORER_SCHEMA",
    "BreakdownRow",
    "ExplorerFilter",
    "ExplorerQueries",
    "update_rollups",
    "user_key",
]

logger = logging.getLogger("sqreen_mw.collector")

#: The rollup tables, created with the rest of the schema.
EXPLORER_SCHEMA = ROLLUP_SCHEMA
#: Most events a breakdown reads (the newest ones of the range): its answer time stays bounded.
BREAKDOWN_SCAN = 50_000
_EVENT_COLUMNS = EVENT_COLUMNS
_record = record


@dataclass(frozen=True, slots=True)
class ExplorerFilter:
    """Filters shared by the explorer's event list, breakdown and timeline (validated by the web layer).

    ``network`` is an IP network (a single address is a /32 or /128); ``prop`` is a property (key, value) where the
    value matches a stored string, number or boolean equal to it; ``after`` is the (ts, seq) cursor.
    """

    name: str | None = None
    since: float | None = None
    until: float | None = None
    user: str | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    app: str | None = None
    prop: tuple[str, str] | None = None
    after: tuple[float, int] | None = None


@dataclass(frozen=True, slots=True)
class BreakdownRow:
    """One group of a breakdown: its value (None: events without one), count and distinct users / IPs."""

    value: Any
    count: int
    users: int
    ips: int


@dataclass(slots=True)
class Overview:
    """What the overview page shows for a range."""

    bucket: int
    times: list[int] = field(default_factory=list)
    series: dict[str, list[int]] = field(default_factory=dict)
    total: int = 0
    names: list[tuple[str, int]] = field(default_factory=list)
    ips: list[tuple[str, int]] = field(default_factory=list)
    users: list[tuple[str, int]] = field(default_factory=list)
    apps: list[tuple[str, int]] = field(default_factory=list)
    logins: dict[str, int] = field(default_factory=dict)


def prop_path(key: str) -> str:
    """The SQLite JSON path of a property key.

    :raises ValueError: the key holds a double quote, which SQLite JSON paths cannot express.
    """
    if '"' in key:
        raise ValueError(f"property key must not contain a double quote, got {key!r}")
    return f'$."{key}"'


def _prop_candidates(value: str) -> list[Any]:
    # json_extract gives strings as text, numbers as numbers and booleans as 1/0: "false" must find false and "2"
    # must find 2 as well as the string "2".
    out: list[Any] = [value]
    if value in ("true", "false"):
        out.append(1 if value == "true" else 0)
    else:
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            out.append(int(number) if number.is_integer() else number)
    return out


def _ip_in(address: str | None, network: str) -> bool:
    if address is None:
        return False
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network)
    except ValueError:
        return False


def _network_clause(net: ipaddress.IPv4Network | ipaddress.IPv6Network, where: list[str], args: list[Any]) -> None:
    if net.num_addresses == 1:
        where.append("client_ip = ?")
        args.append(str(net.network_address))
        return
    if isinstance(net, ipaddress.IPv4Network) and net.prefixlen >= 8:
        # Stored v4 addresses are dotted text: the octets every address of the network shares are a text prefix,
        # which the (client_ip, ts) index answers as a range; ip_in() settles the remaining bits.
        octets = str(net.network_address).split(".")[: net.prefixlen // 8]
        prefix = ".".join(octets) + "."
        where.append("client_ip >= ? AND client_ip < ?")
        args.extend([prefix, prefix[:-1] + "/"])  # "/" sorts right after "."
        if net.prefixlen % 8 == 0:
            return
    where.append("ip_in(client_ip, ?)")
    args.append(str(net))


def _filter_sql(f: ExplorerFilter, *, cursor: bool) -> tuple[str, str, list[Any]]:
    """(source, where clause, arguments) for the events matching ``f``; columns of ``events`` need no prefix."""
    where: list[str] = []
    args: list[Any] = []
    t = ""
    source = "events"
    if f.user is not None:
        t, source = "u.", "event_users AS u CROSS JOIN events ON events.seq = u.seq"
        where.append("u.value = ?")
        args.append(f.user)
    if f.name is not None:
        where.append("name = ?")
        args.append(f.name)
    if f.since is not None:
        where.append(f"{t}ts >= ?")
        args.append(f.since)
    if f.until is not None:
        where.append(f"{t}ts < ?")
        args.append(f.until)
    if f.network is not None:
        _network_clause(f.network, where, args)
    if f.app is not None:
        where.append("app = ?")
        args.append(f.app)
    if f.prop is not None:
        candidates = _prop_candidates(f.prop[1])
        where.append(f"json_extract(properties, ?) IN ({', '.join('?' * len(candidates))})")
        args.extend([prop_path(f.prop[0]), *candidates])
    if cursor and f.after is not None:
        where.append(f"({t}ts, {t}seq) < (?, ?)")
        args.extend(f.after)
    return source, (" WHERE " + " AND ".join(where)) if where else "", args


# A property's value as JSON text: one function call per row, and true / false stay apart from 1 / 0 (json_extract
# gives booleans as integers). "->" needs SQLite 3.38; older ones get the same text the long way.
_PROPERTY_JSON = (
    "properties -> ?1"
    if sqlite3.sqlite_version_info >= (3, 38)
    else "CASE json_type(properties, ?1) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'"
    " ELSE json_quote(json_extract(properties, ?1)) END"
)
_GROUPS = {
    "name": "name",
    "ip": "client_ip",
    "app": "app",
    "user": "user_identifiers",
}


class ExplorerQueries:
    """Mixin of :class:`~sqreen_mw.collector._sqlite.SQLiteStorage`: the explorer's read side.

    Relies on the host's ``_lock`` (the connection) and ``_db()``.
    """

    _lock: threading.Lock

    def _db(self) -> sqlite3.Connection:  # pragma: no cover - provided by SQLiteStorage
        raise NotImplementedError

    def _explorer_db(self) -> sqlite3.Connection:
        """The connection, with ip_in() registered; starts the backfill of older events once (call with the lock)."""
        db = self._db()
        if not getattr(self, "_explorer_ready", False):
            db.create_function("ip_in", 2, _ip_in, deterministic=True)
            if backfill_progress(db) is not None:
                threading.Thread(target=self._backfill, name="sqreen_mw-explorer-backfill", daemon=True).start()
            self._explorer_ready = True
        return db

    def _backfill(self) -> None:
        # A chunk per transaction, the lock released in between: ingest and pages go on meanwhile.
        try:
            while True:
                with self._lock:
                    try:
                        more = backfill_step(self._db())
                    except RuntimeError:  # closed
                        return
                if not more:
                    return
                time.sleep(0.005)
        except Exception:
            logger.exception("sqreen_mw collector: counting older events into the explorer's rollups failed")

    def rollup_backfill(self) -> tuple[int, int] | None:
        """(events counted, events to count) while older events are still being added to the rollups, else None."""
        with self._lock:
            return backfill_progress(self._explorer_db())

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
        with self._lock:
            db = self._explorer_db()
            if bucket % 3600 == 0:
                per = bucket // 3600
                rows = db.execute(
                    "SELECT hour / ? AS b, value, sum(n) FROM explorer_hour WHERE kind = 0 AND hour >= ? AND hour < ?"
                    " GROUP BY b, value",
                    (per, hour_lo, hour_hi),
                ).fetchall()
                first, last = hour_lo // per, (hour_hi - 1) // per
            else:
                per = bucket // 60
                lo, hi = int(since // 60), int(-(-until // 60))
                rows = db.execute(
                    "SELECT minute / ? AS b, name, sum(n) FROM explorer_minute WHERE minute >= ? AND minute < ?"
                    " GROUP BY b, name",
                    (per, lo, hi),
                ).fetchall()
                first, last = lo // per, (hi - 1) // per
            tops: dict[int, list[tuple[str, int]]] = {}
            for kind in (KIND_NAME, KIND_IP, KIND_USER, KIND_APP, KIND_LOGIN):
                tops[kind] = db.execute(
                    "SELECT value, sum(n) AS c FROM explorer_hour WHERE kind = ? AND hour >= ? AND hour < ?"
                    " GROUP BY value ORDER BY c DESC, value LIMIT ?",
                    (kind, hour_lo, hour_hi, top if kind != KIND_NAME else 1000),
                ).fetchall()
        out.times = [b * bucket for b in range(first, last + 1)]
        index = {b: i for i, b in enumerate(range(first, last + 1))}
        for b, name, n in rows:
            out.series.setdefault(name, [0] * len(out.times))[index[b]] += n
        names = tops[KIND_NAME]
        out.total = sum(n for _, n in names)
        out.names = names[:top]
        out.ips, out.users, out.apps = tops[KIND_IP], tops[KIND_USER], tops[KIND_APP]
        out.logins = dict(tops[KIND_LOGIN])
        return out

    def search_events(self, f: ExplorerFilter, limit: int) -> list[EventRecord]:
        """Events matching ``f``, newest first (ts, then seq, descending), at most ``limit``."""
        source, clause, args = _filter_sql(f, cursor=True)
        t = "u." if f.user is not None else ""
        sql = f"SELECT {_columns(f)} FROM {source}{clause} ORDER BY {t}ts DESC, {t}seq DESC LIMIT ?"  # noqa: S608
        with self._lock:
            rows = self._explorer_db().execute(sql, [*args, limit]).fetchall()
        return [_record(row) for row in rows]

    def get_event(self, event_id: str) -> EventRecord | None:
        """The stored event with this id, or None."""
        with self._lock:
            row = (
                self._explorer_db()
                .execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,))  # noqa: S608
                .fetchone()
            )
        return None if row is None else _record(row)

    def breakdown(self, f: ExplorerFilter, group: str, limit: int = 100) -> tuple[list[BreakdownRow], int, bool]:
        """Groups of the events matching ``f`` by ``group`` ("name", "ip", "app", "user" or "property:<key>").

        Reads the newest :data:`BREAKDOWN_SCAN` matching events at most.

        :return: (groups by count descending, events read, whether the scan stopped at its bound).
        :raises ValueError: unknown group, or a property key SQLite cannot address.
        """
        args: list[Any] = []
        if group.startswith("property:"):
            expr = _PROPERTY_JSON
            args.append(prop_path(group.removeprefix("property:")))
        elif group in _GROUPS:
            expr = _GROUPS[group]
        else:
            raise ValueError(f"group must be name, ip, app, user or property:<key>, got {group!r}")
        source, clause, fargs = _filter_sql(f, cursor=False)
        t = "u." if f.user is not None else ""
        inner = (
            f"SELECT name, client_ip, app, user_identifiers, properties FROM {source}{clause}"  # noqa: S608
            f" ORDER BY {t}ts DESC LIMIT {BREAKDOWN_SCAN}"
        )
        sql = (
            f"SELECT {expr} AS g, count(*) AS c, count(DISTINCT user_identifiers), count(DISTINCT client_ip),"  # noqa: S608
            f" sum(count(*)) OVER () FROM ({inner}) GROUP BY g ORDER BY c DESC, g IS NULL, g LIMIT ?"
        )
        with self._lock:
            rows = self._explorer_db().execute(sql, [*args, *fargs, limit]).fetchall()
        scanned = int(rows[0][4]) if rows else 0  # the window sums every group, before LIMIT
        groups = [BreakdownRow(_group_value(group, g), c, u, i) for g, c, u, i, _ in rows]
        return groups, scanned, scanned >= BREAKDOWN_SCAN

    def actor_summary(self, f: ExplorerFilter) -> tuple[list[tuple[str, int]], float | None, float | None]:
        """Per-name counts, first and last timestamp of the events matching ``f`` (one IP or one user).

        Reads the newest :data:`BREAKDOWN_SCAN` matching events at most.
        """
        source, clause, args = _filter_sql(f, cursor=False)
        t = "u." if f.user is not None else ""
        inner = f"SELECT name, {t}ts AS ts FROM {source}{clause} ORDER BY {t}ts DESC LIMIT {BREAKDOWN_SCAN}"  # noqa: S608
        sql = f"SELECT name, count(*) AS c, min(ts), max(ts) FROM ({inner}) GROUP BY name ORDER BY c DESC, name"  # noqa: S608
        with self._lock:
            rows = self._explorer_db().execute(sql, args).fetchall()
        if not rows:
            return [], None, None
        return [(r[0], r[1]) for r in rows], min(r[2] for r in rows), max(r[3] for r in rows)


def _group_value(group: str, value: Any) -> Any:
    if (group == "user" or group.startswith("property:")) and isinstance(value, str):
        return json.loads(value)
    return value


def _columns(f: ExplorerFilter) -> str:
    if f.user is None:
        return _EVENT_COLUMNS
    return ", ".join(f"events.{c}" for c in _EVENT_COLUMNS.split(", "))
