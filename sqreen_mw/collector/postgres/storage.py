"""The PostgreSQL implementation of the collector's :class:`~sqreen_mw.collector._storage.Storage` and of
:class:`~sqreen_mw.collector.automation.store.AutomationStore`, on a psycopg 3 connection pool.

Every method is one transaction on a pooled connection. Several collector replicas may share the database: event
ids are unique (``ON CONFLICT DO NOTHING``, so a batch retried through another replica stores nothing twice), the
actions version is a row bumped in the transaction of the change, and that transaction also sends a ``NOTIFY`` that
the other replicas' listeners (:mod:`._listen`) turn into a wake-up of their agents' long-polls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg_pool import ConnectionPool, PoolTimeout

try:
    import orjson
except ImportError:  # pragma: no cover - the collector extra brings it
    orjson = None  # type: ignore[assignment]

from .._records import AgentSession, EventQuery, EventRecord, ip_key
from .._sqlite import _encode, _event_ip_key
from . import StorageUnavailable, UnstorableText, redact
from ._automation import AutomationTables
from ._explorer import COUNT_FRESH, ExplorerQueries, rollup_keys, user_events
from ._fold import FOLD_CHECK, FOLD_EVERY, fold_rollups
from ._hits import HitTables
from ._schema import prepare_schema

__all__ = ["PostgresStorage"]

logger = logging.getLogger("sqreen_mw.collector")

_EVENT_COLUMNS = "seq, id, name, ts, received_at, app, client_ip, properties, user_identifiers, request, body"
# One statement, one round trip per batch whatever its size: the rows travel as arrays, unnested in order, in binary
# (%b): text arrays in text format cost a regular-expression escape per element, 4x the whole insert (measured).
# ON CONFLICT on the unique id skips events already stored, by this replica or another (which waits for the other's
# commit first); only the rows it stored ("fresh") get user rows and are counted in the rollups, in the same
# statement (:data:`._explorer.COUNT_FRESH`), so the counting costs no Python loop and no further round trip.
# ``fresh`` keeps only the columns that the user rows and the rollups read: not the JSON texts, which it would
# otherwise copy once more per event.
_STORE_BATCH = f"""
WITH batch AS MATERIALIZED (
    SELECT * FROM unnest(%b::text[], %b::text[], %b::float8[], %b::float8[], %b::text[], %b::text[], %b::text[],
                         %b::text[], %b::text[], %b::text[], %b::bytea[], %b::bigint[], %b::bigint[], %b::text[],
                         %b::text[])
        WITH ORDINALITY AS b(id, name, ts, received_at, app, client_ip, properties, user_identifiers, request, body,
                             ip_key, minute, hour, user_key, login, i)
), stored AS (
    INSERT INTO events (id, name, ts, received_at, app, client_ip, properties, user_identifiers, request, body,
                        ip_key)
    SELECT id, name, ts, received_at, app, client_ip, properties, user_identifiers, request, body, ip_key
    FROM batch ON CONFLICT (id) DO NOTHING RETURNING id, seq
), fresh AS MATERIALIZED (
    SELECT s.seq, b.i, b.name, b.ts, b.app, b.client_ip, b.minute, b.hour, b.user_key, b.login
    FROM stored AS s JOIN batch AS b ON b.id = s.id COLLATE "C"
), users AS (
    INSERT INTO event_users (value, ts, seq, name)
    SELECT u.value COLLATE "C", f.ts, f.seq, f.name
    FROM unnest(%b::bigint[], %b::text[]) AS u(i, value) JOIN fresh AS f USING (i)
){COUNT_FRESH}
SELECT id, seq FROM stored
"""  # noqa: S608 - constants only
# Retention: the oldest events, found along events_ts and deleted by their row address (a TID scan). By their
# (ts, seq) instead, PostgreSQL multiplies the two columns' selectivities, expects one row and hashes the chunk
# against a scan of the whole table (330-750 ms a chunk of 10,000 on 1,000,000 events, against 38 ms by seq when it
# had an index). A row another replica's sweep deleted meanwhile is skipped, as it was by seq.
_DELETE_OLDEST = """
DELETE FROM events WHERE ctid = ANY (ARRAY(SELECT ctid FROM events WHERE ts < %s ORDER BY ts LIMIT %s))
RETURNING seq, ts, user_identifiers
"""
# Transactions PostgreSQL aborted to let others through; psycopg's DeadlockDetected is no TransactionRollback.
_ROLLBACK = (pg_errors.TransactionRollback, pg_errors.DeadlockDetected)
_RETRIES = 3  # deadlocks between concurrent batches sharing ids: PostgreSQL aborts one, which is simply run again


class _Array(bytes):
    """A one-dimensional array already in PostgreSQL's binary format (``array_recv``), sent as it is: psycopg's list
    dumper makes a Python call per element: 3.0-3.7 ms for a 1,000-event batch's 17 arrays, about 1.6 ms
    for 15 of them built here (measured)."""

    oid = 0


class _TextArray(_Array):
    oid = 1009  # text[]


class _ByteaArray(_Array):
    oid = 1001  # bytea[]


class _Float8Array(_Array):
    oid = 1022  # float8[]


class _Int8Array(_Array):
    oid = 1016  # bigint[]


_ELEMENT: dict[type[_Array], int] = {_TextArray: 25, _ByteaArray: 17, _Float8Array: 701, _Int8Array: 20}
_NULL = b"\xff\xff\xff\xff"


def _header(kind: type[_Array], n: int, nulls: bool) -> bytes:
    # ndim, has-nulls flag, element type, then the one dimension's length and lower bound (an empty array: ndim 0)
    if not n:
        return struct.pack(">iiI", 0, 0, _ELEMENT[kind])
    return struct.pack(">iiIii", 1, int(nulls), _ELEMENT[kind], n, 1)


def _varlena_array(kind: type[_Array], values: Sequence[Any]) -> Any:
    """Texts or bytes, None for NULL; anything else goes as the list, to psycopg."""
    parts: list[bytes] = []
    add = parts.append
    nulls = False
    for value in values:
        if value is None:
            add(_NULL)
            nulls = True
        else:
            if isinstance(value, str):
                data = value.encode()
            elif isinstance(value, bytes):
                data = value
            else:  # no text: psycopg's list dumper says what it cannot send
                return list(values)
            add(len(data).to_bytes(4, "big"))
            add(data)
    return kind(_header(kind, len(values), nulls) + b"".join(parts))


def _fixed_array(kind: type[_Array], code: str, values: Sequence[Any]) -> Any:
    """Numbers without NULLs; anything else (a None, an integer beyond 64 bits) goes as the list, to psycopg."""
    try:
        n = len(values)
        return kind(_header(kind, n, False) + struct.pack(f">{code * n}", *[x for v in values for x in (8, v)]))
    except struct.error:
        return list(values)


class _ArrayDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return obj  # type: ignore[no-any-return]


def _configure(conn: psycopg.Connection[Any]) -> None:
    for kind in _ELEMENT:
        conn.adapters.register_dumper(kind, type(f"{kind.__name__}Dumper", (_ArrayDumper,), {"oid": kind.oid}))


def _encode_fast(value: Any) -> str:
    # orjson where its text is the stdlib's but for the spelling of some floats (3x faster per batch, measured):
    # ASCII only, so the text stores in a database of any encoding, as the stdlib's escaped text does.
    try:
        text: bytes = orjson.dumps(value)
    except TypeError:  # a lone surrogate, an integer beyond 64 bits
        return _encode(value)
    return text.decode() if text.isascii() and b"\x7f" not in text else _encode(value)


_encode_event = _encode if orjson is None else _encode_fast


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _event(row: Sequence[Any]) -> EventRecord:
    users = _load(row[8])
    return EventRecord(
        row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]), users, _load(row[9]), _load(row[10]),
        tuple(str(v) for v in users.values()) if users else (), row[0],
    )  # fmt: skip


def _event_sql(query: EventQuery) -> tuple[str, list[Any]]:
    """The SELECT of :meth:`PostgresStorage.query_events`: an index walked backwards in (ts, seq) order, stopping
    after ``limit`` rows (with a user filter, event_users' (value, ts, seq) key walked, each row's event looked up by
    its (ts, seq), :func:`._explorer.user_events`)."""
    where: list[str] = []
    args: list[Any] = []
    if query.user is None:
        t, source, columns = "", "events", _EVENT_COLUMNS
    else:
        t, source = "u.", user_events("e")
        columns = ", ".join(f"e.{column}" for column in _EVENT_COLUMNS.split(", "))
        where.append("u.value = %s")
        args.append(query.user)
    if query.name is not None:
        where.append(f"{t}name = %s")
        args.append(query.name)
    if query.since is not None:
        where.append(f"{t}ts >= %s")
        args.append(query.since)
    if query.until is not None:
        where.append(f"{t}ts < %s")
        args.append(query.until)
    if query.ip is not None:  # an address however written (its key), else the text as stored (no key either)
        key = ip_key(query.ip)
        where.append("ip_key IS NULL AND client_ip = %s" if key is None else "ip_key = %s")
        args.append(query.ip if key is None else key)
    if query.ip_range is not None:  # a network: a range of the sortable address keys
        where.append("ip_key BETWEEN %s AND %s")
        args.extend(query.ip_range)
    if query.app is not None:
        where.append("app = %s")
        args.append(query.app)
    if query.after is not None:
        where.append(f"({t}ts, {t}seq) < (%s, %s)")
        args.extend(query.after)
    clause = " WHERE " + " AND ".join(where) if where else ""
    # Only fixed fragments are joined; every value is a bound parameter.
    sql = f"SELECT {columns} FROM {source}{clause} ORDER BY {t}ts DESC, {t}seq DESC LIMIT %s"  # noqa: S608
    args.append(query.limit)
    return sql, args


class PostgresStorage(AutomationTables, HitTables, ExplorerQueries):
    """:class:`Storage` on a PostgreSQL database shared by any number of collector replicas.

    :param url: ``postgresql://user[:password]@host[:port]/database[?sslmode=...]`` (libpq's URL, so the
        ``PG*`` environment variables and ``~/.pgpass`` fill in what it leaves out).
    :param pool_size: most connections this replica opens.
    :param wait: seconds a call waits for a connection before the database counts as unavailable.
    :param migrate: create or migrate the schema on open (else a database without the current schema is refused).
    :raises StorageUnavailable: the database cannot be reached within ``wait`` seconds.
    :raises SchemaError: the database was made by a newer version.
    """

    def __init__(self, url: str, *, pool_size: int = 10, wait: float = 5.0, migrate: bool = True) -> None:
        self.url = url
        self.where = redact(url)
        self._wait = wait
        self._closed = False
        self._listeners: list[Any] = []
        self._next_fold = 0.0  # time.monotonic() of the next look at whether a fold of the rollups is due
        self._pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, timeout=wait, name="sqreen_mw",
            kwargs={"connect_timeout": max(1, int(wait)), "application_name": "sqreen-mw collector"},
            check=ConnectionPool.check_connection,  # a connection broken by a database restart is replaced
            configure=_configure,  # the dumpers of the batch's arrays
            reconnect_timeout=0,  # keep trying to reconnect for as long as the database is down
        )  # fmt: skip
        try:
            self._pool.open(wait=True, timeout=wait)
        except PoolTimeout:
            self._pool.close()
            raise StorageUnavailable(f"{self.where}: PostgreSQL did not answer within {wait:g}s") from None
        try:
            with self._tx() as conn:
                prepare_schema(conn, self.where) if migrate else self._check_schema(conn)
        except BaseException:
            self._pool.close()
            raise

    def _check_schema(self, conn: Any) -> None:
        from .._storage import SchemaError
        from ._schema import SCHEMA_VERSION

        exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if exists else None
        if row is None or int(row[0]) != SCHEMA_VERSION:
            raise SchemaError(f"{self.where}: schema version {row[0] if row else 'none'}, this version needs "
                              f"{SCHEMA_VERSION}: run sqreen-mw migrate --db URL")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection (committed when the block ends without an exception).

        :raises StorageUnavailable: the database is unreachable or went away meanwhile.
        """
        if self._closed:
            raise RuntimeError("PostgresStorage is closed")
        try:
            with self._pool.connection(timeout=self._wait) as conn:
                yield conn
        except PoolTimeout:
            raise StorageUnavailable(f"{self.where}: no database connection within {self._wait:g}s") from None
        except psycopg.OperationalError as exc:
            if isinstance(exc, (*_ROLLBACK, pg_errors.QueryCanceled)):
                raise
            raise StorageUnavailable(f"{self.where}: {str(exc).strip()[:300]}") from exc

    def _in_transaction(self, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        with self._tx() as conn:
            return work(conn)

    # --- events ---------------------------------------------------------------------------------------------

    def insert_events(self, events: Sequence[EventRecord]) -> tuple[int, int]:
        """Store the events in one transaction, skipping ids already stored; return (accepted, duplicates)."""
        fresh = self.store_events(events)
        return len(fresh), len(events) - len(fresh)

    def store_events(self, events: Sequence[EventRecord]) -> list[EventRecord]:
        """Store the events in one transaction, skipping ids already stored (by any replica); return the new ones,
        in order, with their ``seq``. The explorer's rollups count them in the same transaction."""
        if not events:
            return []
        ev = events
        if len({e.id for e in ev}) != len(ev):  # a second event of the batch with an id is a duplicate: the first stays
            first: dict[str, EventRecord] = {}
            for e in ev:
                first.setdefault(e.id, e)
            ev = list(first.values())
        encode = _encode_event
        # Column by column: a comprehension per column costs half the row-by-row loop (measured), and the dotted
        # IPv4 fast path of the address key a fourteenth of ipaddress's parser.
        text, f8, i8 = _TextArray, _Float8Array, _Int8Array
        minutes, hours, user_keys, logins = rollup_keys(ev)
        # An event's user values, each once (two identifiers may hold one value): its user rows need no DISTINCT, nor
        # the sort that came with it.
        users = [(i, value) for i, e in enumerate(ev, 1) for value in dict.fromkeys(e.users)]
        columns: list[Any] = [
            _varlena_array(text, [e.id for e in ev]), _varlena_array(text, [e.name for e in ev]),
            _fixed_array(f8, "id", [e.ts for e in ev]), _fixed_array(f8, "id", [e.received_at for e in ev]),
            _varlena_array(text, [e.app for e in ev]), _varlena_array(text, [e.client_ip for e in ev]),
            _varlena_array(text, [encode(e.properties) for e in ev]),
            _varlena_array(text, [None if e.user_identifiers is None else encode(e.user_identifiers) for e in ev]),
            _varlena_array(text, [None if e.request is None else encode(e.request) for e in ev]),
            _varlena_array(text, [None if e.body is None else encode(e.body) for e in ev]),
            _varlena_array(_ByteaArray, [_event_ip_key(e.client_ip) for e in ev]),
            _fixed_array(i8, "iq", minutes), _fixed_array(i8, "iq", hours), _varlena_array(text, user_keys),
            _varlena_array(text, logins), _fixed_array(i8, "iq", [u[0] for u in users]),
            _varlena_array(text, [u[1] for u in users]),
        ]  # fmt: skip
        for attempt in range(_RETRIES):
            try:
                with self._tx() as conn:
                    seqs = dict(conn.execute(_STORE_BATCH, columns).fetchall())
                if time.monotonic() >= self._next_fold:
                    self._next_fold = time.monotonic() + FOLD_CHECK
                    self._fold_quietly()
                return [e._replace(seq=seqs[e.id]) for e in ev if e.id in seqs]
            except _ROLLBACK:
                if attempt == _RETRIES - 1:
                    raise
            except psycopg.DataError as exc:  # NUL in a text column: the one value SQLite stores and PostgreSQL not
                raise UnstorableText(f"an event's name, id, app or client IP holds a character PostgreSQL cannot "
                                     f"store: {str(exc).strip()[:200]}") from None
        raise AssertionError("unreachable")

    def fold_rollups(self, now: float | None = None) -> int | None:
        """Fold the rollup deltas, and the shards of hours long past, into one row per key (:mod:`._fold`; the
        ingest path makes one every :data:`~._fold.FOLD_EVERY` seconds, whichever replica); return the hour the
        shards are folded up to, or None (no shards to fold, or another replica is folding)."""
        with self._tx() as conn:
            return fold_rollups(conn, time.time() if now is None else now)

    def _fold_quietly(self) -> None:
        # After a stored batch: its answer must not depend on housekeeping, which the next minute tries again.
        try:
            with self._tx() as conn:
                fold_rollups(conn, time.time(), FOLD_EVERY)
        except (psycopg.Error, StorageUnavailable) as exc:
            logger.warning("folding the explorer's rollup rows on %s failed (%s); trying again soon",
                           self.where, str(exc).strip()[:200])

    _explorer_record = staticmethod(_event)

    def query_events(self, query: EventQuery) -> list[EventRecord]:
        """Events matching ``query``, newest first (ts, then seq, descending)."""
        sql, args = _event_sql(query)
        with self._tx() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [_event(row) for row in rows]

    def query_plan(self, query: EventQuery) -> list[str]:
        """PostgreSQL's ``EXPLAIN`` of :meth:`query_events` (tests and diagnostics)."""
        sql, args = _event_sql(query)
        with self._tx() as conn:
            return [str(row[0]) for row in conn.execute(f"EXPLAIN {sql}", args)]

    # --- sessions -------------------------------------------------------------------------------------------

    def create_session(self, session: AgentSession) -> None:
        """Record a new agent session."""
        s = session
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO sessions (session_id, agent_id, app, hostname, pid, sdk_version, runtime, started_at,"
                " last_heartbeat_at, stats, logged_out_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    s.session_id, s.agent_id, s.app, s.hostname, s.pid, s.sdk_version, s.runtime, s.started_at,
                    s.last_heartbeat_at, None if s.stats is None else _encode(s.stats), s.logged_out_at,
                ),
            )  # fmt: skip

    def session_app(self, session_id: str) -> str | None:
        """The app of an active (not logged out) session, or None."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT app FROM sessions WHERE session_id = %s AND logged_out_at IS NULL", (session_id,)
            ).fetchone()
        return None if row is None else str(row[0])

    def heartbeat(self, session_id: str, stats: dict[str, Any], at: float) -> bool:
        """Store the stats of an active session; False when the session is unknown or logged out."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE sessions SET stats = %s, last_heartbeat_at = %s WHERE session_id = %s"
                " AND logged_out_at IS NULL",
                (_encode(stats), at, session_id),
            )
            return cur.rowcount == 1

    def logout(self, session_id: str, at: float) -> bool:
        """Mark an active session logged out; False when the session is unknown or already logged out."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE sessions SET logged_out_at = %s WHERE session_id = %s AND logged_out_at IS NULL",
                (at, session_id),
            )
            return cur.rowcount == 1

    def list_agents(self, limit: int = 1000) -> list[AgentSession]:
        """Sessions, newest first."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT session_id, app, hostname, pid, sdk_version, runtime, started_at, last_heartbeat_at,"
                " logged_out_at, stats, agent_id FROM sessions ORDER BY started_at DESC, n DESC LIMIT %s",
                (limit,),
            ).fetchall()
        return [
            AgentSession(
                session_id=row[0], app=row[1], hostname=row[2], pid=row[3], sdk_version=row[4], runtime=row[5],
                started_at=row[6], last_heartbeat_at=row[7], logged_out_at=row[8], stats=_load(row[9]),
                agent_id=row[10],
            )
            for row in rows
        ]  # fmt: skip

    def delete_events_before(self, cutoff: float, limit: int = 10_000) -> int:
        """Delete up to ``limit`` of the oldest events with ``ts < cutoff`` and their user rows, in one transaction;
        return how many (retention calls it until 0, so no transaction is long)."""
        with self._tx() as conn:
            rows = conn.execute(_DELETE_OLDEST, (cutoff, limit)).fetchall()
            users = [(str(v), ts, seq) for seq, ts, ids in rows for v in (_load(ids) or {}).values()]
            if users:
                conn.execute("DELETE FROM event_users WHERE (value, ts, seq) IN"
                             " (SELECT * FROM unnest(%b::text[], %b::float8[], %b::bigint[]))",
                             [list(c) for c in zip(*users, strict=True)])
        return len(rows)

    # --- lifecycle ------------------------------------------------------------------------------------------

    def listen(self, on_version: Callable[[int, bool], None]) -> None:
        """Call ``on_version(v, False)`` (from a thread of its own) whenever any replica, this one included, changes
        the actions version, and ``on_version(current, True)`` after each (re)connection (changes may have been
        missed meanwhile)."""
        from ._listen import VersionListener

        listener = VersionListener(self.url, self.where, on_version, self.actions_version)
        self._listeners.append(listener)
        listener.start()

    def close(self) -> None:
        """Close the pool and the listeners (idempotent); later calls raise ``RuntimeError``."""
        if self._closed:
            return
        self._closed = True
        for listener in self._listeners:
            listener.stop()
        self._pool.close()


