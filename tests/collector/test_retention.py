"""Retention (``--retention``): old events and their user rows deleted in small transactions, on both stores."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from sqreen_mw.collector import open_storage
from sqreen_mw.collector._records import EventQuery, EventRecord
from sqreen_mw.collector._retention import Retention
from sqreen_mw.collector._sqlite import SQLiteStorage
from sqreen_mw.collector.cli import main

from ..support import start_collector

DAY = 86400.0


def _event(ts: float, user: str) -> EventRecord:
    return EventRecord(str(uuid.uuid4()), "login", ts, ts, "shop", "203.0.113.7", {"n": 1}, {"email": user, "id": 7},
                       None, None, (user, "7"))


def test_old_events_and_their_user_rows_go_new_ones_stay(db: str) -> None:
    storage = open_storage(db)
    try:
        now = 1_800_000_000.0
        old = [_event(now - 100 * DAY + i, "old@example.com") for i in range(5)]
        new = [_event(now - 10 * DAY + i, "new@example.com") for i in range(3)]
        storage.insert_events(old + new)
        assert storage.delete_events_before(now - 90 * DAY, 2) == 2  # a chunk at a time
        sweeper = Retention(storage, 90 * DAY, clock=lambda: now)
        assert sweeper.sweep() == 3 and sweeper.deleted == 3 and sweeper.sweep() == 0
        assert sorted(e.id for e in storage.query_events(EventQuery())) == sorted(e.id for e in new)
        assert storage.query_events(EventQuery(user="old@example.com")) == []
        assert len(storage.query_events(EventQuery(user="7"))) == 3
    finally:
        storage.close()


def test_a_failing_sweep_is_logged_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    storage = SQLiteStorage(str(tmp_path / "r.db"))
    storage.close()  # every call now raises
    sweeper = Retention(storage, DAY)
    assert sweeper.sweep() == 0 and sweeper.failures == 1 and "retention: deleting events" in caplog.text


@pytest.mark.parametrize("value", ["0d", "forever", "-1d"])
def test_bad_retention_is_refused_by_name(value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--db", str(tmp_path / "x.db"), "--api-key", "k", f"--retention={value}"])
    assert code == 2 and "--retention must be a duration" in capsys.readouterr().err


@pytest.mark.e2e
def test_serve_with_retention_deletes_old_events_at_start(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    storage = SQLiteStorage(str(db))
    now = time.time()
    storage.insert_events([_event(now - 40 * DAY, "old@example.com"), _event(now - DAY, "new@example.com")])
    storage.close()
    with start_collector(db, extra=["--retention", "30d"]) as collector:
        events = collector.wait_for(lambda found: len(found) == 1)
    assert [e["user_identifiers"]["email"] for e in events] == ["new@example.com"]
