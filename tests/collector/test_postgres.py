"""PostgresStorage on its own: schema versions, exactly-once across replicas, outages, the migrate command, the
skip-or-fail rule of the PostgreSQL tests. (The whole collector suite also runs on PostgreSQL: see conftest.)"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from sqreen_mw.collector import create_app
from sqreen_mw.collector._records import EventQuery, EventRecord
from sqreen_mw.collector._storage import SchemaError
from sqreen_mw.collector.cli import main
from sqreen_mw.collector.postgres import StorageUnavailable, is_postgres_url, redact

from .. import postgres_server as pg
from ._helpers import ADMIN, API_KEY, event, login, send

pg.require_psycopg()
import psycopg  # noqa: E402

from sqreen_mw.collector.postgres._schema import SCHEMA_VERSION  # noqa: E402 - needs psycopg
from sqreen_mw.collector.postgres.storage import PostgresStorage  # noqa: E402 - needs psycopg


def _record(i: int, event_id: str | None = None, user: str | None = None) -> EventRecord:
    users = {"email": user} if user else None
    return EventRecord(event_id or str(uuid.uuid4()), "login", 1_700_000_000.0 + i, 1_700_000_100.0, "shop",
                       "203.0.113.7", {"i": i, "s": "\u00e9\ud800"}, users, None, {"raw": [1, 2.5]},
                       (user,) if user else ())


@contextlib.contextmanager
def _left_by_version(postgres_url: str, version: int) -> Iterator[Any]:
    """A connection on which the caller undoes the later migrations; then the database says ``version``, and a
    storage that may not migrate refuses it by name."""
    with psycopg.connect(postgres_url) as conn:
        yield conn
        conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (version,))
    with pytest.raises(SchemaError, match=f"schema version {version}"):
        PostgresStorage(postgres_url, migrate=False)


@pytest.fixture
def storage(postgres_url: str) -> Iterator[PostgresStorage]:
    s = PostgresStorage(postgres_url)
    yield s
    s.close()


def test_the_store_is_chosen_by_the_url_scheme() -> None:
    assert is_postgres_url("postgresql://u@h/db") and is_postgres_url("postgres://h/db")
    assert not is_postgres_url("events.db") and not is_postgres_url("/var/lib/postgresql.db")
    assert redact("postgresql://user:s3cret@db.internal:5432/x") == "postgresql://user:***@db.internal:5432/x"


def test_round_trip_dedup_and_order(storage: PostgresStorage) -> None:
    first = [_record(i, user="a@example.com") for i in range(5)]
    assert storage.insert_events(first) == (5, 0)
    again = [first[2], _record(9), _record(9, first[3].id)]  # two known ids, one new
    fresh = storage.store_events(again)
    assert [e.id for e in fresh] == [again[1].id]
    rows = storage.query_events(EventQuery(limit=100))
    assert [r.ts for r in rows] == sorted((r.ts for r in rows), reverse=True) and len(rows) == 6
    assert rows[-1].properties == {"i": 0, "s": "\u00e9\ud800"} and rows[-1].body == {"raw": [1, 2.5]}
    by_user = storage.query_events(EventQuery(user="a@example.com", limit=2))
    assert [r.id for r in by_user] == [first[4].id, first[3].id]
    page2 = storage.query_events(EventQuery(user="a@example.com", limit=10, after=(by_user[-1].ts, by_user[-1].seq)))
    assert [r.id for r in page2] == [e.id for e in first[2::-1]]


def test_the_same_batch_through_two_replicas_at_once_is_stored_once(postgres_url: str) -> None:
    replicas = [PostgresStorage(postgres_url), PostgresStorage(postgres_url)]
    try:
        batches = [[_record(i) for i in range(200)] for _ in range(10)]
        counts: list[tuple[int, int]] = []
        lock = threading.Lock()

        def push(store: PostgresStorage, batch: list[EventRecord]) -> None:
            result = store.insert_events(batch)
            with lock:
                counts.append(result)

        threads = [threading.Thread(target=push, args=(replicas[n % 2], batch)) for batch in batches for n in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(counts) == 20 and sum(a for a, _ in counts) == 2000 and sum(d for _, d in counts) == 2000
        assert len(replicas[0].query_events(EventQuery(limit=5000))) == 2000
    finally:
        for r in replicas:
            r.close()


def test_a_newer_schema_is_refused_by_name(postgres_url: str) -> None:
    PostgresStorage(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    with pytest.raises(SchemaError, match=r"newer version of sqreen-mw.*schema version 99"):
        PostgresStorage(postgres_url)


def test_migrate_command_creates_the_schema(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--db", postgres_url]) == 0
    assert "schema up to date" in capsys.readouterr().out
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (SCHEMA_VERSION,)
    PostgresStorage(postgres_url, migrate=False).close()  # now usable without migrating


def test_a_version_2_database_is_migrated_to_the_narrow_index_of_ip_texts(postgres_url: str) -> None:
    storage = PostgresStorage(postgres_url)
    storage.insert_events([_record(0), _record(1)._replace(client_ip="unknown"), _record(2)._replace(client_ip=None)])
    storage.close()
    with _left_by_version(postgres_url, 2) as conn:
        conn.execute("DROP INDEX events_iptext_ts")
        conn.execute("CREATE INDEX events_ip_ts ON events (client_ip, ts, seq)")
    storage = PostgresStorage(postgres_url)
    try:
        with storage._tx() as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (SCHEMA_VERSION,)
            indexes = dict(conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events'"))
        assert "events_ip_ts" not in indexes and "WHERE (ip_key IS NULL)" in indexes["events_iptext_ts"], indexes
        assert [e.client_ip for e in storage.query_events(EventQuery(ip="unknown"))] == ["unknown"]
        assert [e.client_ip for e in storage.query_events(EventQuery(ip="203.0.113.7"))] == ["203.0.113.7"]
        assert storage.insert_events([_record(3)._replace(client_ip="unknown")]) == (1, 0)
        assert len(storage.query_events(EventQuery(ip="unknown"))) == 2
    finally:
        storage.close()


def _fillfactors(conn: Any) -> dict[str, list[str] | None]:
    rows = conn.execute("SELECT relname, reloptions FROM pg_class"
                        " WHERE relname IN ('explorer_minute', 'explorer_hour')")
    return dict(rows.fetchall())


def test_a_version_3_database_with_events_is_migrated_to_rollup_pages_with_room(postgres_url: str) -> None:
    t0 = 1_700_000_000.0 - 1_700_000_000.0 % 3600
    records = [_record(i, user=f"u{i % 4}@example.com")._replace(name=f"n{i % 3}", ts=t0 + i * 20.0)
               for i in range(300)]  # fmt: skip
    storage = PostgresStorage(postgres_url)
    storage.insert_events(records[:200])
    storage.close()
    with _left_by_version(postgres_url, 3) as conn:  # the tables' default fillfactor
        conn.execute("ALTER TABLE explorer_minute RESET (fillfactor)")
        conn.execute("ALTER TABLE explorer_hour RESET (fillfactor)")
        assert _fillfactors(conn) == {"explorer_minute": None, "explorer_hour": None}
    storage = PostgresStorage(postgres_url)
    try:
        with storage._tx() as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (SCHEMA_VERSION,)
            assert _fillfactors(conn) == {"explorer_minute": ["fillfactor=50"], "explorer_hour": ["fillfactor=70"]}
        assert storage.insert_events(records[150:]) == (100, 50)  # the events of version 3 are still known
        overview = storage.overview(t0, t0 + 3 * 3600, 3600)
        assert overview.total == 300
        assert dict(overview.names) == {f"n{k}": 100 for k in range(3)}
        assert [e.ts for e in storage.query_events(EventQuery(user="u1@example.com", limit=500))] == [
            r.ts for r in reversed(records) if r.users == ("u1@example.com",)
        ]
    finally:
        storage.close()


def test_event_json_is_stored_as_ascii_text_that_reads_back_the_same(storage: PostgresStorage) -> None:
    import json

    properties = {"e": "\u00e9t\u00e9", "f": 1e16, "g": 0.1, "big": 2**70, "del": "\x7f", "lone": "\ud800",
                  "n": [1, None]}
    plain = {"a": "b", "x": 1.5, "ok": True}
    records = [_record(0)._replace(properties=properties), _record(1)._replace(properties=plain)]
    storage.insert_events(records)
    with storage._tx() as conn:
        texts = [r[0] for r in conn.execute("SELECT properties FROM events ORDER BY ts")]
    assert all(t.isascii() for t in texts), texts
    assert [json.loads(t) for t in texts] == [properties, plain]
    assert sorted(e.properties.get("g", 0) for e in storage.query_events(EventQuery())) == [0, 0.1]


def _rows(storage: PostgresStorage, table: str, key: str) -> tuple[int, int]:
    """(rows, distinct keys) of a rollup table."""
    with storage._tx() as conn:
        return conn.execute(f"SELECT count(*), count(DISTINCT ({key})) FROM {table}").fetchone()  # type: ignore[no-any-return]  # noqa: S608


_ROLLUPS = (("explorer_hour", "kind, hour, value"), ("explorer_minute", "minute, name"),
            ("explorer_hour_delta", "kind, hour, value"), ("explorer_minute_delta", "minute, name"))


def test_rollup_deltas_and_past_hours_shards_fold_into_one_row_per_key(storage: PostgresStorage) -> None:
    storage._next_fold = float("inf")  # folded by hand below, not after the first batch
    t0 = 1_700_000_000.0 - 1_700_000_000.0 % 3600
    records = [
        _record(i, user=f"u{i % 5}@example.com")._replace(name=f"n{i % 3}", client_ip=f"198.51.100.{i % 7}",
                                                         ts=t0 + i * 30.0)
        for i in range(600)  # five hours
    ]  # fmt: skip
    for lo in range(0, len(records), 10):  # 60 batches, each appending its counts to the deltas
        storage.insert_events(records[lo : lo + 10])
    views = [(t0, t0 + 5 * 3600, 3600), (t0, t0 + 5 * 3600, 600), (t0 + 3600, t0 + 2 * 3600, 60)]
    before = [storage.overview(*view) for view in views]
    assert before[0].total == 600 and dict(before[0].names) == {f"n{k}": 200 for k in range(3)}
    assert dict(before[0].ips) == {f"198.51.100.{k}": len(range(k, 600, 7)) for k in range(7)}
    assert _rows(storage, "explorer_hour", "kind, hour, value") == (0, 0)  # nothing folded yet
    deltas, keys = _rows(storage, "explorer_hour_delta", "kind, hour, value")
    assert deltas > keys  # one key counted by many batches
    now = t0 + 9 * 3600
    assert storage.fold_rollups(now=t0 + 5 * 3600) == t0 // 3600 + 4  # the hour before the current one waits
    assert _rows(storage, "explorer_hour_delta", "kind, hour, value") == (0, 0)  # every delta folded
    assert _rows(storage, "explorer_hour", "kind, hour, value") == (keys, keys)
    assert [storage.overview(*view) for view in views] == before
    folded = [storage.fold_rollups(now=now) for _ in range(3)]
    assert folded == [t0 // 3600 + 8, None, None]
    after = [storage.overview(*view) for view in views]
    assert after == before
    for table, key in _ROLLUPS:
        total, keys = _rows(storage, table, key)
        assert total == keys, table  # one row per key
    late = _record(9999)._replace(name="n0", client_ip="198.51.100.1", ts=t0 + 90.0)  # after its hour was folded
    storage.insert_events([late])
    for _ in range(2):  # a delta, then folded into its key's row
        overview = storage.overview(*views[0])
        assert overview.total == before[0].total + 1 == 601
        assert dict(overview.names)["n0"] == dict(before[0].names)["n0"] + 1
        assert dict(overview.ips)["198.51.100.1"] == dict(before[0].ips)["198.51.100.1"] + 1
        storage.fold_rollups(now=now)
    assert _rows(storage, "explorer_minute_delta", "minute, name") == (0, 0)


def test_batches_during_a_fold_are_counted_once(storage: PostgresStorage) -> None:
    storage._next_fold = float("inf")
    t0 = 1_700_000_000.0 - 1_700_000_000.0 % 3600
    records = [_record(i)._replace(name=f"n{i % 4}", client_ip=f"198.51.100.{i % 9}", ts=t0 + i) for i in range(800)]
    folds = threading.Event()

    def fold() -> None:
        while not folds.is_set():
            storage.fold_rollups(now=t0 + 3600)

    folder = threading.Thread(target=fold)
    folder.start()
    try:
        for lo in range(0, len(records), 20):
            storage.insert_events(records[lo : lo + 20])
            overview = storage.overview(t0, t0 + 3600, 60)  # whatever is folded meanwhile, each event once
            assert overview.total == lo + 20 == sum(sum(series) for series in overview.series.values())
    finally:
        folds.set()
        folder.join()
    storage.fold_rollups(now=t0 + 3600)
    overview = storage.overview(t0, t0 + 3600, 3600)
    assert overview.total == 800 and dict(overview.names) == {f"n{k}": 200 for k in range(4)}
    assert dict(overview.ips) == {f"198.51.100.{k}": len(range(k, 800, 9)) for k in range(9)}
    assert _rows(storage, "explorer_hour_delta", "kind, hour, value") == (0, 0)


def test_the_ingest_path_folds_once_every_fold_every_seconds_whichever_replica(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqreen_mw.collector.postgres import storage as module

    monkeypatch.setattr(module, "FOLD_EVERY", 3600.0)
    replicas = [PostgresStorage(postgres_url), PostgresStorage(postgres_url)]
    try:
        assert replicas[0].insert_events([_record(0)]) == (1, 0)  # the first look: no fold yet, so one now
        assert _rows(replicas[0], "explorer_minute_delta", "minute, name") == (0, 0)
        assert replicas[1].insert_events([_record(1)]) == (1, 0)  # its first look too, but the last fold is recent
        replicas[0]._next_fold = 0.0
        assert replicas[0].insert_events([_record(2)]) == (1, 0)
        assert _rows(replicas[0], "explorer_minute_delta", "minute, name") == (2, 1)  # two batches wait
        with replicas[0]._tx() as conn:
            conn.execute("UPDATE meta SET value = value - 3601 WHERE key = 'rollups_folded_at'")
        replicas[1]._next_fold = 0.0
        assert replicas[1].insert_events([_record(3)]) == (1, 0)  # due now: this replica folds
        assert _rows(replicas[0], "explorer_minute_delta", "minute, name") == (0, 0)
        assert replicas[0].overview(1_699_999_200.0, 1_700_006_400.0, 60).total == 4
    finally:
        for replica in replicas:
            replica.close()


def test_a_version_4_database_with_shards_is_migrated_to_rollup_deltas(postgres_url: str) -> None:
    t0 = 1_700_000_000.0 - 1_700_000_000.0 % 3600
    records = [_record(i, user=f"u{i % 4}@example.com")._replace(name=f"n{i % 3}", ts=t0 + i * 20.0)
               for i in range(540)]  # three hours  # fmt: skip
    storage = PostgresStorage(postgres_url)
    storage._next_fold = float("inf")
    storage.insert_events(records[:360])
    storage.fold_rollups(now=t0)  # the deltas into shard 0 (no hour past yet)
    storage.close()
    with _left_by_version(postgres_url, 4) as conn:  # counts spread over shards, no deltas
        for table, key in (("explorer_hour", "kind, hour, value"), ("explorer_minute", "minute, name")):
            conn.execute(f"INSERT INTO {table} ({key}, shard, n) SELECT {key}, 3, n / 2 FROM {table}"  # noqa: S608
                         " WHERE n >= 2")
            conn.execute(f"UPDATE {table} SET n = n - n / 2 WHERE shard = 0")  # noqa: S608
            conn.execute(f"UPDATE {table} SET shard = 5 WHERE shard = 0 AND n = 1")  # noqa: S608
        conn.execute("DROP TABLE explorer_hour_delta, explorer_minute_delta")
        conn.execute("DELETE FROM meta WHERE key = 'rollups_folded_hour'")
        assert conn.execute("SELECT count(*) FROM explorer_hour WHERE shard = 3").fetchone()[0] > 0
    storage = PostgresStorage(postgres_url)
    storage._next_fold = float("inf")
    try:
        with storage._tx() as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (SCHEMA_VERSION,)
        views = [(t0, t0 + 3 * 3600, 3600), (t0, t0 + 3 * 3600, 600)]
        assert storage.overview(*views[0]).total == 360  # the shards of version 4, summed
        assert storage.insert_events(records[300:]) == (180, 60)  # the events of version 4 are still known
        before = [storage.overview(*view) for view in views]
        assert before[0].total == 540 and dict(before[0].names) == {f"n{k}": 180 for k in range(3)}
        assert dict(before[0].users) == {f'{{"email":"u{k}@example.com"}}': 135 for k in range(4)}
        assert storage.fold_rollups(now=t0 + 5 * 3600) == t0 // 3600 + 4  # deltas and shards alike
        assert [storage.overview(*view) for view in views] == before
        for table, key in _ROLLUPS:
            total, keys = _rows(storage, table, key)
            assert total == keys, table
        with storage._tx() as conn:
            assert conn.execute("SELECT count(*) FROM explorer_hour WHERE shard <> 0").fetchone() == (0,)
    finally:
        storage.close()


def _indexes(conn: Any) -> dict[str, str]:
    return dict(conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events'").fetchall())


def _answers(storage: PostgresStorage, t0: float) -> list[Any]:
    from sqreen_mw.collector._sqlite_explorer import ExplorerFilter

    page = storage.query_events(EventQuery(user="u1@example.com", limit=7))
    return [
        storage.query_events(EventQuery(limit=1000)),
        storage.query_events(EventQuery(user="u1@example.com", limit=1000)),
        storage.query_events(EventQuery(user="u1@example.com", limit=7, after=(page[-1].ts, page[-1].seq))),
        storage.query_events(EventQuery(user="u2@example.com", name="n1", limit=1000)),
        storage.query_events(EventQuery(ip="203.0.113.7", limit=1000)),
        storage.search_events(ExplorerFilter(user="u3@example.com"), 1000),
        storage.breakdown(ExplorerFilter(user="u3@example.com"), "name"),
        storage.actor_summary(ExplorerFilter(user="u0@example.com")),
        storage.overview(t0, t0 + 3 * 3600, 3600),
        storage.get_event(page[0].id),
    ]


def test_a_new_database_has_no_primary_key_on_the_events_seq(storage: PostgresStorage) -> None:
    with storage._tx() as conn:
        indexes = _indexes(conn)
    assert "events_pkey" not in indexes and "events_id_key" in indexes and "events_ts" in indexes, indexes
    storage.insert_events([_record(i, user="a@example.com") for i in range(3)])
    rows = storage.query_events(EventQuery(user="a@example.com"))
    assert len({e.seq for e in rows}) == 3 and all(isinstance(e.seq, int) for e in rows)


def test_a_version_5_database_is_migrated_to_events_without_the_primary_key_of_seq(postgres_url: str) -> None:
    t0 = 1_700_000_000.0 - 1_700_000_000.0 % 3600
    records = [_record(i, user=f"u{i % 4}@example.com")._replace(name=f"n{i % 3}", ts=t0 + (i // 2) * 20.0)
               for i in range(400)]  # two events at each timestamp: seq breaks the ties  # fmt: skip
    storage = PostgresStorage(postgres_url)
    storage.insert_events(records[:300])
    before = _answers(storage, t0)
    storage.close()
    with _left_by_version(postgres_url, 5) as conn:  # seq is the primary key
        conn.execute("ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (seq)")
    storage = PostgresStorage(postgres_url)
    try:
        with storage._tx() as conn:
            assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (SCHEMA_VERSION,)
            assert "events_pkey" not in _indexes(conn)
        assert _answers(storage, t0) == before
        assert len(before[0]) == 300 and len(before[1]) == 75 and len(before[2]) == 7
        assert storage.insert_events(records[250:]) == (100, 50)  # the events of version 5 are still known
        assert len(storage.query_events(EventQuery(user="u1@example.com", limit=1000))) == 100
        assert storage.delete_events_before(t0 + 50 * 20.0) == 100  # retention: the oldest events, their user rows
        assert len(storage.query_events(EventQuery(limit=1000))) == 300
        with storage._tx() as conn:
            assert conn.execute("SELECT count(*) FROM event_users").fetchone() == (300,)
    finally:
        storage.close()


def test_an_event_whose_identifiers_share_a_value_has_one_user_row_for_it(storage: PostgresStorage) -> None:
    same = _record(0)._replace(user_identifiers={"email": "m", "name": "m", "id": 7}, users=("m", "m", "7"))
    assert storage.insert_events([same, _record(1, user="m"), same]) == (2, 1)
    with storage._tx() as conn:
        rows = conn.execute("SELECT value, count(*) FROM event_users GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [("7", 1), ("m", 2)]
    assert [e.ts for e in storage.query_events(EventQuery(user="m"))] == [1_700_000_001.0, 1_700_000_000.0]


def test_retention_finds_the_oldest_events_by_an_index_and_deletes_them_by_address(storage: PostgresStorage) -> None:
    from sqreen_mw.collector.postgres.storage import _DELETE_OLDEST

    for start in range(0, 20_000, 5000):
        storage.insert_events([_record(i, user=f"u{i % 50}@example.com") for i in range(start, start + 5000)])
    with storage._tx() as conn:
        conn.execute("ANALYZE")
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {_DELETE_OLDEST}", (1_700_000_100.0, 10)).fetchall())
    assert "Seq Scan" not in plan and "Tid Scan on events" in plan and "events_ts" in plan, plan
    assert storage.delete_events_before(1_700_000_100.0, 60) == 60
    assert storage.delete_events_before(1_700_000_100.0, 60) == 40
    assert min(e.ts for e in storage.query_events(EventQuery(limit=100_000))) == 1_700_000_100.0
    with storage._tx() as conn:
        assert conn.execute("SELECT count(*), min(ts) FROM event_users").fetchone() == (19_900, 1_700_000_100.0)


def test_a_batch_chosen_as_a_deadlock_victim_is_run_again(storage: PostgresStorage) -> None:
    with storage._tx() as conn:  # the first attempt fails as PostgreSQL's deadlock detector makes it fail
        conn.execute("CREATE SEQUENCE attempts")
        conn.execute("CREATE FUNCTION victim() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                     " IF nextval('attempts') = 1 THEN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01';"
                     " END IF; RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER victim BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION victim()")
    assert storage.insert_events([_record(0), _record(1)]) == (2, 0)
    assert len(storage.query_events(EventQuery())) == 2


def test_migrate_command_names_an_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    from ..support import free_port

    url = f"postgresql://nobody:pw@127.0.0.1:{free_port()}/x?connect_timeout=1"
    assert main(["migrate", "--db", url]) == 1
    err = capsys.readouterr().err
    assert "sqreen-mw migrate: error:" in err and "pw@" not in err and "127.0.0.1" in err


def test_a_block_bumps_the_version_and_notifies_in_one_transaction(storage: PostgresStorage) -> None:
    from sqreen_mw.collector.automation.store import Block

    heard: list[int] = []
    got = threading.Event()

    def on_version(v: int, resync: bool) -> None:
        heard.append(v)
        if v >= 1:
            got.set()

    storage.listen(on_version)
    assert storage._listeners[0].connected.wait(10)
    version = storage.insert_block(Block("b_1", "ip", "198.51.100.9", "test", None, time.time(), None))
    assert version == 1 and got.wait(10) and heard[-1] == 1


@pytest.fixture
def own_server() -> Iterator[pg.PostgresServer]:
    """A server of this test's own, which it may stop and start."""
    pg.server()  # skips (or fails) the same way when there is none
    bin_dir = pg.find_bin_dir()
    assert bin_dir is not None
    server = pg.PostgresServer(bin_dir)
    server.start()
    yield server
    server.cleanup()


