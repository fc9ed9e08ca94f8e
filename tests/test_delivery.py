"""Delivery to a real collector on loopback: batches, outages, retries, Retry-After, overflow, expiry, 413 splits."""

from __future__ import annotations

import logging
import os
import time
import tracemalloc
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

import sqreen_mw
from sqreen_mw.collector import create_app

from .support import ADMIN_TOKEN, API_KEY, Collector, FaultyProxy, free_port, serve_in_thread, start_collector

MakeClient = Callable[..., sqreen_mw.Client]


def numbers(events: list[dict[str, object]]) -> list[int]:
    return sorted(e["properties"]["n"] for e in events)  # type: ignore[index]


def test_events_arrive_with_every_field(make_client: MakeClient, collector: Collector) -> None:
    client = make_client(API_KEY, collector.url, app_name="delivery-test", heartbeat_interval=60)
    sqreen_mw.track("order.placed", properties={"n": 1, "item": "book"}, user_identifiers={"email": "a@example.com"})
    sqreen_mw.track("imported", properties={"n": 2}, timestamp=datetime(2018, 3, 15, 13, 42))
    assert sqreen_mw.flush(10)
    events = {e["name"]: e for e in collector.events()}
    placed, imported = events["order.placed"], events["imported"]
    assert placed["properties"] == {"n": 1, "item": "book"}
    assert placed["user_identifiers"] == {"email": "a@example.com"}
    assert placed["app"] == "delivery-test"
    assert placed["request"] is None and placed["body"] is None
    assert imported["timestamp"] == "2018-03-15T13:42:00.000000Z"
    assert collector.events(user="a@example.com")[0]["id"] == placed["id"]
    assert client.statistics()["sent"] == 2


