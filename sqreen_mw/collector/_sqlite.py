"""The SQLite implementation of the collector's :class:`~sqreen_mw.collector._storage.Storage`."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from . import _fastjson
from ._records import UNREADABLE, AgentSession, EventQuery, EventRecord, StorageUnavailable, ip_key
from ._sqlite_automation import AUTOMATION_SCHEMA, AutomationTables
from ._sqlite_explorer import EXPLORER_SCHEMA, ExplorerQueries, update_rollups
from ._storage import SchemaError

__all__ = ["SQLiteStorage"]

_log = logging.getLogger("sqreen_mw.collector")


# The admin side keeps the stdlib's ASCII text; the insert path takes the fast encoder (orjson when installed).
_encode = _fastjson.stdlib_dumps
_PAGE_SIZE = 4096
_WAL_CHECKPOINT_BYTES = 128 * 2**20
# A transaction takes in batches queued meanwhile until it holds this many events.
_GROUP_EVENTS = 20_000
# The writer's own automatic checkpoint, a backstop for when the background checkpointer cannot keep up.
_WAL_BACKSTOP_BYTES = 4 * _WAL_CHECKPOINT_BYTES
_EVENT_COLUMNS = "seq, id, name, ts, received_at, app, client_ip, properties, user_identifiers, request, body"
# seq left to SQLite: max(seq) + 1, row after row, so a batch stored whole gets first..first+n-1 in order.
_INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (id, name, ts, received_at, app, client_ip, properties, user_identifiers,"
    " request, body, ip_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    ts REAL NOT NULL,
    received_at REAL NOT NULL,
    app TEXT NOT NULL,
    client_ip TEXT,
    properties TEXT NOT NULL,
    user_identifiers TEXT,
    request TEXT,
    body TEXT,
    ip_key BLOB
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_name_ts ON events (name, ts);
CREATE INDEX IF NOT EXISTS events_ipkey_ts ON events (ip_key, ts);
CREATE INDEX IF NOT EXISTS events_app_ts ON events (app, ts);
CREATE TABLE IF NOT EXISTS event_users (
    value TEXT NOT NULL,
    ts REAL NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (value, ts, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    hostname TEXT,
    pid INTEGER,
    sdk_version TEXT,
    runtime TEXT,
    started_at REAL NOT NULL,
    last_heartbeat_at REAL,
    stats TEXT,
    logged_out_at REAL,
    agent_id TEXT
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started_at);
PRAGMA user_version = 3;
"""
_SCHEMA_VERSION = 3
# Version 1 keyed event_users by (value, seq): a user's events were sorted on every page. Version 2 keys them by
# (value, ts, seq), the answer's order, so a page walks the key backwards and stops after ``limit`` rows.
_MIGRATE_1_TO_2 = """
CREATE TABLE event_users_v2 (
    value TEXT NOT NULL,
    ts REAL NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (value, ts, seq)
) WITHOUT ROWID;
INSERT INTO event_users_v2 (value, ts, seq)
    SELECT u.value, e.ts, u.seq FROM event_users AS u JOIN events AS e ON e.seq = u.seq ORDER BY 1, 2, 3;
DROP TABLE event_users;
ALTER TABLE event_users_v2 RENAME TO event_users;
"""
# Version 3: ip_key, the client IP as 16 sortable bytes, replaces the client_ip index (an address or a network is a
# range of keys); an app index; a public agent_id on sessions (session_id is the agent's credential).
_MIGRATE_2_TO_3 = """
ALTER TABLE events ADD COLUMN ip_key BLOB;
UPDATE events SET ip_key = sqreen_ip_key(client_ip) WHERE client_ip IS NOT NULL;
DROP INDEX IF EXISTS events_ip_ts;
ALTER TABLE sessions ADD COLUMN agent_id TEXT;
UPDATE sessions SET agent_id = lower(hex(randomblob(8)))
"""


def _load(text: str | None) -> Any:
    # Never fail a whole page on one row: an older version stored values the API cannot decode (too deep).
    try:
        return None if text is None else json.loads(text)
    except (ValueError, RecursionError):
        return UNREADABLE