@pytest.mark.anyio
async def test_database_down_answers_503_retry_after_then_recovers(own_server: pg.PostgresServer) -> None:
    app = create_app(db_path=own_server.new_database(), api_keys={API_KEY: ""}, admin_token=ADMIN)
    app.state.storage._wait = 2.0  # the outage is detected within 2 s per request
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as client:
            sid = await login(client)
            assert (await send(client, sid, [event()])).status_code == 200
            own_server.stop("fast")
            down = await send(client, sid, [event()])
            assert down.status_code == 503, down.text
            assert down.headers["retry-after"].isdigit() and "storage unavailable" in down.json()["error"]
            listing = await client.get("/api/v1/events", headers={"Authorization": f"Bearer {ADMIN}"})
            assert listing.status_code == 503
            own_server.restart()
            deadline = time.monotonic() + 30
            while True:  # the pool replaces its broken connections by itself
                answer = await send(client, sid, [event()])
                if answer.status_code == 200 or time.monotonic() > deadline:
                    break
                await anyio.sleep(0.5)
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] == 1
    finally:
        app.state.storage.close()


def test_missing_server_skips_or_fails_as_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pg.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server here"):
        pg.unavailable("no server here")
    monkeypatch.setenv(pg.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="SQREEN_REQUIRE_POSTGRES=1 but no server here"):
        pg.unavailable("no server here")