def test_collector_down_then_up_delivers_every_event_exactly_once(make_client: MakeClient, tmp_path: Path) -> None:
    port = free_port()
    client = make_client(API_KEY, f"http://127.0.0.1:{port}", heartbeat_interval=60, batch_size=100)
    for n in range(300):
        sqreen_mw.track("outage", properties={"n": n})
    assert not sqreen_mw.flush(0.5)  # nothing listens yet
    deadline = time.monotonic() + 10
    while not client.statistics()["last_error"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.statistics()["last_error"].startswith("ConnectError")
    with start_collector(tmp_path / "late.db", port=port) as collector:
        assert sqreen_mw.flush(20)
        assert numbers(collector.events()) == list(range(300))
    assert client.statistics()["dropped"] == {}


def test_500_then_429_are_retried_and_retry_after_is_honoured(make_client: MakeClient, collector: Collector) -> None:
    proxy = FaultyProxy(collector.url, [(500, {}), (503, {}), (429, {"Retry-After": "2"})])
    with serve_in_thread(proxy.app) as url:
        client = make_client(API_KEY, url, heartbeat_interval=60)
        for n in range(50):
            sqreen_mw.track("flaky", properties={"n": n})
        assert sqreen_mw.flush(30)
    batch_log = [(t, status) for t, path, status in proxy.log if path.endswith("/batch")]
    assert [status for _, status in batch_log] == [500, 503, 429, 200]
    assert batch_log[3][0] - batch_log[2][0] >= 2.0  # waited out Retry-After
    assert numbers(collector.events()) == list(range(50))
    assert client.statistics()["retries"] == 3


def test_overflow_drops_oldest_counts_and_reports_in_heartbeat(make_client: MakeClient, tmp_path: Path) -> None:
    port = free_port()
    client = make_client(API_KEY, f"http://127.0.0.1:{port}", heartbeat_interval=0.3, max_queue_events=100)
    for n in range(250):
        sqreen_mw.track("flood", properties={"n": n})
    assert client.statistics()["dropped"] == {"queue_full": 150}
    with start_collector(tmp_path / "flood.db", port=port) as collector:
        assert not sqreen_mw.flush(20)  # delivered what was queued, but 150 of the events tracked were dropped
        assert numbers(collector.events()) == list(range(150, 250))
        sqreen_mw.track("flood", properties={"n": 250})
        assert sqreen_mw.flush(20)  # nothing dropped since the previous flush()
        deadline = time.monotonic() + 10
        stats: dict[str, object] = {}
        while time.monotonic() < deadline:
            agents = [a for a in collector.agents() if a["pid"] == os.getpid() and a["stats"]]
            stats = agents[0]["stats"] if agents else {}
            if stats.get("sent") == 101:
                break
            time.sleep(0.1)
        assert stats["dropped"] == {"queue_full": 150}
        assert stats["tracked"] == 251 and stats["sent"] == 101


def test_memory_stays_bounded_while_the_collector_is_down(make_client: MakeClient) -> None:
    client = make_client(API_KEY, f"http://127.0.0.1:{free_port()}", heartbeat_interval=60, max_queue_events=1000)
    props = {"item": "book", "quantity": 2, "gift": False}
    # Count what track() allocates and keeps (records, copied properties), not the flusher's retry churn.
    keep = [tracemalloc.Filter(True, "*sqreen_mw/_client.py"), tracemalloc.Filter(True, "*sqreen_mw/_schema.py")]

    def queued_bytes() -> int:
        return sum(stat.size for stat in tracemalloc.take_snapshot().filter_traces(keep).statistics("filename"))

    tracemalloc.start()
    try:
        for _ in range(5000):
            sqreen_mw.track("bounded", properties=props)
        after_5k = queued_bytes()
        for _ in range(20000):
            sqreen_mw.track("bounded", properties=props)
        after_25k = queued_bytes()
    finally:
        tracemalloc.stop()
    assert client.statistics()["queued"] == 1000
    assert after_25k < after_5k * 1.05 + 4096  # no growth once the bound is reached
    assert after_25k < 1000 * 700  # the budget: at most 700 bytes per queued event


def test_events_older_than_max_event_age_are_dropped_and_counted(make_client: MakeClient, tmp_path: Path) -> None:
    port = free_port()
    client = make_client(API_KEY, f"http://127.0.0.1:{port}", heartbeat_interval=60, max_event_age=0.5)
    for n in range(10):
        sqreen_mw.track("stale", properties={"n": n})
    time.sleep(0.8)
    with start_collector(tmp_path / "age.db", port=port) as collector:
        assert not sqreen_mw.flush(10)  # they expired (before or during this call) instead of being delivered
        assert client.statistics()["dropped"] == {"expired": 10}
        assert collector.events() == []


def test_age_counts_from_track_not_from_the_event_timestamp(make_client: MakeClient, collector: Collector) -> None:
    make_client(API_KEY, collector.url, heartbeat_interval=60, max_event_age=60)
    sqreen_mw.track("history", timestamp=datetime(2015, 1, 1))  # imported history: an old timestamp, a fresh event
    assert sqreen_mw.flush(10)
    assert [(e["name"], e["timestamp"]) for e in collector.events()] == [("history", "2015-01-01T00:00:00.000000Z")]


def test_413_splits_the_batch_until_it_fits(make_client: MakeClient, tmp_path: Path) -> None:
    app = create_app(db_path=str(tmp_path / "small.db"), api_keys={API_KEY: ""}, admin_token=ADMIN_TOKEN,
                     max_batch_events=10)
    with serve_in_thread(app) as url:
        client = make_client(API_KEY, url, heartbeat_interval=60, batch_size=64)
        for n in range(45):
            sqreen_mw.track("split", properties={"n": n})
        assert sqreen_mw.flush(20)
        assert numbers(Collector(url).events()) == list(range(45))
    assert client.statistics()["dropped"] == {}


@pytest.mark.sdk_errors_expected
def test_single_event_too_large_is_dropped_and_counted(make_client: MakeClient, tmp_path: Path) -> None:
    app = create_app(db_path=str(tmp_path / "tiny.db"), api_keys={API_KEY: ""}, admin_token=ADMIN_TOKEN,
                     max_body_bytes=2000)
    with serve_in_thread(app) as url:
        client = make_client(API_KEY, url, heartbeat_interval=60)
        sqreen_mw.track("big", properties={f"p{i}": os.urandom(2000).hex() for i in range(3)})
        sqreen_mw.track("small", properties={"n": 1})
        assert not sqreen_mw.flush(20)
        sqreen_mw.track("small", properties={"n": 2})
        assert sqreen_mw.flush(20)
        assert numbers(Collector(url).events()) == [1, 2]
    assert client.statistics()["dropped"] == {"too_large": 1}


def test_collector_sets_the_heartbeat_unless_the_app_did(make_client: MakeClient, tmp_path: Path) -> None:
    app = create_app(db_path=str(tmp_path / "hb.db"), api_keys={API_KEY: ""}, admin_token=ADMIN_TOKEN,
                     heartbeat_delay=1)
    with serve_in_thread(app) as url:
        follows = make_client(API_KEY, url)  # heartbeat_interval left to its default: follows the collector
        sqreen_mw.track("beat", properties={"n": 1})
        collector = Collector(url)
        assert numbers(collector.wait_for(lambda events: len(events) == 1, timeout=10)) == [1]
        assert follows.flusher.heartbeat_interval == 1.0
        pinned = sqreen_mw.Client(API_KEY, url, heartbeat_interval=30, install_signal_handler=False)
        try:
            pinned.track("beat", properties={"n": 2})
            assert pinned.flush(10)
            assert pinned.flusher.heartbeat_interval == 30.0
        finally:
            pinned.shutdown(1)


@pytest.mark.sdk_errors_expected
def test_lone_surrogates_the_collector_refuses_are_repaired_before_they_leave(
    make_client: MakeClient, collector: Collector
) -> None:
    client = make_client(API_KEY, collector.url, heartbeat_interval=60)
    for n in range(5):  # the collector answers 422 for a lone surrogate in a user identifier: never send one
        sqreen_mw.track("mixed", properties={"n": n, "note": "\udc00"},
                        user_identifiers={"id": "\ud800" if n == 2 else "u"})
    assert sqreen_mw.flush(10)
    events = collector.events()
    assert numbers(events) == [0, 1, 2, 3, 4]
    assert sorted(e["user_identifiers"]["id"] for e in events) == ["u", "u", "u", "u", "\ufffd"]
    assert {e["properties"]["note"] for e in events} == {"\ufffd"}
    assert client.statistics()["dropped"] == {}


def test_an_event_json_cannot_carry_is_made_representable_and_delivered(
    make_client: MakeClient, collector: Collector
) -> None:
    client = make_client(API_KEY, collector.url, heartbeat_interval=60)
    odd_scope = {"type": "http", "method": "GET", "path": b"/bytes-not-str", "headers": []}
    sqreen_mw.track("odd", properties={"n": 0}, request=odd_scope)
    sqreen_mw.track("fine", properties={"n": 1})
    assert sqreen_mw.flush(10)
    events = collector.events()
    assert numbers(events) == [0, 1]
    assert [e["request"]["path"] for e in events if e["name"] == "odd"] == ["b'/bytes-not-str'"]
    assert client.statistics()["dropped"] == {}


def test_retry_after_zero_still_backs_off(make_client: MakeClient, collector: Collector) -> None:
    proxy = FaultyProxy(collector.url, [(503, {"Retry-After": "0"})] * 100)
    with serve_in_thread(proxy.app) as url:
        make_client(API_KEY, url, heartbeat_interval=60)
        sqreen_mw.track("x")
        assert not sqreen_mw.flush(3)
    assert len([1 for _, path, _ in proxy.log if path.endswith("/batch")]) <= 4


def test_a_queue_filling_up_by_bytes_is_sent_before_it_sheds(make_client: MakeClient, collector: Collector) -> None:
    client = make_client(API_KEY, collector.url, heartbeat_interval=60, max_queue_bytes=200_000)
    for n in range(40):  # about 170 kB: over half the byte bound, under the count that fills a batch
        sqreen_mw.track("bulky", properties={"n": n, "blob": os.urandom(2000).hex()})
    events = collector.wait_for(lambda found: len(found) >= 24, timeout=10)  # no flush(), no heartbeat
    assert len(events) >= 24
    assert client.statistics()["dropped"] == {}


def test_a_401_on_a_batch_logs_in_again_and_delivers(make_client: MakeClient, collector: Collector) -> None:
    proxy = FaultyProxy(collector.url, [(401, {})])  # e.g. the collector forgot the session
    with serve_in_thread(proxy.app) as url:
        client = make_client(API_KEY, url, heartbeat_interval=60)
        for n in range(5):
            sqreen_mw.track("relogin", properties={"n": n})
        assert sqreen_mw.flush(15)
    logins = [status for _, path, status in proxy.log if path.endswith("/login")]
    assert logins == [200, 200]
    assert numbers(collector.events()) == list(range(5))
    assert client.statistics()["dropped"] == {}


def test_a_refused_api_key_is_reported_and_events_wait_then_expire(
    make_client: MakeClient, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client("not-a-key", collector.url, heartbeat_interval=60, max_event_age=1)
    sqreen_mw.track("orphan", properties={"n": 1})
    assert not sqreen_mw.flush(0.5)
    assert client.statistics()["queued"] == 1
    deadline = time.monotonic() + 15
    while client.statistics()["dropped"] != {"expired": 1} and time.monotonic() < deadline:
        sqreen_mw.flush(0.5)
    assert client.statistics()["dropped"] == {"expired": 1}
    refused = [r.getMessage() for r in caplog.records if "refused the API key" in r.getMessage()]
    assert len(refused) == 1 and "HTTP 401" in refused[0]
    assert collector.events() == []


@pytest.mark.sdk_errors_expected
def test_logs_never_show_the_token_or_event_data(
    make_client: MakeClient, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx included
    secret_value = "do-not-log-this-value"
    make_client(API_KEY, collector.url, heartbeat_interval=60)
    sqreen_mw.track("logged", properties={"note": secret_value}, user_identifiers={"id": "\ud800"})  # refused: 422
    sqreen_mw.flush(10)
    wrong = sqreen_mw.Client("wrong-token-value", collector.url, install_signal_handler=False)
    try:
        wrong.track("logged", properties={"note": secret_value})
        wrong.flush(1)
    finally:
        wrong.shutdown(1)
    text = "\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records)
    assert "refused" in text  # the log did talk about what happened ...
    for leaked in (API_KEY, "wrong-token-value", secret_value):
        assert leaked not in text  # ... without the keys or the payload
