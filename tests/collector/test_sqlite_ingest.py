"""How the SQLite store spends its ingest time: background checkpoints, parameter binding, the serve process's GC."""

from __future__ import annotations

import gc
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqreen_mw.collector import _sqlite, cli
from sqreen_mw.collector._sqlite import SQLiteStorage, _Checkpointer
from sqreen_mw.collector._storage import EventQuery, EventRecord


def _events(n: int, start: float = 1_714_557_600.0) -> list[EventRecord]:
    return [
        EventRecord(
            str(uuid.uuid4()), "login.failed", start + i / 1000, 1_800_000_000.0, "app", f"203.0.{i % 200}.{i % 250}",
            {"attempt": i, "reason": "bad password " * 4}, {"email": f"u{i % 97}@example.com"} if i % 2 else None,
            None, None, (f"u{i % 97}@example.com",) if i % 2 else (),
        )
        for i in range(n)
    ]  # fmt: skip


def _log_frames(path: Path) -> tuple[int, int]:
    """(pages in the log since it last began, pages of it already copied into the database)."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    return int(row[1]), int(row[2])


def _wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.fixture
def small_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A log rewound every 64 pages and checkpointed every 50 ms, so a test sees several rounds."""
    real = _Checkpointer.__init__

    def small(self: _Checkpointer, path: str, rewind_frames: int, every: float = 1.0, busy_ms: int = 200) -> None:
        real(self, path, 64, every=0.05, busy_ms=busy_ms)

    monkeypatch.setattr(_Checkpointer, "__init__", small)
    yield


def test_the_writer_does_not_checkpoint_a_background_thread_does(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    storage = SQLiteStorage(str(path))
    try:
        # The writer's own automatic checkpoint is only a backstop, far beyond the usual limit.
        pages = storage._db().execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert pages * 4096 == _sqlite._WAL_BACKSTOP_BYTES
        checkpointer = storage._checkpointer
        assert checkpointer is not None
        storage.insert_events(_events(500))
        # After a commit, a passive checkpoint copies the log within a second, with no commit doing it.
        assert _wait_for(lambda: checkpointer.rounds >= 1)
        frames, copied = _log_frames(path)
        assert frames > 0 and copied == frames
    finally:
        storage.close()


def test_the_log_is_rewound_so_it_does_not_grow(tmp_path: Path, small_log: None) -> None:
    path = tmp_path / "c.db"
    storage = SQLiteStorage(str(path))
    checkpointer = storage._checkpointer
    assert checkpointer is not None and checkpointer.rewind_frames == 64
    written = 0
    try:
        for _ in range(40):
            storage.insert_events(_events(200, start=1_714_557_600.0 + written))
            written += 200
            time.sleep(0.01)
        assert _wait_for(lambda: checkpointer.rewinds >= 3), (checkpointer.rounds, checkpointer.rewinds)
        # Without the rewinds, the log would hold every page of the 40 commits (several thousand).
        storage.insert_events(_events(10, start=1_714_557_600.0 + written))
        frames, _ = _log_frames(path)
        assert frames < 1000, frames
        assert storage.query_events(EventQuery(limit=10_000)).__len__() == 8010
    finally:
        storage.close()


def test_a_reader_holding_the_log_delays_the_rewind_not_ingest(tmp_path: Path, small_log: None) -> None:
    path = tmp_path / "c.db"
    storage = SQLiteStorage(str(path))
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        storage.insert_events(_events(200))
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM events").fetchone()[0] == 200  # holds its snapshot
        slowest = 0.0
        for i in range(20):
            started = time.monotonic()
            storage.insert_events(_events(200, start=1_714_600_000.0 + i))
            slowest = max(slowest, time.monotonic() - started)
        # The RESTART waits at most busy_ms (200 ms) for the reader, then gives up until the next round.
        assert slowest < 4.0, slowest
        reader.execute("COMMIT")
        assert storage.query_events(EventQuery(limit=10_000)).__len__() == 4200
    finally:
        reader.close()
        storage.close()


def test_close_stops_the_checkpointer_and_leaves_every_event(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    storage = SQLiteStorage(str(path))
    storage.insert_events(_events(300))
    checkpointer = storage._checkpointer
    assert checkpointer is not None
    storage.close()
    assert not checkpointer._thread.is_alive()
    assert not [t for t in threading.enumerate() if t is checkpointer._thread]
    storage.close()  # idempotent
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 300
    finally:
        conn.close()
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


def test_an_in_memory_database_has_no_checkpointer() -> None:
    storage = SQLiteStorage(":memory:")
    try:
        assert storage._checkpointer is None
        assert storage.insert_events(_events(5)) == (5, 0)
    finally:
        storage.close()


def test_none_and_bytes_bind_through_identity_adapters(tmp_path: Path) -> None:
    # Without an adapter, sqlite3 looks up (and fails to find) __adapt__ on its protocol class for every None and
    # bytes parameter: an AttributeError raised and formatted each time.
    assert sqlite3.adapters[(bytes, sqlite3.PrepareProtocol)] is bytes
    assert sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)] is _sqlite._none
    conn = sqlite3.connect(":memory:")
    try:
        row = conn.execute("SELECT ?, typeof(?), ?, typeof(?)", (b"\x00\xff", b"\x00\xff", None, None)).fetchone()
    finally:
        conn.close()
    assert row == (b"\x00\xff", "blob", None, "null")


