"""The storage on its own: dedup, atomicity, queries, sessions, persistence (the ``storage`` fixture: on SQLite and
on PostgreSQL; ``sqlite_storage``: what only SQLite has)."""

from __future__ import annotations

import math
import random
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqreen_mw.collector._records import ip_key
from sqreen_mw.collector._sqlite import SQLiteStorage, _row, _Write
from sqreen_mw.collector._storage import AgentSession, EventQuery, EventRecord, SchemaError, Storage


def record(ts: float = 1000.0, *, name: str = "e", ip: str | None = "10.0.0.1", **kw: Any) -> EventRecord:
    users = kw.pop("user_identifiers", None)
    fields: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": name,
        "ts": ts,
        "received_at": 2000.0,
        "app": "app",
        "client_ip": ip,
        "properties": {"k": "v"},
        "user_identifiers": users,
        "request": None,
        "body": None,
        "users": tuple(str(v) for v in users.values()) if users else (),
    }
    fields.update(kw)
    return EventRecord(**fields)


@pytest.fixture
def storage(db: str) -> Any:
    from sqreen_mw.collector import open_storage

    s = open_storage(db)
    yield s
    s.close()


@pytest.fixture
def sqlite_storage(tmp_path: Path) -> Any:
    s = SQLiteStorage(str(tmp_path / "s.db"))
    yield s
    s.close()


def test_is_a_storage(storage: SQLiteStorage) -> None:
    checked: Storage = storage  # mypy checks the Protocol; this checks the file is usable through it
    assert checked.query_events(EventQuery()) == []


def test_wal_and_synchronous_normal(sqlite_storage: SQLiteStorage, tmp_path: Path) -> None:
    storage = sqlite_storage
    conn = sqlite3.connect(tmp_path / "s.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    assert storage._db().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_insert_round_trips_every_field(storage: SQLiteStorage) -> None:
    sent = record(
        1714557600.123456,
        user_identifiers={"email": "a@b.c", "id": 3},
        request={"client_ip": "10.0.0.1", "user_agent": None, "path": "/", "verb": "GET", "params": {"q": ["x"]}},
        body=[1, {"a": None}],
        properties={"s": "x", "i": 1, "f": 1.5, "b": True, "n": None},
    )
    assert storage.insert_events([sent]) == (1, 0)
    [got] = storage.query_events(EventQuery())
    assert got._replace(seq=0) == sent
    assert got.seq >= 1


def test_dedup_across_and_within_batches(storage: SQLiteStorage) -> None:
    a, b, c = record(), record(), record()
    assert storage.insert_events([a, b]) == (2, 0)
    assert storage.insert_events([a, b]) == (0, 2)
    assert storage.insert_events([c, a, c]) == (1, 2)
    assert sorted(e.id for e in storage.query_events(EventQuery())) == sorted([a.id, b.id, c.id])


def test_duplicate_does_not_add_user_rows(storage: SQLiteStorage) -> None:
    first = record(user_identifiers={"id": 1})
    assert storage.insert_events([first]) == (1, 0)
    # Same id again, claiming another user: ignored entirely, including its user value.
    assert storage.insert_events([first._replace(user_identifiers={"id": 2}, users=("2",))]) == (0, 1)
    assert storage.query_events(EventQuery(user="2")) == []
    assert [e.id for e in storage.query_events(EventQuery(user="1"))] == [first.id]


def test_a_failing_batch_stores_nothing(sqlite_storage: SQLiteStorage) -> None:
    storage = sqlite_storage
    good = record()
    bad = record(users=(object(),))  # cannot be bound: fails inside the transaction
    with pytest.raises(sqlite3.Error):
        storage.insert_events([good, bad])
    assert storage.query_events(EventQuery()) == []
    assert storage.insert_events([good]) == (1, 0)  # the connection is usable again


def test_query_filters_and_order(storage: SQLiteStorage) -> None:
    events = [
        record(10.0, name="x", ip="1.1.1.1", user_identifiers={"u": "ann"}),
        record(20.0, name="y", ip="2.2.2.2", user_identifiers={"u": "bob", "n": 5}),
        record(30.0, name="x", ip=None),
        record(30.0, name="x", ip="1.1.1.1"),
    ]
    storage.insert_events(events)

    def ids(**kw: Any) -> list[str]:
        return [e.id for e in storage.query_events(EventQuery(**kw))]

    e = [x.id for x in events]
    assert ids() == [e[3], e[2], e[1], e[0]]  # ts desc, then storage order desc
    assert ids(name="x") == [e[3], e[2], e[0]]
    assert ids(ip="1.1.1.1") == [e[3], e[0]]
    assert ids(user="5") == [e[1]]
    assert ids(user="ann", name="y") == []
    assert ids(since=20.0) == [e[3], e[2], e[1]]
    assert ids(until=20.0) == [e[0]]
    assert ids(limit=2) == [e[3], e[2]]
    page = storage.query_events(EventQuery(limit=2))
    assert ids(after=(page[-1].ts, page[-1].seq)) == [e[1], e[0]]


def test_sessions(storage: SQLiteStorage) -> None:
    one = AgentSession("s1", "shop", "h", 1, "0.1", "py", started_at=100.0)
    two = AgentSession("s2", "blog", None, None, None, None, started_at=200.0)
    storage.create_session(one)
    storage.create_session(two)
    assert storage.session_app("s1") == "shop"
    assert storage.session_app("nope") is None
    assert storage.heartbeat("s1", {"sent": 3}, 150.0) is True
    assert storage.heartbeat("nope", {}, 150.0) is False
    assert storage.logout("s1", 160.0) is True
    assert storage.logout("s1", 170.0) is False
    assert storage.session_app("s1") is None
    assert storage.heartbeat("s1", {}, 180.0) is False
    assert storage.list_agents() == [
        two,
        AgentSession("s1", "shop", "h", 1, "0.1", "py", 100.0, last_heartbeat_at=150.0, logged_out_at=160.0,
                     stats={"sent": 3}),
    ]  # fmt: skip


def test_data_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "p.db")
    first = SQLiteStorage(path)
    sent = record()
    first.insert_events([sent])
    first.create_session(AgentSession("s", "a", None, None, None, None, 1.0))
    first.close()
    second = SQLiteStorage(path)
    try:
        assert [e.id for e in second.query_events(EventQuery())] == [sent.id]
        assert second.insert_events([sent]) == (0, 1)
        assert second.session_app("s") == "a"
    finally:
        second.close()


