"""The explorer's storage queries and rollups, checked against brute force over the same events, on both stores."""

from __future__ import annotations

import ipaddress
import json
import random
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from sqreen_mw.collector import _sqlite_explorer as explorer_queries
from sqreen_mw.collector import _sqlite_rollups as rollups
from sqreen_mw.collector._records import EventRecord
from sqreen_mw.collector._sqlite import SQLiteStorage
from sqreen_mw.collector._sqlite_explorer import ExplorerFilter
from sqreen_mw.collector.explorer import ExplorerStorage

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
IPS = ["10.1.2.3", "10.1.2.200", "10.1.3.4", "10.2.0.1", "192.0.2.9", "2001:db8::1", "2001:db8:0:1::5", None]
NAMES = ["sq.auth_track", "order.placed", "search"]


def _record(rng: random.Random, i: int) -> EventRecord:
    name = rng.choice(NAMES)
    ip = rng.choice(IPS)
    user: dict[str, str | int] | None = rng.choice([None, {"email": "a@x"}, {"email": "b@x", "id": 7}])
    props: dict[str, Any] = {"success": rng.random() < 0.4} if name == "sq.auth_track" else {
        "item": rng.choice(["book", "pen", "2"]), "qty": rng.choice([1, 2, 2.5])}
    ts = T0 + rng.uniform(0, 3 * 86_400)
    return EventRecord(str(uuid.UUID(int=rng.getrandbits(128))), name, ts, ts, rng.choice(["shop", "api"]), ip, props,
                       user, None, None, tuple(str(v) for v in user.values()) if user else ())