@pytest.mark.anyio
async def test_a_nul_in_a_text_column_is_a_422_and_stores_nothing(postgres_url: str) -> None:
    app = create_app(db_path=postgres_url, api_keys={API_KEY: ""}, admin_token=ADMIN)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as client:
            sid = await login(client)
            answer = await send(client, sid, [event(), event("login\x00failed")])
            assert answer.status_code == 422 and "NUL" in answer.json()["errors"][0]["message"]
            assert app.state.storage.query_events(EventQuery()) == []
            inside_json = event()
            inside_json["properties"] = {"note": "a\x00b"}  # escaped inside JSON: stored as any other
            assert (await send(client, sid, [inside_json])).json()["accepted"] == 1
            (stored,) = app.state.storage.query_events(EventQuery())
            assert stored.properties == {"note": "a\x00b"}
    finally:
        app.state.storage.close()


_LISTINGS = [
    EventQuery(limit=100),
    EventQuery(name="login", limit=100),
    EventQuery(ip="203.0.113.7", limit=100),
    EventQuery(ip="unknown", limit=100),  # no address: the text as stored
    EventQuery(user="u7@example.com", limit=100),
    EventQuery(user="u7@example.com", name="login", limit=100, after=(1_700_010_000.0, 10**9)),
    EventQuery(since=1_700_000_000.0, until=1_700_020_000.0, limit=100),
]