@contextlib.contextmanager
def _available() -> Iterator[None]:
    """Turn "cannot write now" database errors (locked, read-only, disk full, I/O) into a retryable error."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise StorageUnavailable(str(exc)) from exc


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


def _register_plain_adapters() -> None:
    """Bind ``None`` and ``bytes`` without the failed protocol lookups the sqlite3 module makes for them.

    The module binds int, float, str and bytearray directly, but sends every other parameter through its adapter
    registry: with no adapter registered, it asks the protocol class for ``__adapt__``, which raises (and formats) an
    AttributeError each time. An event row binds two or three such values (the IP key, an absent body or user), which
    cost ~5,000 instructions an event (callgrind). An identity adapter binds exactly what the module would have bound;
    one the application registered itself is left in place.
    """
    if (bytes, sqlite3.PrepareProtocol) not in sqlite3.adapters:
        sqlite3.register_adapter(bytes, bytes)
    if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), _none)


def _none(_: None) -> None:
    return None


_register_plain_adapters()


def _event_ip_key(text: str | None) -> bytes | None:
    """:func:`ip_key`, 10x faster for the usual dotted IPv4 address (the C parser, as strict as ``ipaddress``: four
    decimal octets, no leading zero, no space); anything else, IPv6 included, goes to :func:`ip_key` itself."""
    if text and ":" not in text:
        try:
            return _V4_MAPPED + socket.inet_pton(socket.AF_INET, text)
        except (OSError, ValueError, UnicodeError):
            pass
    return ip_key(text)


def _row(e: EventRecord) -> tuple[Any, ...]:
    dumps = _fastjson.dumps  # looked up per call: the tests swap it for the stdlib's
    return (
        e.id, e.name, e.ts, e.received_at, e.app, e.client_ip, dumps(e.properties),
        None if e.user_identifiers is None else dumps(e.user_identifiers),
        None if e.request is None else dumps(e.request),
        None if e.body is None else dumps(e.body), _event_ip_key(e.client_ip),
    )  # fmt: skip


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(), which would commit the open transaction first.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _event_sql(query: EventQuery) -> tuple[str, list[Any]]:
    """The SELECT of :meth:`SQLiteStorage.query_events` and its arguments.

    The rows come from an index walked backwards in (ts, seq) order, so SQLite stops after ``limit`` rows instead of
    sorting every match: without a user filter, an events index (the ts index ends with the rowid, seq); with one,
    the (value, ts, seq) key of event_users, each row joined to its event by seq. CROSS JOIN keeps event_users the
    outer loop: SQLite would otherwise start from the name or IP index.
    """
    where: list[str] = []
    args: list[Any] = []
    until, after = query.until, query.after
    # One of until and the cursor implies the other: keep only the tighter, so the walk starts at the cursor rather
    # than at until, skipping the earlier pages' rows again (SQLite bounds the range with one of the two).
    if until is not None and after is not None:
        if after[0] < until:
            until = None
        elif after[0] >= until:
            after = None
    if query.user is None:
        t, source, columns = "", "events", _EVENT_COLUMNS
    else:
        t, source = "u.", "event_users AS u CROSS JOIN events AS e ON e.seq = u.seq"
        columns = ", ".join(f"e.{column}" for column in _EVENT_COLUMNS.split(", "))
        where.append("u.value = ?")
        args.append(query.user)
    if query.name is not None:
        where.append("name = ?")
        args.append(query.name)
    if query.since is not None:
        where.append(f"{t}ts >= ?")
        args.append(query.since)
    if until is not None:
        where.append(f"{t}ts < ?")
        args.append(until)
    if query.app is not None:
        where.append("app = ?")
        args.append(query.app)
    if query.ip is not None:
        key = ip_key(query.ip)
        # An address matches by key (the index; 2001:DB8::1 is 2001:db8::1); other text only as stored.
        where.append("client_ip = ?" if key is None else "ip_key = ?")
        args.append(query.ip if key is None else key)
    if query.ip_range is not None:
        where.append("ip_key BETWEEN ? AND ?")
        args.extend(query.ip_range)
    if after is not None:
        where.append(f"({t}ts, {t}seq) < (?, ?)")
        args.extend(after)
    clause = " WHERE " + " AND ".join(where) if where else ""
    # Only fixed fragments are joined; every value is a bound parameter.
    sql = f"SELECT {columns} FROM {source}{clause} ORDER BY {t}ts DESC, {t}seq DESC LIMIT ?"  # noqa: S608
    args.append(query.limit)
    return sql, args


class _Checkpointer:
    """Copies the write-ahead log into the database file on a thread and connection of its own.

    With SQLite's automatic checkpoint, the commit that takes the log past its limit copies every page the log holds
    into the database file and syncs it, holding the write lock: measured on a database of 1,000,000 events, one
    commit in ten took 280-475 ms instead of ~30 ms, and the checkpoints were a third of the ingest time. Here the
    writer only appends to the log; after writes, this thread runs a passive checkpoint (which never blocks the
    writer) at most every ``every`` seconds, and once the log holds ``rewind_frames`` pages since it last began,
    a RESTART checkpoint that copies the few pages the passive one left and lets the next commit rewind the log, so
    it does not grow. SQLite does that work with the GIL released, on the other core if there is one.

    The RESTART waits at most ``busy_ms`` for the writer and for readers still using the log, then gives up until
    the next round: ingest never waits longer than that. Should this thread fall behind or fail, the writer's own
    automatic checkpoint (at 4x the size) still bounds the log.
    """

    def __init__(self, path: str, rewind_frames: int, every: float = 1.0, busy_ms: int = 200) -> None:
        self.path = path
        self.rewind_frames = rewind_frames
        self.every = every
        self.busy_ms = busy_ms
        self.rounds = 0  # checkpoints run (tests and diagnostics)
        self.rewinds = 0
        self._wrote = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqreen-mw-checkpoint", daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        """Note a commit: a checkpoint is due within ``every`` seconds."""
        self._wrote.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wrote.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            _log.exception("background checkpoints are off: cannot open %s", self.path)
            return
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_ms)}")
            while True:
                self._wrote.wait()
                if self._stopping.is_set():
                    return
                self._wrote.clear()
                self._round(conn)
                if self._stopping.wait(self.every):
                    return
        except Exception:  # the writer's automatic checkpoint takes over
            _log.exception("background checkpoints stopped; the writer checkpoints the log itself")
        finally:
            conn.close()

    def _round(self, conn: sqlite3.Connection) -> None:
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.rounds += 1
        if frames >= self.rewind_frames:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            if not busy:
                self.rewinds += 1
            else:  # a writer or a reader held on for busy_ms: next round
                self._wrote.set()


class _Write:
    """One insert_events() call waiting for its group's commit."""

    __slots__ = ("done", "error", "events", "fresh", "rows")

    def __init__(self, events: Sequence[EventRecord], rows: list[tuple[Any, ...]]) -> None:
        self.events = events
        self.rows = rows
        self.done = False
        self.fresh: list[EventRecord] = []  # the events that were new
        self.error: Exception | None = None