class Store(ExplorerStorage, Protocol):
    """What these tests use of a store."""

    def insert_events(self, events: list[EventRecord]) -> tuple[int, int]: ...
    def close(self) -> None: ...


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the store under test (a SQLite file, or a fresh PostgreSQL database), closed after the test."""
    opened: list[Store] = []
    if request.param == "sqlite":
        path = str(tmp_path / "e.db")

        def make() -> Store:
            opened.append(SQLiteStorage(path))
            return opened[-1]
    else:
        url = str(request.getfixturevalue("postgres_url"))

        def make() -> Store:
            from sqreen_mw.collector.postgres.storage import PostgresStorage

            opened.append(PostgresStorage(url))
            return opened[-1]

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def loaded(open_store: Callable[[], Store]) -> tuple[Store, list[EventRecord]]:
    rng = random.Random(5)
    records = [_record(rng, i) for i in range(3000)]
    storage = open_store()
    for lo in range(0, len(records), 250):
        storage.insert_events(records[lo : lo + 250])
    storage.insert_events(records[:100])  # duplicates count once
    return storage, records


def _matches(e: EventRecord, f: ExplorerFilter) -> bool:
    if (f.since is not None and e.ts < f.since) or (f.until is not None and e.ts >= f.until):
        return False
    if (f.name is not None and e.name != f.name) or (f.app is not None and e.app != f.app):
        return False
    if f.network is not None and (e.client_ip is None or ipaddress.ip_address(e.client_ip) not in f.network):
        return False
    if f.user is not None and f.user not in e.users:
        return False
    if f.prop is not None:
        value = e.properties.get(f.prop[0], object())
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if text != f.prop[1] and not (isinstance(value, int | float) and str(value) == f.prop[1]):
            return False
    return True


def test_overview_counts_match_the_events(loaded: tuple[Store, list[EventRecord]]) -> None:
    storage, records = loaded
    since, until = T0 + 3600, T0 + 2 * 86_400
    for bucket in (60, 900, 3600, 6 * 3600):
        data = storage.overview(since, until, bucket)
        lo, hi = (since, until) if bucket < 3600 else (since // 3600 * 3600, -(-until // 3600) * 3600)
        inside = [e for e in records if lo <= e.ts < hi]
        assert sum(sum(v) for v in data.series.values()) == len(inside), bucket
        for name in NAMES:
            expected = Counter(int(e.ts // bucket) * bucket for e in inside if e.name == name)
            got = {t: n for t, n in zip(data.times, data.series[name], strict=True) if n}
            assert got == dict(expected), (bucket, name)
    hours = [e for e in records if since // 3600 * 3600 <= e.ts < -(-until // 3600) * 3600]
    data = storage.overview(since, until, 900)
    assert data.total == len(hours)
    assert dict(data.names) == dict(Counter(e.name for e in hours))
    assert dict(data.ips) == dict(Counter(e.client_ip for e in hours if e.client_ip).most_common(10))
    logins = Counter("success" if e.properties["success"] else "failure" for e in hours if e.name == "sq.auth_track")
    assert data.logins == dict(logins)
    assert dict(data.users) == {'{"email":"a@x"}': sum(1 for e in hours if e.user_identifiers == {"email": "a@x"}),
                                '{"email":"b@x","id":7}': sum(1 for e in hours if e.user_identifiers and "id" in
                                                              e.user_identifiers)}


@pytest.mark.parametrize(
    "f",
    [
        ExplorerFilter(network=ipaddress.ip_network("10.1.2.0/24")),
        ExplorerFilter(network=ipaddress.ip_network("10.1.0.0/20")),
        ExplorerFilter(network=ipaddress.ip_network("10.0.0.0/8")),
        ExplorerFilter(network=ipaddress.ip_network("10.1.2.128/25")),
        ExplorerFilter(network=ipaddress.ip_network("192.0.2.9/32")),
        ExplorerFilter(network=ipaddress.ip_network("0.0.0.0/0")),
        ExplorerFilter(network=ipaddress.ip_network("2001:db8::/64")),
        ExplorerFilter(prop=("success", "false")),
        ExplorerFilter(prop=("item", "2")),
        ExplorerFilter(prop=("qty", "2.5")),
        ExplorerFilter(name="order.placed", app="api", since=T0 + 86_400),
        ExplorerFilter(user="7", until=T0 + 86_400),
        ExplorerFilter(user="a@x", network=ipaddress.ip_network("10.1.0.0/16"), prop=("success", "true")),
    ],
)
def test_search_and_breakdown_match_brute_force(loaded: tuple[Store, list[EventRecord]],
                                                f: ExplorerFilter) -> None:
    storage, records = loaded
    expected = sorted((e for e in records if _matches(e, f)), key=lambda e: -e.ts)
    assert expected, "the case must match something"
    assert [e.id for e in storage.search_events(f, 10_000)] == [e.id for e in expected]
    # Paging by cursor walks the same list.
    seen: list[str] = []
    page = storage.search_events(f, 7)
    while page:
        seen += [e.id for e in page]
        last = page[-1]
        page = storage.search_events(ExplorerFilter(**{**_fields(f), "after": (last.ts, last.seq)}), 7)
    assert seen == [e.id for e in expected]
    rows, scanned, capped = storage.breakdown(f, "ip")
    assert scanned == len(expected) and not capped
    assert {r.value: r.count for r in rows} == dict(Counter(e.client_ip for e in expected))
    distinct_users = {ip: len({str(e.user_identifiers) for e in expected if e.client_ip == ip and e.user_identifiers})
                      for ip in {e.client_ip for e in expected}}
    assert {r.value: r.users for r in rows} == distinct_users


def _fields(f: ExplorerFilter) -> dict[str, Any]:
    return {name: getattr(f, name) for name in ExplorerFilter.__slots__}  # type: ignore[attr-defined]


def test_breakdown_by_property_and_user(loaded: tuple[Store, list[EventRecord]]) -> None:
    storage, records = loaded
    rows, _, _ = storage.breakdown(ExplorerFilter(name="sq.auth_track"), "property:success")
    logins = [e for e in records if e.name == "sq.auth_track"]
    assert {r.value: r.count for r in rows} == {
        True: sum(e.properties["success"] for e in logins), False: sum(not e.properties["success"] for e in logins)}
    rows, _, _ = storage.breakdown(ExplorerFilter(name="order.placed"), "property:qty")
    orders = [e for e in records if e.name == "order.placed"]
    assert {(type(r.value), r.value): r.count for r in rows} == dict(
        Counter((type(e.properties["qty"]), e.properties["qty"]) for e in orders))
    rows, _, _ = storage.breakdown(ExplorerFilter(), "user")
    assert {None if r.value is None else tuple(sorted(r.value.items())): r.count for r in rows} == dict(
        Counter(None if e.user_identifiers is None else tuple(sorted(e.user_identifiers.items())) for e in records))
    rows, _, _ = storage.breakdown(ExplorerFilter(), "property:missing")
    assert [(r.value, r.count) for r in rows] == [(None, len(records))]
    with pytest.raises(ValueError, match="group must be"):
        storage.breakdown(ExplorerFilter(), "colour")
    with pytest.raises(ValueError, match="double quote"):
        storage.breakdown(ExplorerFilter(), 'property:a"b')


def test_actor_summary_and_event(loaded: tuple[Store, list[EventRecord]]) -> None:
    storage, records = loaded
    f = ExplorerFilter(network=ipaddress.ip_network("10.1.2.3/32"))
    mine = [e for e in records if e.client_ip == "10.1.2.3"]
    summary, first, last = storage.actor_summary(f)
    assert dict(summary) == dict(Counter(e.name for e in mine))
    assert (first, last) == (min(e.ts for e in mine), max(e.ts for e in mine))
    assert storage.actor_summary(ExplorerFilter(user="nobody")) == ([], None, None)
    stored = storage.get_event(records[5].id)
    assert stored is not None and stored._replace(seq=0) == records[5]
    assert storage.get_event(str(uuid.uuid4())) is None


def _wait_for_backfill(storage: SQLiteStorage, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while storage.rollup_backfill() is not None:
        assert time.monotonic() < deadline, f"backfill still at {storage.rollup_backfill()} after {timeout}s"
        time.sleep(0.02)


def test_rollups_backfilled_for_a_database_made_before_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollups, "BACKFILL_CHUNK", 40)  # many chunks, so ingest interleaves with them
    rng = random.Random(9)
    records = [_record(rng, i) for i in range(600)]
    path = str(tmp_path / "old.db")
    storage = SQLiteStorage(path)
    storage.insert_events(records)
    storage.close()
    with sqlite3.connect(path) as db:  # as an older version left it: events, no rollups
        for table in ("explorer_minute", "explorer_hour", "explorer_backfill"):
            db.execute(f"DROP TABLE {table}")
    storage = SQLiteStorage(path)
    try:
        assert storage.rollup_backfill() is not None  # starts it
        later = [_record(rng, i)._replace(ts=T0 + 10 + i) for i in range(50)]
        for lo in range(0, len(later), 5):  # stored while the backfill runs: counted once, at ingest
            storage.insert_events(later[lo : lo + 5])
        storage.insert_events(records[:30])  # duplicates of old events count nothing
        _wait_for_backfill(storage)
        everything = records + later
        data = storage.overview(T0, T0 + 3 * 86_400, 3600)
        assert data.total == len(everything)
        assert dict(data.names) == dict(Counter(e.name for e in everything))
        assert dict(data.ips) == dict(Counter(e.client_ip for e in everything if e.client_ip).most_common(10))
    finally:
        storage.close()
    storage = SQLiteStorage(path)  # reopened: nothing counted twice
    try:
        assert storage.rollup_backfill() is None
        assert storage.overview(T0, T0 + 3 * 86_400, 3600).total == len(records) + 50
    finally:
        storage.close()


def test_postgres_rollups_count_the_events_of_a_database_made_before_them(postgres_url: str) -> None:
    from sqreen_mw.collector.postgres.storage import PostgresStorage

    rng = random.Random(9)
    records = [_record(rng, i) for i in range(600)]
    storage = PostgresStorage(postgres_url)
    storage.insert_events(records)
    storage.close()
    import psycopg

    with psycopg.connect(postgres_url) as conn:  # as schema version 1 left it: events, no rollups
        conn.execute("DROP TABLE explorer_minute, explorer_hour, explorer_minute_delta, explorer_hour_delta")
        conn.execute("ALTER TABLE event_users DROP COLUMN name")
        conn.execute("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
    for _ in range(2):  # migrated on the first open, nothing counted twice on the second
        storage = PostgresStorage(postgres_url)
        try:
            assert storage.rollup_backfill() is None
            storage.insert_events(records[:30])  # duplicates of old events count nothing
            data = storage.overview(T0, T0 + 3 * 86_400, 3600)
            assert data.total == len(records)
            assert dict(data.names) == dict(Counter(e.name for e in records))
            assert dict(data.ips) == dict(Counter(e.client_ip for e in records if e.client_ip).most_common(10))
            assert data.logins == dict(Counter("success" if e.properties["success"] else "failure"
                                               for e in records if e.name == "sq.auth_track"))
            summary, first, last = storage.actor_summary(ExplorerFilter(user="a@x"))
            mine = [e for e in records if "a@x" in e.users]
            assert dict(summary) == dict(Counter(e.name for e in mine))
            assert (first, last) == (min(e.ts for e in mine), max(e.ts for e in mine))
        finally:
            storage.close()


def test_postgres_event_pages_walk_an_index_newest_first(postgres_url: str) -> None:
    # PostgreSQL cannot estimate a property filter: left alone it plans a scan and sort of the whole table.
    from sqreen_mw.collector.postgres.storage import PostgresStorage

    rng = random.Random(3)
    storage = PostgresStorage(postgres_url)
    try:
        records = [_record(rng, i) for i in range(20_000)]
        for lo in range(0, len(records), 5000):
            storage.insert_events(records[lo : lo + 5000])
        with storage._tx() as conn:
            conn.execute("ANALYZE")
        for f in (ExplorerFilter(prop=("success", "true")), ExplorerFilter(prop=("qty", "2"), since=T0),
                  ExplorerFilter(), ExplorerFilter(network=ipaddress.ip_network("10.1.0.0/16"))):
            plan = "\n".join(storage.search_plan(f, 51))
            assert "Index Scan Backward" in plan or "Index Only Scan Backward" in plan, plan
            assert "Seq Scan" not in plan and "Sort" not in plan and "Gather" not in plan, plan
    finally:
        storage.close()


def test_overview_refuses_odd_buckets(open_store: Callable[[], Store]) -> None:
    with pytest.raises(ValueError, match="bucket"):
        open_store().overview(T0, T0 + 3600, 90)


def test_breakdown_reads_a_bounded_number_of_the_newest_events(
    loaded: tuple[Store, list[EventRecord]], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, records = loaded
    monkeypatch.setattr(explorer_queries, "BREAKDOWN_SCAN", 100)
    rows, scanned, capped = storage.breakdown(ExplorerFilter(), "name")
    newest = sorted(records, key=lambda e: -e.ts)[:100]
    assert (scanned, capped) == (100, True)
    assert {r.value: r.count for r in rows} == dict(Counter(e.name for e in newest))
    summary, first, _ = storage.actor_summary(ExplorerFilter(user="a@x"))
    assert sum(n for _, n in summary) == 100
    assert first == min(e.ts for e in sorted((e for e in records if "a@x" in e.users), key=lambda e: -e.ts)[:100])


@pytest.mark.parametrize(
    "ids", [{"email": "a@x"}, {"id": 7, "email": "\u00e9\ud800\"<"}, {"b": 1, "a": "2"}, {"n": -3}]
)
def test_user_key_is_canonical_json(ids: dict[str, Any]) -> None:
    assert explorer_queries.user_key(ids) == json.dumps(ids, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
