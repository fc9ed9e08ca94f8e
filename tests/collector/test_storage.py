"""SQLiteStorage on its own: dedup, atomicity, queries, sessions, persistence."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqreen_mw.collector._storage import (
    AgentSession,
    EventQuery,
    EventRecord,
    SQLiteStorage,
    Storage,
    _row,
    _Write,
)


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
def storage(tmp_path: Path) -> Any:
    s = SQLiteStorage(str(tmp_path / "s.db"))
    yield s
    s.close()


def test_is_a_storage(storage: SQLiteStorage) -> None:
    checked: Storage = storage  # mypy checks the Protocol; this checks the file is usable through it
    assert checked.query_events(EventQuery()) == []


def test_wal_and_synchronous_normal(storage: SQLiteStorage, tmp_path: Path) -> None:
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


def test_a_failing_batch_stores_nothing(storage: SQLiteStorage) -> None:
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


def test_group_commit_isolates_a_failing_batch(storage: SQLiteStorage) -> None:
    good1, good2 = [record(), record()], [record()]
    bad = [record(users=(object(),))]
    group = [_Write(batch, [_row(e) for e in batch]) for batch in (good1, bad, good2)]
    storage._commit(group)
    assert [w.done for w in group] == [True, True, True]
    assert (group[0].result, group[0].error, group[2].result, group[2].error) == ((2, 0), None, (1, 0), None)
    assert isinstance(group[1].error, sqlite3.Error)
    assert sorted(e.id for e in storage.query_events(EventQuery())) == sorted(e.id for e in good1 + good2)


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