def test_every_listing_walks_an_index_without_sorting(storage: PostgresStorage) -> None:
    for start in range(0, 30_000, 5000):
        storage.insert_events([_record(i, user=f"u{i % 50}@example.com") for i in range(start, start + 5000)])
    storage.insert_events([_record(i)._replace(client_ip="unknown") for i in range(200)])
    with storage._tx() as conn:
        conn.execute("ANALYZE")
    assert len(storage.query_events(EventQuery(ip="unknown", limit=500))) == 200
    for query in _LISTINGS:
        plan = "\n".join(storage.query_plan(query))
        assert "Sort" not in plan and "Seq Scan" not in plan, (query, plan)


def test_a_counting_failure_after_the_batch_is_stored_is_logged_and_counted(
    storage: PostgresStorage, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    from sqreen_mw.collector.automation import Automation, parse_playbook

    playbook = parse_playbook({"name": "any", "event": "login", "actor": "ip", "threshold": 1, "window": "1h",
                               "response": [{"action": "log"}]})
    automation = Automation(storage, playbooks=[playbook])
    try:
        def unreachable(*_: object, **__: object) -> list[str]:
            raise StorageUnavailable("the database went away")

        monkeypatch.setattr(storage, "over_threshold", unreachable)
        fresh = storage.store_events([_record(0)._replace(ts=time.time())])
        assert automation.observe(fresh) == 0  # not raised into ingest: the batch is stored and acknowledged
        assert automation.counting_failures == 1 and "do not count" in caplog.text
        monkeypatch.undo()
        assert automation.observe(storage.store_events([_record(1)._replace(ts=time.time())])) == 1
    finally:
        automation.close()


def test_a_batch_failing_after_its_events_were_inserted_stores_nothing(storage: PostgresStorage) -> None:
    good = _record(0, user="a@example.com")
    with storage._tx() as conn:  # the events' rows are in, then their user rows fail: one transaction
        conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                     " IF (SELECT count(*) FROM events) > 0 THEN RAISE EXCEPTION 'refused after the events'; END IF;"
                     " RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON event_users FOR EACH ROW EXECUTE FUNCTION refuse()")
    with pytest.raises(psycopg.errors.RaiseException, match="refused after the events"):
        storage.insert_events([good, _record(1)])
    assert storage.query_events(EventQuery()) == []
    with storage._tx() as conn:
        conn.execute("DROP TRIGGER refuse ON event_users")
        for table in ("explorer_minute", "explorer_minute_delta", "explorer_hour_delta"):  # the counts went too
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table  # noqa: S608
    assert storage.insert_events([good]) == (1, 0)  # nothing of it was kept, and the pool is usable again
    bad = _record(1)._replace(users=(object(),))  # a value that cannot be sent: nothing is stored either
    with pytest.raises(psycopg.ProgrammingError):
        storage.insert_events([_record(2), bad])
    assert [e.id for e in storage.query_events(EventQuery())] == [good.id]