def test_closed_storage_raises(tmp_path: Path) -> None:
    s = SQLiteStorage(str(tmp_path / "c.db"))
    s.close()
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        s.query_events(EventQuery())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0, max_value=15), max_size=12), max_size=6))
def test_accepted_plus_duplicates_is_the_batch_and_each_id_is_stored_once(batches: list[list[int]]) -> None:
    pool = [record(float(i % 4), user_identifiers={"i": i}) for i in range(16)]
    storage = SQLiteStorage(":memory:")
    try:
        seen: set[int] = set()
        for batch in batches:
            accepted, duplicates = storage.insert_events([pool[i] for i in batch])
            assert accepted == len(set(batch) - seen)
            assert accepted + duplicates == len(batch)
            seen |= set(batch)
        stored = storage.query_events(EventQuery(limit=100))
        assert sorted(e.id for e in stored) == sorted(pool[i].id for i in seen)
        for i in seen:
            assert [e.id for e in storage.query_events(EventQuery(user=str(i)))] == [pool[i].id]
    finally:
        storage.close()


def test_group_commit_isolates_a_failing_batch(sqlite_storage: SQLiteStorage) -> None:
    storage = sqlite_storage
    good1, good2 = [record(), record()], [record()]
    bad = [record(users=(object(),))]
    group = [_Write(batch, [_row(e) for e in batch]) for batch in (good1, bad, good2)]
    storage._commit(group)
    assert [w.done for w in group] == [True, True, True]
    assert (len(group[0].fresh), group[0].error, len(group[2].fresh), group[2].error) == (2, None, 1, None)
    assert isinstance(group[1].error, sqlite3.Error)
    assert sorted(e.id for e in storage.query_events(EventQuery())) == sorted(e.id for e in good1 + good2)


def test_group_commit_counts_the_rollups_of_its_batches_together(sqlite_storage: SQLiteStorage) -> None:
    storage = sqlite_storage
    batches = [[record(ip="10.0.0.1"), record(ip="10.0.0.2")], [record(ip="10.0.0.1")], [record(ip="10.0.0.2")]]
    upserts: list[str] = []
    assert storage._conn is not None
    storage._conn.set_trace_callback(lambda sql: upserts.append(sql) if "explorer_hour" in sql else None)
    storage._commit([_Write(batch, [_row(e) for e in batch]) for batch in batches])
    storage._conn.set_trace_callback(None)
    # One upsert per key of the group (name, app, two IPs), not one per key of each batch (8).
    assert len(upserts) == 4
    rows = storage._conn.execute("SELECT kind, value, n FROM explorer_hour ORDER BY kind, value").fetchall()
    assert rows == [(0, "e", 4), (1, "10.0.0.1", 2), (1, "10.0.0.2", 2), (3, "app", 4)]