class SQLiteStorage(AutomationTables, ExplorerQueries):
    """:class:`Storage` on one SQLite connection (WAL, ``synchronous=NORMAL``) guarded by a lock.

    :param path: database file, created if missing (``":memory:"`` works for tests).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()  # the connection
        self._queue_lock = threading.Lock()  # _queue, never held while waiting for the connection
        self._queue: list[_Write] = []
        self._conn: sqlite3.Connection | None = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # Small pages, a big cache and a big WAL. Measured (benchmarks/bench_collector.py): once the database is
        # larger than a batch, the client IP index and event_users get one random insert per event, so a commit
        # writes about one page per event to the WAL: the page size is the bytes written per event. 4 KiB pages
        # keep ~40k events/s at 600k events stored where 16 KiB pages fell to ~26k/s. A checkpoint copies each
        # page once however often the WAL rewrote it, so checkpointing every 128 MiB (32,000 pages) instead of
        # 4 MiB (SQLite's default of 1,000 pages) copies far less. page_size only applies to a new database.
        self._conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
        self._conn.execute("PRAGMA cache_size=-65536")
        self._conn.execute("PRAGMA journal_mode=WAL")
        page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]  # an older database may have other pages
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.create_function("sqreen_ip_key", 1, ip_key, deterministic=True)
        try:
            self._prepare_schema(self._conn)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise
        self._checkpointer: _Checkpointer | None = None
        self._reader_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None  # session lookups, while a transaction runs on _conn
        wal = str(self._conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
        if wal and path != ":memory:" and not path.startswith("file:"):
            self._conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_BACKSTOP_BYTES // page_size}")
            self._checkpointer = _Checkpointer(path, _WAL_CHECKPOINT_BYTES // page_size)
            self._reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._reader.execute("PRAGMA busy_timeout=5000")
        else:
            self._conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_CHECKPOINT_BYTES // page_size}")

    def _prepare_schema(self, db: sqlite3.Connection) -> None:
        """Create the tables of a new database, or migrate one made by an older version, in one transaction.

        :raises SchemaError: the file was made by a newer version.
        """
        db.execute("BEGIN IMMEDIATE")  # another process opening the same file waits, then sees the result
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path}: this database was made by a newer version of sqreen-mw (schema version {version},"
                    f" this version knows up to {_SCHEMA_VERSION}); upgrade sqreen-mw or use another database file"
                )
            columns = {row[1] for row in db.execute("PRAGMA table_info(event_users)")}
            if columns and "ts" not in columns:  # version 1 (or its tables without the version, if interrupted)
                _run_script(db, _MIGRATE_1_TO_2)
            columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
            if columns and "ip_key" not in columns:  # version 2
                _run_script(db, _MIGRATE_2_TO_3)
            _run_script(db, _SCHEMA)
            _run_script(db, AUTOMATION_SCHEMA)
            _run_script(db, EXPLORER_SCHEMA)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SQLiteStorage is closed")
        return self._conn

    def insert_events(self, events: Sequence[EventRecord]) -> tuple[int, int]:
        """Store the events in one transaction, skipping ids already stored; return (accepted, duplicates)."""
        fresh = self.store_events(events)
        return len(fresh), len(events) - len(fresh)

    def store_events(self, events: Sequence[EventRecord]) -> list[EventRecord]:
        """Store the events in one transaction, skipping ids already stored; return the new ones, in order.

        Group commit: batches that arrive while a transaction runs are committed together by the next writer, one
        transaction for all. A commit costs about one page write per index leaf touched, so this is what keeps
        ingest fast with many agents sending small batches.
        """
        # Encode before taking the lock: another thread's SQLite work (which releases the GIL) overlaps with it.
        write = _Write(events, [_row(e) for e in events])
        with self._queue_lock:
            self._queue.append(write)
        with self._lock:
            if not write.done:  # else another writer committed it with its own group
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._commit(group)
        if isinstance(write.error, sqlite3.OperationalError):
            raise StorageUnavailable(str(write.error)) from write.error
        if write.error is not None:
            raise write.error
        return write.fresh

    def _commit(self, group: list[_Write]) -> None:
        try:
            self._transaction(group)
        except Exception as exc:
            if len(group) == 1:
                group[0].error = exc
            else:  # one bad batch must not fail the others: each on its own
                for write in group:
                    try:
                        self._transaction([write])
                    except Exception as own:
                        write.error = own
        finally:
            for write in group:
                write.done = True
            if self._checkpointer is not None:
                self._checkpointer.wrote()

    def _transaction(self, group: list[_Write]) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            counted: list[tuple[int, EventRecord]] = []
            for write in group:
                write.fresh = self._insert(db, write, counted)
            # Batches queued while these rows went in join this transaction rather than wait for it: its commit
            # writes each page it touched once for all of them, and a commit is mostly page writes (on a database
            # of 1,000,000 events, one commit of 2,000 events writes ~3,000 pages of the client IP and user
            # indexes). Added to the caller's group, so a failure retries each of them alone.
            size = sum(len(write.events) for write in group)
            while size < _GROUP_EVENTS:
                with self._queue_lock:
                    more, self._queue = self._queue, []
                if not more:
                    break
                group += more
                for write in more:
                    write.fresh = self._insert(db, write, counted)
                    size += len(write.events)
            # Once for the whole group: a key (an hour's IP, user...) shared by its batches is one upsert, not one each.
            update_rollups(db, counted)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @staticmethod
    def _insert(db: sqlite3.Connection, write: _Write, counted: list[tuple[int, EventRecord]]) -> list[EventRecord]:
        events = write.events
        # INSERT OR IGNORE skips known ids (dedup); each new row takes the next seq, so when none was skipped the
        # batch holds first..first+n-1 in order, and otherwise the rows from first on name the new events by id.
        first = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM events").fetchone()[0]
        before = db.total_changes
        db.executemany(_INSERT_EVENT, write.rows)
        accepted = db.total_changes - before
        if accepted == len(events):
            fresh: Sequence[tuple[int, EventRecord]] = list(enumerate(events, first))
        else:
            stored = dict(db.execute("SELECT id, seq FROM events WHERE seq >= ?", (first,)).fetchall())
            fresh = []
            for e in events:  # an id twice in the batch: its first copy is the one stored
                seq = stored.pop(e.id, None)
                if seq is not None:
                    fresh.append((seq, e))
        # Sorted: B-tree inserts in key order touch far fewer pages.
        db.executemany(
            "INSERT OR IGNORE INTO event_users VALUES (?, ?, ?)",
            sorted([(value, e.ts, seq) for seq, e in fresh for value in e.users]),
        )
        counted += fresh
        return list(events) if accepted == len(events) else [e for _, e in fresh]

    def query_events(self, query: EventQuery) -> list[EventRecord]:
        """Events matching ``query``, newest first (ts, then seq, descending)."""
        sql, args = _event_sql(query)
        with self._lock:
            rows = self._db().execute(sql, args).fetchall()
        out: list[EventRecord] = []
        for row in rows:
            users = _load(row[8])
            out.append(
                EventRecord(
                    row[1], row[2], row[3], row[4], row[5], row[6], _load(row[7]), users, _load(row[9]),
                    _load(row[10]), tuple(str(v) for v in users.values()) if isinstance(users, dict) else (), row[0],
                )
            )  # fmt: skip
        return out

    def query_plan(self, query: EventQuery) -> list[str]:
        """The lines of SQLite's ``EXPLAIN QUERY PLAN`` for :meth:`query_events` (tests and diagnostics)."""
        sql, args = _event_sql(query)
        with self._lock:
            return [str(row[3]) for row in self._db().execute(f"EXPLAIN QUERY PLAN {sql}", args)]

    def create_session(self, session: AgentSession) -> None:
        """Record a new agent session."""
        s = session
        with self._lock, _available():
            self._db().execute(
                "INSERT INTO sessions (session_id, app, hostname, pid, sdk_version, runtime, started_at,"
                " last_heartbeat_at, stats, logged_out_at, agent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    s.session_id, s.app, s.hostname, s.pid, s.sdk_version, s.runtime, s.started_at,
                    s.last_heartbeat_at, None if s.stats is None else _encode(s.stats), s.logged_out_at, s.agent_id,
                ),
            )  # fmt: skip

    def session_app(self, session_id: str) -> str | None:
        """The app of an active (not logged out) session, or None.

        Every batch starts with this lookup. It reads through a connection of its own, so it never waits for a
        transaction storing other batches: while one commits, the next batches are read and decoded, ready to join
        the next transaction (each waited for the write lock here before, and arrived one by one).
        """
        sql = "SELECT app FROM sessions WHERE session_id = ? AND logged_out_at IS NULL"
        self._db()  # raises once closed
        with self._reader_lock:
            reader = self._reader
            if reader is not None:
                row = reader.execute(sql, (session_id,)).fetchone()
        if reader is None:  # an in-memory database: one connection
            with self._lock:
                row = self._db().execute(sql, (session_id,)).fetchone()
        return None if row is None else str(row[0])

    def heartbeat(self, session_id: str, stats: dict[str, Any], at: float) -> bool:
        """Store the stats of an active session; False when the session is unknown or logged out."""
        with self._lock, _available():
            cur = self._db().execute(
                "UPDATE sessions SET stats = ?, last_heartbeat_at = ? WHERE session_id = ? AND logged_out_at IS NULL",
                (_encode(stats), at, session_id),
            )
        return cur.rowcount == 1

    def logout(self, session_id: str, at: float) -> bool:
        """Mark an active session logged out; False when the session is unknown or already logged out."""
        with self._lock, _available():
            cur = self._db().execute(
                "UPDATE sessions SET logged_out_at = ? WHERE session_id = ? AND logged_out_at IS NULL",
                (at, session_id),
            )
        return cur.rowcount == 1

    def list_agents(self, limit: int = 1000) -> list[AgentSession]:
        """Sessions, newest first."""
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT session_id, app, hostname, pid, sdk_version, runtime, started_at, last_heartbeat_at,"
                    " logged_out_at, stats, agent_id FROM sessions ORDER BY started_at DESC, rowid DESC LIMIT ?",
                    (limit,),
                )
                .fetchall()
            )
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
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute("SELECT seq, ts, user_identifiers FROM events WHERE ts < ? ORDER BY ts LIMIT ?",
                                  (cutoff, limit)).fetchall()
                db.executemany("DELETE FROM event_users WHERE value = ? AND ts = ? AND seq = ?",
                               [(str(v), ts, seq) for seq, ts, users in rows for v in (_load(users) or {}).values()])
                db.executemany("DELETE FROM events WHERE seq = ?", [(row[0],) for row in rows])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return len(rows)

    def close(self) -> None:
        """Close the connection (idempotent); later calls raise ``RuntimeError``."""
        if self._checkpointer is not None:  # first: closing the last connection checkpoints the whole log
            self._checkpointer.stop()
            self._checkpointer = None
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