def test_a_change_heard_after_a_newer_own_change_is_still_loaded(postgres_url: str) -> None:
    from sqreen_mw.collector.automation import Automation

    mine, theirs = PostgresStorage(postgres_url), PostgresStorage(postgres_url)
    callbacks: list[Any] = []
    mine.listen = callbacks.append  # type: ignore[method-assign] # notifications delivered by hand, in a bad order
    here, there = Automation(mine), Automation(theirs)
    try:
        other = there.create_block({"kind": "ip", "value": "192.0.2.10"})  # its NOTIFY still on the way
        theirs_version = there.version
        own = here.create_block({"kind": "ip", "value": "192.0.2.20"})  # a newer version
        own_version = here.version
        assert own_version > theirs_version
        (notify,) = callbacks
        notify(own_version, False)  # this replica's own change: nothing to reload
        notify(theirs_version, False)  # the other replica's, older than what this one holds
        values = sorted(a["value"] for a in here.actions()["actions"])
        assert values == ["192.0.2.10", "192.0.2.20"] and here.version == own_version, (other, own, values)
    finally:
        here.close()
        there.close()
        mine.close()
        theirs.close()


def test_the_explorer_reads_are_planned_for_their_values_on_every_run(postgres_url: str) -> None:
    # psycopg prepares a statement on its sixth run on a connection, and PostgreSQL may then settle on a generic plan
    # (the user timeline's counts took ten times longer with one): the explorer's statements are never prepared.
    from sqreen_mw.collector._sqlite_explorer import ExplorerFilter

    storage = PostgresStorage(postgres_url, pool_size=1)  # one connection: every call below runs on it
    try:
        storage.insert_events([_record(i, user="a@example.com") for i in range(5)])
        t0 = time.time()
        for _ in range(12):
            storage.actor_summary(ExplorerFilter(user="a@example.com"))
            storage.breakdown(ExplorerFilter(user="a@example.com"), "name")
            storage.overview(t0 - 3600, t0 + 3600, 3600)
        with storage._tx() as conn:
            prepared = [text for (text,) in conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()]
        reads = [text for text in prepared if "INSERT" not in text and ("explorer_" in text or "event_users" in text)]
        assert reads == [], reads
        assert storage.actor_summary(ExplorerFilter(user="a@example.com"))[0]  # and they still answer
    finally:
        storage.close()