def test_concurrent_writers_each_get_their_own_counts(storage: SQLiteStorage) -> None:
    shared = [record() for _ in range(20)]
    own = [[record() for _ in range(30)] for _ in range(8)]
    results: list[tuple[int, int]] = [(-1, -1)] * 8
    start = threading.Barrier(8)

    def writer(i: int) -> None:
        start.wait(timeout=10)
        results[i] = storage.insert_events(own[i] + shared)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert all(a >= 30 for a, _ in results)
    assert sum(a for a, _ in results) == 8 * 30 + 20  # each shared event accepted exactly once
    assert sum(d for _, d in results) == 7 * 20
    assert len(storage.query_events(EventQuery(limit=1000))) == 260


def _matches(e: EventRecord, q: EventQuery) -> bool:
    """``q``'s filters in Python: the reference for the SQL."""
    return (
        (q.name is None or e.name == q.name)
        and (q.since is None or e.ts >= q.since)
        and (q.until is None or e.ts < q.until)
        and (q.ip is None or e.client_ip == q.ip)
        and (q.user is None or q.user in e.users)
        and (q.after is None or (e.ts, e.seq) < q.after)
    )


def _pages(storage: SQLiteStorage, query: EventQuery) -> list[EventRecord]:
    """Every page of ``query``, each after the last event of the previous one, as the API pages."""
    out: list[EventRecord] = []
    while True:
        page = storage.query_events(query)
        out += page
        if len(page) < query.limit:
            return out
        query = EventQuery(query.name, query.since, query.until, query.ip, query.user, query.limit,
                           (page[-1].ts, page[-1].seq))  # fmt: skip


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """2,500 events of user "mallory" among 2,500 others, 7 per timestamp, stored out of ts order in batches."""
    rng = random.Random(7)
    events = []
    for i in range(5000):
        ts = 1000.0 + i // 7
        if i % 2:  # sometimes the same value under two keys: one user row, one answer
            users: dict[str, str | int] = {"email": "mallory", "name": "mallory"} if i % 3 else {"id": "mallory"}
        else:
            users = {"id": f"u{i % 40}"}
        events.append(record(ts, name=("login.failed", "search")[i % 3 == 0], ip=f"10.0.0.{i % 5}",
                             user_identifiers=users))  # fmt: skip
    rng.shuffle(events)
    storage = SQLiteStorage(str(tmp_path_factory.mktemp("crowded") / "c.db"))
    for start in range(0, len(events), 500):
        storage.insert_events(events[start : start + 500])
    storage.insert_events(events[:300])  # duplicates: no new user rows
    everything = storage.query_events(EventQuery(limit=10_000))
    assert len(everything) == 5000
    yield storage, everything
    storage.close()


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"since": 1100.0},
        {"until": 1300.0},
        {"since": 1100.0, "until": 1300.0},
        {"name": "login.failed"},
        {"ip": "10.0.0.3"},
        {"name": "search", "ip": "10.0.0.1", "since": 1050.0, "until": 1600.0},
    ],
)
def test_user_filter_pages_all_events_once_newest_first(crowded: Any, filters: dict[str, Any]) -> None:
    storage, everything = crowded
    query = EventQuery(user="mallory", limit=100, **filters)
    expected = [e for e in everything if _matches(e, query)]
    got = _pages(storage, query)
    assert [(e.ts, e.seq) for e in got] == [(e.ts, e.seq) for e in expected]
    assert got == expected
    assert [e.ts for e in got] == sorted((e.ts for e in got), reverse=True)
    if not filters:
        assert len(got) == 2500 and len({e.id for e in got}) == 2500


@pytest.mark.parametrize("user", [None, "mallory"])
@pytest.mark.parametrize("until", [1200.0, 1300.0, 1301.0, 1400.0, math.nan])
def test_cursor_with_until_on_either_side(crowded: Any, user: str | None, until: float) -> None:
    storage, everything = crowded
    cursor = next(e for e in everything if e.ts == 1300.0 and (user is None or user in e.users))
    query = EventQuery(user=user, until=until, limit=10_000, after=(cursor.ts, cursor.seq))
    assert storage.query_events(query) == [e for e in everything if _matches(e, query)]


_USER_QUERIES = {
    "user": EventQuery(user="mallory"),
    "user+since": EventQuery(user="mallory", since=1100.0),
    "user+until": EventQuery(user="mallory", until=1300.0),
    "user+since+until": EventQuery(user="mallory", since=1100.0, until=1300.0),
    "user+cursor": EventQuery(user="mallory", after=(1300.0, 2000)),
    "user+until+cursor": EventQuery(user="mallory", until=1400.0, after=(1300.0, 2000)),
    "user+name": EventQuery(user="mallory", name="search"),
    "user+ip": EventQuery(user="mallory", ip="10.0.0.3"),
    "all": EventQuery(name="search", since=1000.0, until=1400.0, ip="10.0.0.3", user="mallory", after=(1300.0, 2000)),
}