def test_an_adapter_the_application_registered_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    def mine(value: bytes) -> str:
        return value.hex()

    monkeypatch.setitem(sqlite3.adapters, (bytes, sqlite3.PrepareProtocol), mine)
    _sqlite._register_plain_adapters()
    assert sqlite3.adapters[(bytes, sqlite3.PrepareProtocol)] is mine


def test_serve_collects_garbage_less_often() -> None:
    before = gc.get_threshold()
    try:
        cli._tune_gc()
        young, older, oldest = gc.get_threshold()
        assert young == cli.GC_YOUNG_THRESHOLD > before[0]
        assert (older, oldest) == before[1:]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_batch_queued_during_a_transaction_joins_its_commit(tmp_path: Path) -> None:
    storage = SQLiteStorage(str(tmp_path / "g.db"))
    commits: list[str] = []
    storage._db().set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    first, second = _events(300), _events(200, start=1_714_600_000.0)
    results: dict[str, Any] = {}
    real_insert = SQLiteStorage._insert
    calls = 0

    def insert(db: sqlite3.Connection, write: Any, counted: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:  # while the first batch goes in, another writer queues its batch and waits
            other = threading.Thread(target=lambda: results.update(second=storage.store_events(second)))
            other.start()
            assert _wait_for(lambda: bool(storage._queue))
            results["thread"] = other
        return real_insert(db, write, counted)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(SQLiteStorage, "_insert", staticmethod(insert))
            results["first"] = storage.store_events(first)
            results["thread"].join(10)
        assert commits == ["COMMIT"]  # one transaction for both batches
        assert [e.id for e in results["first"]] == [e.id for e in first]
        assert [e.id for e in results["second"]] == [e.id for e in second]
        assert len(storage.query_events(EventQuery(limit=1000))) == 500
    finally:
        storage.close()


def test_a_failing_batch_that_joined_a_transaction_fails_alone(tmp_path: Path) -> None:
    storage = SQLiteStorage(str(tmp_path / "g.db"))
    good, bad = _events(50), [_events(1, start=1_714_700_000.0)[0]._replace(users=(object(),))]  # type: ignore[arg-type]
    errors: list[BaseException] = []
    real_insert = SQLiteStorage._insert
    calls = 0

    def insert(db: sqlite3.Connection, write: Any, counted: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            def send_bad() -> None:
                try:
                    storage.store_events(bad)
                except BaseException as exc:
                    errors.append(exc)

            other = threading.Thread(target=send_bad)
            other.start()
            assert _wait_for(lambda: bool(storage._queue))
            insert.other = other  # type: ignore[attr-defined]
        return real_insert(db, write, counted)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(SQLiteStorage, "_insert", staticmethod(insert))
            stored = storage.store_events(good)
            insert.other.join(10)  # type: ignore[attr-defined]
        assert [e.id for e in stored] == [e.id for e in good]
        assert len(errors) == 1 and isinstance(errors[0], sqlite3.Error)
        assert len(storage.query_events(EventQuery(limit=1000))) == 50
    finally:
        storage.close()


def test_a_session_lookup_does_not_wait_for_a_running_transaction(tmp_path: Path) -> None:
    from sqreen_mw.collector._storage import AgentSession

    storage = SQLiteStorage(str(tmp_path / "s.db"))
    try:
        storage.create_session(AgentSession("sid-1", "shop", None, None, None, None, 1.0, agent_id="a1"))
        found: list[str | None] = []
        with storage._lock:  # what a transaction storing a batch holds
            lookup = threading.Thread(target=lambda: found.append(storage.session_app("sid-1")))
            lookup.start()
            lookup.join(5)
            assert not lookup.is_alive(), "the lookup waited for the write lock"
        assert found == ["shop"]
        assert storage.logout("sid-1", 2.0)
        assert storage.session_app("sid-1") is None  # logged out: seen at once
    finally:
        storage.close()
    with pytest.raises(RuntimeError):
        storage.session_app("sid-1")
