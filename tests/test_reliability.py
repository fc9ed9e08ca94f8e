"""Hostile input and races at the call site, and the flusher's own faults (issue 6), in-process against real parts."""

from __future__ import annotations

import importlib.abc
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import sqreen_mw
from sqreen_mw import InvalidEvent
from sqreen_mw._schema import MAX_STRING_LENGTH, TRUNCATION_MARKER
from sqreen_mw.asgi import SqreenMiddleware
from sqreen_mw.testing import capture_events

from .support import API_KEY, Collector, free_port

MakeClient = Callable[..., sqreen_mw.Client]




class _ImportWatch(importlib.abc.MetaPathFinder):
    """Records each import the flusher's thread starts (a module not imported yet, or one that cannot be)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if threading.current_thread().name == "sqreen_mw-flusher":
            self.names.append(name)


def test_steady_delivery_imports_nothing_that_a_fork_could_catch_half_done(
    make_client: MakeClient, collector: Collector
) -> None:
    # An import holds that module's import lock; a child forked while the flusher's thread holds it waits on it
    # forever at its own first request. httpcore without sniffio tried to import it on every request, and about one
    # forked child in twenty hung that way (test_faults' threads-and-forks scenario).
    client = make_client(API_KEY, collector.url, heartbeat_interval=1)
    sqreen_mw.track("warm", properties={"n": 0})
    assert sqreen_mw.flush(10)  # logged in, the push channel open, a batch sent
    watch = _ImportWatch()
    sys.meta_path.insert(0, watch)
    try:
        for n in range(1, 4):
            sqreen_mw.track("steady", properties={"n": n})
            assert sqreen_mw.flush(10)
        time.sleep(1.5)  # a heartbeat too
    finally:
        sys.meta_path.remove(watch)
    assert client.statistics()["sent"] == 4
    assert watch.names == []


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as possible, so a race in the first track() shows on every run."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def test_sixteen_threads_tracking_first_together_are_not_taken_for_a_fork(
    make_client: MakeClient, fast_switching: None
) -> None:
    for _ in range(5):
        client = make_client(API_KEY, f"http://127.0.0.1:{free_port()}", heartbeat_interval=60)
        barrier = threading.Barrier(16)

        def work(barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            for n in range(50):
                sqreen_mw.track("race", properties={"n": n})

        threads = [threading.Thread(target=work) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        stats = client.statistics()
        assert (stats["tracked"], stats["queued"], stats["dropped"]) == (800, 800, {})
        client.shutdown(0.1)


class Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    def __str__(self) -> str:
        raise RuntimeError("str exploded")


@pytest.mark.parametrize(
    "call",
    [
        lambda: sqreen_mw.track(Hostile()),  # type: ignore[arg-type]
        lambda: sqreen_mw.track("x", properties={"a": Hostile()}),
        lambda: sqreen_mw.track("x", user_identifiers={"id": Hostile()}),  # type: ignore[dict-item]
        lambda: sqreen_mw.track("x", timestamp=Hostile()),
        lambda: sqreen_mw.identify({"id": Hostile()}),  # type: ignore[dict-item]
        lambda: sqreen_mw.identify({"id": 1}, traits={"t": Hostile()}),
        lambda: sqreen_mw.auth_track(Hostile()),  # type: ignore[arg-type]
    ],
)
def test_objects_whose_repr_raises_give_invalid_event(make_client: MakeClient, call: Callable[[], Any]) -> None:
    make_client()
    with pytest.raises(InvalidEvent, match=r"repr\(\) raised RuntimeError"):
        call()


def test_attacker_sized_identifiers_are_truncated_in_auth_and_signup_not_in_track(make_client: MakeClient) -> None:
    make_client()
    with capture_events() as events:
        sqreen_mw.auth_track(False, email="x" * 5000)
        sqreen_mw.signup_track(email="y" * 5000, id=7)
    for event in events:
        email = event["user_identifiers"]["email"]  # type: ignore[index]
        assert len(email) == MAX_STRING_LENGTH and str(email).endswith(TRUNCATION_MARKER)
    with pytest.raises(InvalidEvent, match=r"user_identifiers\['email'\] must be at most 4096 characters"):
        sqreen_mw.track("x", user_identifiers={"email": "x" * 5000})  # explicit identifiers: an app bug
    with pytest.raises(InvalidEvent, match="must be a str or int"):
        sqreen_mw.auth_track(False, email=["a"])  # type: ignore[arg-type]  # types stay the app's bug


def test_future_timestamps_beyond_the_skew_allowance_are_refused(make_client: MakeClient) -> None:
    make_client()
    with pytest.raises(InvalidEvent, match="timestamp must not be more than 3600 s in the future"):
        sqreen_mw.track("x", timestamp=datetime(2100, 1, 1))


def test_flush_without_token_is_false(make_client: MakeClient) -> None:
    make_client()
    assert sqreen_mw.flush(0.1) is False  # nothing is ever delivered without a token
    sqreen_mw.track("x")
    assert sqreen_mw.flush(0.1) is False


def hostile_app() -> Any:
    async def login(request: Request) -> PlainTextResponse:
        await request.body()  # the app reads its JSON body: params.json carries it too
        sqreen_mw.auth_track(False, email=request.query_params["email"] + "\ud800")
        sqreen_mw.track("upload", collect_body=True)
        return PlainTextResponse("no")

    return SqreenMiddleware(Starlette(routes=[Route("/login", login, methods=["POST"])]))


@pytest.mark.anyio
async def test_what_an_attacker_sends_never_drops_the_event(make_client: MakeClient, collector: Collector) -> None:
    client = make_client(API_KEY, collector.url, heartbeat_interval=60)
    body = b'{"n": 1e400, "m": -1e400, "s": "a\\ud800b", "deep": [1e999], "ok": 1.5}'
    transport = httpx.ASGITransport(app=hostile_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post("/login?email=eve%40example.com", content=body,
                                   headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert sqreen_mw.flush(10)
    events = {e["name"]: e for e in collector.events()}
    expected = {"n": "Infinity", "m": "-Infinity", "s": "a\ufffdb", "deep": ["Infinity"], "ok": 1.5}
    assert events["upload"]["body"] == expected
    assert events["upload"]["request"]["params"]["json"] == expected
    assert events["sq.auth_track"]["user_identifiers"] == {"email": "eve@example.com\ufffd"}
    assert client.statistics()["dropped"] == {}


@pytest.mark.sdk_errors_expected
def test_a_404_on_login_is_reported_once_naming_the_url(
    make_client: MakeClient, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = collector.url + "/api/v1"
    client = make_client(API_KEY, wrong, heartbeat_interval=60)
    sqreen_mw.track("x")
    deadline = time.monotonic() + 15
    while client.statistics()["retries"] < 2 and time.monotonic() < deadline:
        sqreen_mw.flush(1)
    assert client.statistics()["retries"] >= 2
    errors = [r.getMessage() for r in caplog.records if r.name == "sqreen_mw" and r.levelno >= logging.ERROR]
    assert errors == [f"sqreen_mw: collector URL {wrong} answered 404 on /api/v1/agent/login: SQREEN_URL must be "
                      "the collector's base URL (e.g. http://127.0.0.1:8707); will keep retrying"]


@pytest.mark.sdk_errors_expected
def test_a_flusher_that_dies_is_restarted_counted_and_reported(make_client: MakeClient, collector: Collector) -> None:
    client = make_client(API_KEY, collector.url, heartbeat_interval=60)
    make_transport = client.flusher._make_transport
    failures = [RuntimeError("injected: the loop dies once")]

    def flaky() -> Any:
        if failures:
            raise failures.pop()
        return make_transport()

    client.flusher._make_transport = flaky
    sqreen_mw.track("survivor")
    assert sqreen_mw.flush(15)
    assert client.statistics()["flusher_restarts"] == 1
    assert [e["name"] for e in collector.events()] == ["survivor"]
    client.shutdown(5)  # the final heartbeat carries the counter
    stats = [a["stats"] for a in collector.agents() if a["stats"]]
    assert stats and stats[0]["flusher_restarts"] == 1


@pytest.mark.anyio
async def test_lifespan_shutdown_does_not_wait_for_a_dead_collector(make_client: MakeClient) -> None:
    make_client(API_KEY, f"http://127.0.0.1:{free_port()}", heartbeat_interval=60, shutdown_timeout=6)
    app = SqreenMiddleware(Starlette())
    for _ in range(2):  # the collector not known down yet, then known down
        inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[str] = []

        async def receive(inbox: list[dict[str, Any]] = inbox) -> dict[str, Any]:
            return inbox.pop(0)

        async def send(message: Any, sent: list[str] = sent) -> None:
            if message["type"] == "lifespan.startup.complete":
                sqreen_mw.track("queued")
            sent.append(message["type"])

        started = time.monotonic()
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
        assert time.monotonic() - started < 3.0  # not shutdown_timeout (6 s)
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=300)  # lone surrogates included
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), ANY_TEXT,
    st.binary(max_size=8), st.lists(st.integers(), max_size=3), st.builds(Hostile), st.builds(object),
)

ANY_KEY = st.one_of(ANY_TEXT, st.integers(), st.builds(Hostile))


@settings(max_examples=60)
@given(
    name=st.one_of(ANY_TEXT, ANY_VALUE),
    properties=st.one_of(st.none(), st.dictionaries(ANY_KEY, ANY_VALUE, max_size=20), ANY_VALUE),
    identifiers=st.one_of(st.none(), st.dictionaries(ANY_TEXT, ANY_VALUE, max_size=3), ANY_VALUE),
)
def test_track_either_queues_an_event_that_leaves_the_process_or_raises_invalid_event(
    name: Any, properties: Any, identifiers: Any
) -> None:
    # A token and a collector that is not there: the event is queued, then encoded as the flusher would.
    client = sqreen_mw.Client(API_KEY, f"http://127.0.0.1:{free_port()}", install_signal_handler=False,
                              heartbeat_interval=60)
    try:
        try:
            client.track(name, properties=properties, user_identifiers=identifiers)
        except InvalidEvent:
            return
        batch = client.queue.take(10)
        payload, kept = client._serialize(batch)
        assert payload is not None and kept == batch  # never dropped for what it carries
        event = json.loads(payload)["events"][0]
        for text in (event["name"], *map(str, (event["user_identifiers"] or {}).values())):
            text.encode()  # no lone surrogate: the collector would refuse it
    finally:
        client.shutdown(0.1)


@pytest.mark.parametrize("encoder", ["orjson", "stdlib"])
def test_a_batch_is_encoded_a_chunk_at_a_time_into_the_body_it_would_be_in_one_piece(
        encoder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqreen_mw import _client, _transport
    from sqreen_mw._context import ASGI, RequestContext, current_context

    if encoder == "stdlib":
        monkeypatch.setattr(_transport, "_orjson_dumps", None)
    client = sqreen_mw.Client(API_KEY, f"http://127.0.0.1:{free_port()}", install_signal_handler=False,
                              heartbeat_interval=60)
    sizes: list[int] = []
    real = _transport.encode_batch
    monkeypatch.setattr(_client, "encode_batch", lambda events: sizes.append(len(events)) or real(events))
    try:
        for i in range(250):  # in and out of requests, some of them sharing one
            if i % 3:
                client.track("e", properties={"n": i, "text": "é\u2028"})
                continue
            scope = {"type": "http", "method": "GET", "path": f"/p/{i % 7}", "query_string": b"q=1", "headers": [],
                     "client": ("203.0.113.9", 4000)}
            token = current_context.set(RequestContext(ASGI, scope))
            try:
                client.track("e", properties={"n": i})
            finally:
                current_context.reset(token)
        batch = client.queue.take(1000)
        payload, kept = client._serialize(batch)
        assert kept == batch and sizes == [100, 100, 50]  # no more than a chunk's wire events alive at once
        whole = real([client._wire(record, {}) for record in batch])
        assert payload == whole  # byte for byte
        assert [event["properties"]["n"] for event in json.loads(payload)["events"]] == list(range(250))
    finally:
        client.shutdown(0.1)