@pytest.mark.parametrize("analyzed", [False, True])
@pytest.mark.parametrize("query", _USER_QUERIES.values(), ids=_USER_QUERIES.keys())
def test_user_filter_walks_the_user_index_without_sorting(
    crowded: Any, tmp_path: Path, query: EventQuery, analyzed: bool
) -> None:
    if analyzed:  # with statistics too, the planner must not switch to the name or IP index and sort
        storage = crowded[0]
        storage._db().execute("ANALYZE")
    else:
        storage = SQLiteStorage(str(tmp_path / "empty.db"))
    try:
        plan = storage.query_plan(query)
        assert not any("TEMP B-TREE" in line for line in plan), plan
        assert plan[0].startswith("SEARCH u USING PRIMARY KEY (value=?"), plan
        if query.after is not None:
            assert "(ts,seq)<(?,?)" in plan[0], plan  # starts at the cursor, not at until
    finally:
        if analyzed:
            storage._db().execute("DROP TABLE IF EXISTS sqlite_stat1")
        else:
            storage.close()


_V1_SCHEMA = """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL, ts REAL NOT NULL,
    received_at REAL NOT NULL, app TEXT NOT NULL, client_ip TEXT, properties TEXT NOT NULL, user_identifiers TEXT,
    request TEXT, body TEXT
);
CREATE INDEX events_ts ON events (ts);
CREATE INDEX events_name_ts ON events (name, ts);
CREATE INDEX events_ip_ts ON events (client_ip, ts);
CREATE TABLE event_users (value TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (value, seq)) WITHOUT ROWID;
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY, app TEXT NOT NULL, hostname TEXT, pid INTEGER, sdk_version TEXT, runtime TEXT,
    started_at REAL NOT NULL, last_heartbeat_at REAL, stats TEXT, logged_out_at REAL
);
CREATE INDEX sessions_started ON sessions (started_at);
PRAGMA user_version = 1;
"""


def test_a_database_of_the_first_schema_is_migrated(tmp_path: Path) -> None:
    path = str(tmp_path / "v1.db")
    old = [record(float(i // 2), user_identifiers={"id": "ann", "n": i}) for i in range(6)]
    conn = sqlite3.connect(path)
    conn.executescript(_V1_SCHEMA)  # as the version before (value, ts, seq) wrote it; v1 had no ip_key column
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [(seq, *_row(e)[:-1]) for seq, e in enumerate(old, 1)])  # fmt: skip
    conn.executemany("INSERT INTO event_users VALUES (?, ?)", [(v, s) for s, e in enumerate(old, 1) for v in e.users])
    conn.execute("INSERT INTO sessions (session_id, app, started_at) VALUES ('s', 'shop', 1.0)")
    conn.commit()
    conn.close()

    storage = SQLiteStorage(path)
    try:
        assert storage._db().execute("PRAGMA user_version").fetchone()[0] == 3
        # Version 3: the migrated rows have their IP keys (network filter) and the session a public agent id.
        low, high = ip_key("0.0.0.0"), ip_key("255.255.255.255")
        assert low is not None and high is not None
        assert len(storage.query_events(EventQuery(ip_range=(low, high)))) == len([e for e in old if e.client_ip])
        agent_id = storage.list_agents()[0].agent_id
        assert agent_id is not None and len(agent_id) == 16
        assert [e.id for e in storage.query_events(EventQuery(user="ann"))] == [e.id for e in reversed(old)]
        assert [e.id for e in storage.query_events(EventQuery(user="3"))] == [old[3].id]
        assert storage.session_app("s") == "shop"
        new = record(10.0, user_identifiers={"id": "ann"})
        assert storage.insert_events([new, old[0]]) == (1, 1)
        assert [e.id for e in _pages(storage, EventQuery(user="ann", limit=2))] == [new.id] + [
            e.id for e in reversed(old)
        ]
        assert not any("TEMP B-TREE" in line for line in storage.query_plan(EventQuery(user="ann")))
    finally:
        storage.close()
    SQLiteStorage(path).close()  # opening again: nothing left to migrate


def test_a_database_of_a_newer_version_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(SchemaError, match=r"future\.db.*newer version of sqreen-mw"):
        SQLiteStorage(str(path))
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 99  # left as it was
