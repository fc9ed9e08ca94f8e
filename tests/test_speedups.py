"""The compiled part (``sqreen_mw/_speedups.c``) against the Python code it stands for: same verdicts, same records.

Each test drives the compiled function and its Python twin with the same input and compares what they leave behind.
Skipped when sqreen_mw was installed without a C compiler; ``test_speedups_build.py`` says whether it was built.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import math
import os
import pydoc
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import sqreen_mw
from sqreen_mw import _client, _lifecycle, _schema
from sqreen_mw._client import Client, expand_properties
from sqreen_mw._context import ASGI, RequestContext, current_context
from sqreen_mw._exceptions import InvalidEvent
from sqreen_mw._native import speedups
from sqreen_mw._queue import EventQueue
from sqreen_mw.testing import capture_events

from .support import all_slots, record_in_request

needs_speedups = pytest.mark.skipif(speedups is None, reason="sqreen_mw was installed without its compiled part")
pytestmark = needs_speedups

URL = "http://127.0.0.1:9"  # nothing listens: the flusher's sends fail, the queue keeps what is tracked


# --- check_properties' common case ------------------------------------------------------------------------------

KEYS = ["item", "quantity", "gift", "price", "note", "k" * 200]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5000), st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
)
properties = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=3), st.integers()), scalars,
                             max_size=18)


def python_check(props: Any) -> tuple[Any, int] | str:
    saved = _schema._common_properties
    _schema._common_properties = None
    try:
        return _schema.check_properties(props)
    except InvalidEvent as exc:
        return f"InvalidEvent: {exc}"
    finally:
        _schema._common_properties = saved


@settings(max_examples=400, deadline=None)
@given(properties)
def test_common_properties_agree_with_python(props: dict[Any, Any]) -> None:
    for key in KEYS:  # the keys a running app has used before
        _schema.check_properties({key: 1})
    reference = python_check(props)
    compiled = speedups.check_common_properties(props, _schema._KNOWN_KEYS)
    if compiled is None:  # not the common case: the Python checks decide (and say what is wrong)
        common = (all(type(k) is str and k in _schema._KNOWN_KEYS for k in props) and len(props) <= 16
                  and all(v is None or type(v) in (bool, int, float, str) for v in props.values())
                  and all(-(2**63) <= v < 2**63 for v in props.values() if type(v) is int)
                  and all(math.isfinite(v) for v in props.values() if type(v) is float)
                  and all(len(v) <= 4096 for v in props.values() if type(v) is str))
        assert not common, f"the common case {props!r} was handed back"
        return
    assert not isinstance(reference, str), f"compiled accepted what Python refuses: {reference}"
    copy, size = compiled
    assert copy == reference[0] and size == reference[1]
    assert copy is not props  # a copy: the app may change its own dict later


def test_common_properties_hands_back_an_estimate_beyond_64_bits() -> None:
    assert speedups.check_common_properties({"a": 1}, {"a": 2**70}) is None  # the Python loop adds it


def test_common_properties_refuses_what_is_not_a_dict() -> None:
    with pytest.raises(TypeError, match="known_keys"):
        speedups.check_common_properties({}, [])  # type: ignore[arg-type]
    assert speedups.check_common_properties([("a", 1)], {}) is None


# --- EventQueue.put ------------------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.integers(150, 2000), st.integers(1, 6),
       st.lists(st.integers(0, 900), min_size=1, max_size=40))
def test_queue_put_agrees_with_python(max_events: int, max_bytes: int, batch: int, sizes: list[int]) -> None:
    python, compiled = EventQueue(max_events, max_bytes, batch), EventQueue(max_events, max_bytes, batch)
    for seq, size in enumerate(sizes, 1):
        record = (seq, seq, "e", None, None, None, None, None, size, False)
        assert speedups.queue_put(compiled, record) == python.put(record)
        assert compiled.statistics() == python.statistics()
        assert compiled.drop_ops == python.drop_ops and list(compiled._items) == list(python._items)


def test_queue_put_after_clear_uses_the_new_lock_and_items() -> None:
    queue = EventQueue(10, 10**6)
    speedups.queue_put(queue, (1, 1, "e", None, None, None, None, None, 10, False))
    held, done = threading.Event(), threading.Event()
    old = queue._lock

    def hold() -> None:  # another thread holds the old lock, as a fork can leave it
        with old:
            held.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        queue.clear()  # a new lock, which put() must use
        assert speedups.queue_put(queue, (2, 2, "e", None, None, None, None, None, 10, False)) is False
        assert [r[1] for r in queue.take(5)] == [2]
    finally:
        done.set()
        holder.join(10)


def test_queue_bounds_beyond_64_bits() -> None:
    # Accepted by the configuration: the compiled client takes them too, and tracks as the Python one does.
    made = [Client(token="t", url=URL, max_queue_events=10**20, max_queue_bytes=2**63, install_signal_handler=False)
            for _ in range(2)]
    compiled, python = made
    python._track = python._track_py  # type: ignore[method-assign]
    assert type(compiled._track).__name__ == "Tracker"
    for client in made:
        client._started_pid = os.getpid()
        for _ in range(3):
            assert client.track("e") is True
        client._closed, client._accepting = True, False
    assert compiled.queue.statistics() == python.queue.statistics()
    assert compiled.queue.statistics()["queued"] == 3


def test_queue_put_refuses_a_malformed_record() -> None:
    queue = EventQueue(10, 10**6)
    with pytest.raises(TypeError, match="tuple of 10"):
        speedups.queue_put(queue, (1, 2, 3))
    assert queue.statistics()["tracked"] == 0
    released = threading.Thread(target=lambda: queue._lock.acquire(timeout=5) and queue._lock.release())
    released.start()  # another thread can take the lock: put() let it go
    released.join(10)
    assert not released.is_alive()


# --- Tracker: Client._track --------------------------------------------------------------------------------------

@pytest.fixture
def clients() -> Iterator[tuple[Client, Client]]:
    made = []
    for _ in range(2):
        client = Client(token="t", url=URL, heartbeat_interval=3600, install_signal_handler=False)
        client.start = lambda: None  # type: ignore[method-assign]  # no flusher thread: the queue is compared as is
        client._started_pid = os.getpid()
        made.append(client)
    compiled, python = made
    python._track = python._track_py  # type: ignore[method-assign]
    assert type(compiled._track).__name__ == "Tracker"
    yield compiled, python
    for client in made:
        client._closed = True
        client._accepting = False


def queued(client: Client) -> list[tuple[Any, ...]]:
    # less the clock and the sequence; the compiled track() keeps the properties compact, which stand for the dict
    return [(record[2], expand_properties(record[3]) if type(record[3]) is tuple else record[3], *record[4:])
            for record in client.queue.take(len(client.queue))]


def scope(path: str = "/p") -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "query_string": b"q=1", "headers": [(b"user-agent", b"x")],
            "client": ("203.0.113.9", 4000)}


CALLS: list[dict[str, Any]] = [
    {},
    {"properties": {"item": "book", "quantity": 2, "gift": False}},
    {"properties": {}},
    {"properties": {"new key": 1.5, "n": None}},
    {"properties": {"long": "x" * 5000}},  # cut at 4096 characters: the Python path does it
    {"user_identifiers": {"email": "a@example.com"}},
    {"options": {"properties": {"a": 1}}},
    {"timestamp": None, "collect_body": False},
]


def test_tracker_keeps_properties_compact_with_keys_shared(clients: tuple[Client, Client]) -> None:
    # A queued event waits for its batch: its properties as (keys, values...) with one keys tuple for every event of
    # the same keys, not a dict each (184 bytes for up to five items).
    compiled, _ = clients
    sent = {"item": "book", "quantity": 2, "password": "hunter2", "ratio": 0.5}
    for first in (sent, {"other": None}):  # keys seen once (the Python code learns them), then compiled
        assert compiled.track("first", properties=first) is True
    compiled.queue.take(len(compiled.queue))
    for _ in range(3):
        assert compiled.track("first", properties=sent) is True
    assert compiled.track("first", properties={"other": None}) is True
    sent["item"] = "changed after track()"  # a copy was queued
    records = compiled.queue.take(len(compiled.queue))
    props = [record[3] for record in records]
    assert all(type(p) is tuple for p in props)
    assert props[0][0] is props[1][0] is props[2][0] and props[3][0] == ("other",)
    assert sys.getsizeof(props[0]) < sys.getsizeof({**sent})
    assert expand_properties(props[0]) == {"item": "book", "quantity": 2, "password": "hunter2", "ratio": 0.5}
    payload, kept = compiled._serialize(records)
    assert payload is not None and len(kept) == 4
    events = json.loads(payload)["events"]
    assert events[0]["properties"] == {"item": "book", "quantity": 2, "password": "[REDACTED]", "ratio": 0.5}
    assert events[3]["properties"] == {"other": None}
    assert [e["properties"] for e in events] == [
        compiled.scrubber.scrub(expand_properties(p)) for p in props]  # the Python reader's view, the same


@pytest.mark.parametrize("call", CALLS, ids=[str(i) for i in range(len(CALLS))])
@pytest.mark.parametrize("in_request", [False, True], ids=["outside", "in-request"])
def test_tracker_records_what_python_records(clients: tuple[Client, Client], call: dict[str, Any],
                                             in_request: bool) -> None:
    compiled, python = clients
    for client in clients:
        for name in ("first", "first", "second"):  # a new name, then a known one
            options = call.get("options")
            kwargs = {k: v for k, v in call.items() if k != "options"}
            ctx = RequestContext(ASGI, scope()) if in_request else None
            if ctx is not None:
                ctx.user = {"id": 7}
            token = current_context.set(ctx)
            try:
                assert client.track(name, options, **kwargs) is True
            finally:
                current_context.reset(token)
    assert queued(compiled) == queued(python)
    assert compiled.queue.statistics() == python.queue.statistics()


def test_tracker_keeps_the_same_capture_for_a_request(clients: tuple[Client, Client]) -> None:
    compiled, _ = clients
    ctx = RequestContext(ASGI, scope())
    ctx.blocked = object()
    token = current_context.set(ctx)
    try:
        compiled.track("e", properties={"a": 1})
        compiled.track("e", properties={"a": 2})
    finally:
        current_context.reset(token)
    first, second = queued(compiled)
    assert first[4] is second[4] is ctx._capture and first[4][3] == "/p"
    assert first[7] is True  # sent as blocked


class _Holder:
    """A path parameter that is an object: it may reach back to the request."""

    ref: Any = None


def test_queued_events_are_left_to_the_garbage_collector_only_where_a_cycle_may_pass(
        clients: tuple[Client, Client]) -> None:
    import gc
    import weakref

    from sqreen_mw._body import ASGIBodyTee
    from sqreen_mw._context import WSGI

    compiled, _ = clients

    def one_event(ctx: RequestContext) -> tuple[Any, ...]:
        return record_in_request(compiled, ctx, {"a": 1})

    plain_wsgi = {"REQUEST_METHOD": "GET", "PATH_INFO": "/w", "REMOTE_ADDR": "203.0.113.9", "QUERY_STRING": "q=1"}
    pair = tuple([b"user-agent", b"x"])  # made as a server makes it: tracked until a collection looks at it
    assert gc.is_tracked(pair)
    served = RequestContext(ASGI, {**scope(), "headers": [pair]})
    for ctx in (RequestContext(ASGI, scope()), RequestContext(WSGI, plain_wsgi), served):
        record = one_event(ctx)
        assert record[6] is ctx._capture and not gc.is_tracked(record) and not gc.is_tracked(record[6])
    assert not gc.is_tracked(one_event(RequestContext(ASGI, {})))  # outside the common capture, the record still
    tee = ASGIBodyTee(None, 10)  # type: ignore[arg-type]
    tee.feed(b"{}", True)  # a body read in full: the capture holds its tee
    teed = RequestContext(ASGI, {**scope(), "method": "POST"}, tee)
    listed = RequestContext(ASGI, {**scope(), "headers": [[b"user-agent", b"x"]]})  # pairs as lists
    holder = _Holder()
    cyclic = RequestContext(ASGI, {**scope(), "path_params": {"id": holder}})
    for ctx in (teed, listed, cyclic):
        record = one_event(ctx)
        assert record[6] is ctx._capture and gc.is_tracked(record[6]) and not gc.is_tracked(record)
    # the capture reaches the holder, which reaches the request: a cycle the collector must still find
    holder.ref, alive = cyclic, weakref.ref(holder)
    del holder, cyclic, record, ctx
    gc.collect()
    assert alive() is None


class _Headers(list[tuple[bytes, bytes]]):
    """Not a plain list: the Python code captures it."""


scope_values = {
    "client": st.one_of(st.none(), st.tuples(st.sampled_from(["203.0.113.9", "::1"]), st.integers(0, 65535))),
    "headers": st.one_of(st.none(), st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=8)), max_size=3),
                         st.lists(st.tuples(st.binary(max_size=3), st.binary(max_size=3)), max_size=2).map(tuple),
                         st.lists(st.tuples(st.binary(max_size=3), st.binary(max_size=3)), max_size=2).map(_Headers)),
    "path": st.text(max_size=5), "method": st.sampled_from(["GET", "POST", None]),
    "type": st.sampled_from(["http", "websocket"]), "query_string": st.binary(max_size=5),
    "path_params": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                             st.just([("id", 1)])),
}


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional=scope_values), st.sampled_from(["none", "unread", "read", "whole", "over"]))
def test_first_event_captures_the_request_as_python_does(raw: dict[str, Any], tee_state: str) -> None:
    from sqreen_mw._body import ASGIBodyTee

    def tee() -> ASGIBodyTee | None:
        if tee_state == "none":
            return None
        made = ASGIBodyTee(None, 8)  # type: ignore[arg-type]
        if tee_state != "unread":
            made.feed(b"x" * (20 if tee_state == "over" else 4), tee_state != "read")
        return made

    client = Client(token="t", url=URL, install_signal_handler=False)
    client._started_pid = os.getpid()
    try:
        client.track("e")
        ctx, reference = RequestContext(ASGI, raw, tee()), RequestContext(ASGI, dict(raw), tee())
        token = current_context.set(ctx)
        try:
            client.track("e")
        finally:
            current_context.reset(token)
        expected = reference.capture()
        got = queued(client)[-1][4]
        assert got[:8] == expected[:8] and ctx._capture is got
        assert (got[8] is None) == (expected[8] is None) and got[8] in (None, ctx.body_tee)
        assert (expected[8] is None) == (tee_state != "whole")
        if isinstance(raw.get("path_params"), dict) and raw["path_params"]:
            assert got[7] is not raw["path_params"]  # a copy: the application may change its own
    finally:
        client._closed, client._accepting = True, False


def test_tracker_bad_input_raises_invalid_event(clients: tuple[Client, Client]) -> None:
    compiled, _ = clients
    compiled.track("e")
    with pytest.raises(InvalidEvent, match="properties"):
        compiled.track("e", properties={"a": object()})
    with pytest.raises(InvalidEvent):
        compiled.track("sq.reserved")
    with pytest.raises(InvalidEvent):
        compiled.track(5)  # type: ignore[arg-type]
    assert len(queued(compiled)) == 1


class _Unreadable(RequestContext):
    __slots__ = ("error",)

    def capture(self, ip_key: str | None = None, wanted: frozenset[bytes] = frozenset()) -> Any:
        raise self.error


def test_tracker_keeps_the_event_of_an_unreadable_request(clients: tuple[Client, Client],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    compiled, _ = clients
    compiled.track("e")
    ctx = _Unreadable(ASGI, scope())
    ctx.error = OSError("client gone")
    token = current_context.set(ctx)
    try:
        with caplog.at_level(logging.WARNING, logger="sqreen_mw"):
            assert compiled.track("e", properties={"a": 1}) is True
        ctx.error = KeyboardInterrupt()  # not an app fault to swallow
        with pytest.raises(KeyboardInterrupt):
            compiled.track("e")
    finally:
        current_context.reset(token)
    assert "could not read the request: OSError: client gone" in caplog.text
    records = queued(compiled)
    assert len(records) == 2 and records[1][4] is None and records[1][1] == {"a": 1}


def test_tracker_chains_a_logging_fault_to_the_unreadable_request(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(exc: BaseException) -> None:
        raise RuntimeError("log handler broke")

    monkeypatch.setattr(_client, "_unreadable", unreadable)
    raised = []
    for pure in (False, True):
        client = Client(token="t", url=URL, install_signal_handler=False)
        client._started_pid = os.getpid()
        if pure:
            client._track = client._track_py  # type: ignore[method-assign]
        client.track("e")
        ctx = _Unreadable(ASGI, scope())
        ctx.error = OSError("client gone")
        token = current_context.set(ctx)
        try:
            with pytest.raises(RuntimeError) as info:
                client.track("e")
        finally:
            current_context.reset(token)
            client._closed, client._accepting = True, False
        context = info.value.__context__
        raised.append((repr(context), context is not None and context.__traceback__ is not None))
    assert raised[0] == raised[1] == ("OSError('client gone')", True)


def test_tracker_hands_captured_and_stopped_clients_to_python(clients: tuple[Client, Client]) -> None:
    compiled, _ = clients
    compiled.track("e")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_lifecycle, "_current", compiled)
        with capture_events() as events:
            assert sqreen_mw.track("e", properties={"a": 1}) is True
    assert [(e["name"], e["properties"]) for e in events] == [("e", {"a": 1})]
    compiled._accepting = False
    compiled._closed = True
    assert compiled.track("e") is False
    assert compiled.queue.statistics()["dropped"] == {"after_shutdown": 1}
    assert len(queued(compiled)) == 1


def test_tracker_starts_the_flusher_once_and_again_after_a_fork(clients: tuple[Client, Client]) -> None:
    compiled, _ = clients
    starts: list[int] = []
    compiled.start = lambda: starts.append(1)  # type: ignore[method-assign]
    compiled._start = lambda: starts.append(2)  # type: ignore[method-assign]
    compiled._started_pid = None
    compiled.track("e")
    compiled._started_pid = os.getpid()
    compiled.track("e")
    compiled._started_pid = os.getpid() + 1  # as in a child forked without the fork hook
    compiled.track("e")
    assert starts == [2, 2]


def test_tracker_wakes_the_flusher_for_a_hot_event(clients: tuple[Client, Client]) -> None:
    compiled, _ = clients
    woken: list[bool] = []
    compiled.flusher.wake = lambda hot=False: woken.append(hot)  # type: ignore[method-assign]
    compiled.track("login")
    compiled.track("other")
    compiled.enforcer.set_actions({"actions_version": 1, "actions": [], "hot_events": ["login"]})
    compiled.track("login")
    compiled.track("other")
    assert woken == [True]


# --- Front: sqreen_mw.track ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, kwargs", [
    ((), {}),
    (("e", None, None), {}),
    (("e",), {"property": {}}),
    (("e",), {"event_name": "x"}),
])
def test_front_refuses_bad_calls_as_the_python_function_does(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    python = sqreen_mw.track.__wrapped__  # type: ignore[attr-defined]
    with pytest.raises(TypeError) as expected:
        python(*args, **kwargs)
    with pytest.raises(TypeError) as got:
        sqreen_mw.track(*args, **kwargs)
    assert str(got.value) == str(expected.value)


def test_front_passes_every_argument(clients: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch) -> None:
    compiled, _ = clients
    seen: list[tuple[Any, ...]] = []
    compiled._track = lambda *a: seen.append(a) or True  # type: ignore[method-assign]
    monkeypatch.setattr(_lifecycle, "_current", compiled)
    kwargs = {"properties": {"a": 1}, "user_identifiers": {"u": 1}, "timestamp": 3, "collect_body": True,
              "request": "r"}
    for k in range(len(kwargs) + 1):
        chosen = dict(list(kwargs.items())[:k])
        sqreen_mw.track("e", **chosen)
        sqreen_mw.track("e", {"o": 1}, **dict(reversed(list(chosen.items()))))
    defaults = [None, None, None, False, None]
    values = list(kwargs.values())
    expected = []
    for k in range(len(kwargs) + 1):
        args = values[:k] + defaults[k:]
        expected += [("e", None, *args), ("e", {"o": 1}, *args)]
    assert seen == expected


def test_front_without_a_client_makes_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SQREEN_TOKEN", raising=False)
    monkeypatch.setattr(_lifecycle, "_current", None)
    assert sqreen_mw.track("e") is False  # no token: validated, not sent
    assert _lifecycle._current is not None and not _lifecycle._current.enabled


def test_front_reads_as_the_documented_function() -> None:
    signature = inspect.signature(sqreen_mw.track)
    assert list(signature.parameters)[:3] == ["event_name", "options", "properties"]
    assert sqreen_mw.track.__name__ == "track"  # type: ignore[attr-defined]
    text = pydoc.render_doc(sqreen_mw.track, renderer=pydoc.plaintext)
    assert "track(event_name" in text and "Record a custom event." in text


# --- the WSGI capture and middleware ---------------------------------------------------------------------------

class _Werkzeug:
    """A stand-in for environ["werkzeug.request"]: the attributes _wsgi_capture reads, set or not."""

    def __init__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


class _Form:
    def items(self, multi: bool = False) -> list[tuple[str, str]]:
        return [("a", "1")]


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=3), st.sampled_from(["\ud800", "é", "\U0001f600", "a\udfffb"]))
json_values = st.recursive(json_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=2).map(tuple),
    st.dictionaries(st.one_of(st.text(max_size=2), st.just("\udc00")), inner, max_size=3),
    st.dictionaries(st.integers(), inner, max_size=1)), max_leaves=8)
werkzeug_states = st.fixed_dictionaries({}, optional={
    "view_args": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                           st.just([("id", 1)])),
    "form": st.just(_Form()),
    "_cached_json": st.one_of(st.just((Ellipsis, Ellipsis)), st.just(None), json_values.map(lambda v: (v, v)),
                              st.sampled_from([19, 20, 21, 30]).map(lambda d: (_nested(d), None))),
})
environ_text = st.one_of(st.text(max_size=4), st.text(alphabet="aé/", max_size=3), st.none(), st.integers())
environ_values = {
    key: environ_text for key in ("REMOTE_ADDR", "HTTP_USER_AGENT", "QUERY_STRING", "CONTENT_TYPE",
                                  "HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP", "HTTP_CF_CONNECTING_IP",
                                  "SCRIPT_NAME", "PATH_INFO", "REQUEST_METHOD", "HTTP_COOKIE")
} | {"werkzeug.request": st.one_of(st.none(), werkzeug_states.map(_Werkzeug))}


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({}, optional=environ_values), st.sampled_from([None, "cf-connecting-ip", "x-real-ip"]),
       st.sampled_from(["none", "unread", "read", "whole", "over"]))
def test_first_event_captures_a_wsgi_request_as_python_does(environ: dict[str, Any], ip_header: str | None,
                                                           tee_state: str) -> None:
    from sqreen_mw._body import WSGIInput
    from sqreen_mw._context import WSGI, _wsgi_capture

    tee = None
    if tee_state != "none":
        body = b"x" * (20 if tee_state == "over" else 4)
        tee = WSGIInput(io.BytesIO(body), len(body), 8)
        if tee_state != "unread":
            tee.read(2 if tee_state == "read" else -1)

    client = Client(token="t", url=URL, install_signal_handler=False, ip_header=ip_header)
    client._started_pid = os.getpid()
    try:
        client.track("e")
        ctx = RequestContext(WSGI, environ, tee)
        token = current_context.set(ctx)
        try:
            client.track("e")
        finally:
            current_context.reset(token)
        got = queued(client)[-1][4]
        try:
            expected = _wsgi_capture(environ, tee, client._ip_key)
        except TypeError:  # _cached_json None: a request that cannot be read (logged, the event kept)
            assert got is None and environ["werkzeug.request"]._cached_json is None
            return
        assert repr(got) == repr(expected) and ctx._capture is got  # repr: NaN != NaN, and the types show
        assert got[7] is expected[7]  # the tee itself, or None
        cached = getattr(environ.get("werkzeug.request"), "_cached_json", None)
        if isinstance(got[6], dict | list) and cached is not None:
            assert got[6] is not cached[0]  # a copy: the application may change its own
        view_args = getattr(environ.get("werkzeug.request"), "view_args", None)
        if isinstance(view_args, dict) and view_args and got[4] is not None:
            assert got[4] is not view_args  # a copy: the application may change its own
    finally:
        client._closed, client._accepting = True, False


def test_compiled_middleware_binds_the_request_as_python_does(started: Client) -> None:
    from sqreen_mw._context import WSGI
    from sqreen_mw.wsgi import SqreenMiddleware

    seen: list[tuple[str, Any]] = []

    class Streamed:
        def __iter__(self) -> Iterator[bytes]:
            seen.append(("iter", current_context.get()))
            yield b"a"
            seen.append(("next", current_context.get()))
            yield b"b"

        def close(self) -> None:
            seen.append(("close", current_context.get()))

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(("app", current_context.get()))
        return Streamed()

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/s"}
    result = SqreenMiddleware(app)(environ, None)
    assert type(result) is speedups.BoundResponse and current_context.get() is None
    chunks = []
    for chunk in result:
        chunks.append(chunk)
        assert current_context.get() is None  # not while the server holds a chunk
    result.close()  # type: ignore[attr-defined]
    ctx = seen[0][1]
    assert chunks == [b"a", b"b"] and [where for where, _ in seen] == ["app", "iter", "next", "close"]
    assert all(bound is ctx for _, bound in seen) and current_context.get() is None
    expected = RequestContext(WSGI, environ)
    assert {n: getattr(ctx, n) for n in RequestContext.__slots__} == {
        n: getattr(expected, n) for n in RequestContext.__slots__}
    assert result._ctx is ctx and type(result._result) is Streamed  # type: ignore[attr-defined]


def test_compiled_middleware_unbinds_on_errors(started: Client) -> None:
    from sqreen_mw.wsgi import SqreenMiddleware

    class Broken:
        def __init__(self, where: str) -> None:
            self.where = where

        def __iter__(self) -> Iterator[bytes]:
            if self.where == "iter":
                raise OSError("iter broke")
            return self.chunks()

        def chunks(self) -> Iterator[bytes]:
            yield b"x"
            raise OSError("next broke")

        def close(self) -> None:
            raise ValueError("close broke")

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/call":
            raise KeyboardInterrupt  # not only Exception: everything is re-raised with the request unbound
        return Broken(environ["PATH_INFO"][1:])

    middleware = SqreenMiddleware(app)
    with pytest.raises(KeyboardInterrupt):
        middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/call"}, None)
    assert current_context.get() is None
    with pytest.raises(OSError, match="iter broke"):
        iter(middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/iter"}, None))
    assert current_context.get() is None
    result = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/next"}, None)
    assert next(result) == b"x"  # type: ignore[call-overload]  # next() without iter(), as some servers do
    with pytest.raises(OSError, match="next broke"):
        next(result)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="close broke"):
        result.close()  # type: ignore[attr-defined]
    assert current_context.get() is None


def test_compiled_middleware_hands_other_requests_to_python(started: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqreen_mw import wsgi
    from sqreen_mw._body import WSGIInput

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return iter([b"ok"])

    middleware = wsgi.SqreenMiddleware(app)
    compiled = type(middleware({"REQUEST_METHOD": "GET"}, None))
    assert compiled is speedups.BoundResponse
    slots = all_slots(WSGIInput)
    # (CONTENT_LENGTH, HTTP_TRANSFER_ENCODING) -> the tee's _remaining, or None: no tee (the Python method's rules)
    bodies: list[tuple[Any, Any, Any]] = [
        ("2", None, 2), ("002", None, 2), ("0", None, None), ("00", None, None), ("", None, None), ("x1", None, None),
        (None, None, None), (None, "chunked", None), ("0", "chunked", 0), ("x1", "chunked", None), ("", "", None),
        ("٣", None, None), ("9" * 18, None, 10**18 - 1), ("9" * 19, None, None), ("9" * 5000, "chunked", None),
        (5, None, None), (5, "chunked", None)]
    for length, chunked, remaining in bodies:
        stream = io.BytesIO(b"{}")
        environ = {"REQUEST_METHOD": "POST", "wsgi.input": stream}
        if length is not None:
            environ["CONTENT_LENGTH"] = length
        if chunked is not None:
            environ["HTTP_TRANSFER_ENCODING"] = chunked
        assert type(middleware(environ, None)) is speedups.BoundResponse, (length, chunked)
        if remaining is None and not chunked:
            assert environ["wsgi.input"] is stream, (length, chunked)
            continue
        tee, expected = environ["wsgi.input"], WSGIInput(stream, remaining, started.max_body_bytes)
        assert type(tee) is WSGIInput and {n: getattr(tee, n) for n in slots} == {
            n: getattr(expected, n) for n in slots}, (length, chunked)
    with pytest.raises(KeyError, match=r"wsgi\.input"):  # as the Python method (PEP 3333 requires the stream)
        middleware({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "2"}, None)
    assert current_context.get() is None
    for block in ({"id": "b1", "action": "block_ip", "value": "198.51.100.9", "expires_at": None},
                  {"id": "b2", "action": "block_user", "value": {"id": 1}, "expires_at": None}):
        started.set_actions({"actions_version": 2, "actions": [block]})
        assert started.enforcer.actions.has_ip_blocks or started.enforcer.actions.has_user_blocks
        # some block to check: the Python method (its answer to the blocked IP, its guard for users)
        result = middleware({"REQUEST_METHOD": "GET", "REMOTE_ADDR": "198.51.100.9"}, lambda *a: None)
        assert type(result) is (list if block["action"] == "block_ip" else wsgi._BoundResponse)
    started.set_actions({"actions_version": 3, "actions": []})
    started._started_pid = None  # a process's first request: the Python method starts the client
    monkeypatch.setattr(started, "start", lambda: setattr(started, "_started_pid", os.getpid()))
    assert type(middleware({"REQUEST_METHOD": "GET"}, None)) is wsgi._BoundResponse
    assert type(middleware({"REQUEST_METHOD": "GET"}, None)) is speedups.BoundResponse


class _OtherLayout:
    """Stands in for Actions with its switches at other slot offsets (every other slot truthy)."""

    __slots__ = (*(f"pad{i}" for i in range(12)), "has_ip_blocks", "has_user_blocks")

    def __init__(self, user_blocks: bool) -> None:
        for i in range(12):
            setattr(self, f"pad{i}", True)
        self.has_ip_blocks, self.has_user_blocks = False, user_blocks


def test_compiled_middleware_reads_each_switch_where_its_objects_type_keeps_it(started: Client) -> None:
    from sqreen_mw import wsgi
    from sqreen_mw._blocking import Actions

    middleware = wsgi.SqreenMiddleware(lambda environ, start_response: iter([b"ok"]))

    def served_by() -> type:
        return type(middleware({"REQUEST_METHOD": "GET"}, None))

    class Switched(Actions):  # the same layout, the user switch a property
        __slots__ = ()

        @property  # type: ignore[misc]
        def has_user_blocks(self) -> bool:
            return flip[0]

    enforcer, real = started.enforcer, started.enforcer.actions
    assert served_by() is speedups.BoundResponse  # the offsets of Actions' slots are known from here on
    try:
        enforcer.actions = _OtherLayout(user_blocks=False)  # type: ignore[assignment]
        assert served_by() is speedups.BoundResponse  # read where _OtherLayout keeps them: no block to check
        enforcer.actions = _OtherLayout(user_blocks=True)  # type: ignore[assignment]
        assert served_by() is wsgi._BoundResponse  # some user block: the Python method guards the response
        flip = [False]
        switched = object.__new__(Switched)
        for name in Actions.__slots__:
            if name != "has_user_blocks":
                setattr(switched, name, getattr(real, name))
        enforcer.actions = switched
        assert served_by() is speedups.BoundResponse
        flip[0] = True  # read through the property every request
        assert served_by() is wsgi._BoundResponse
    finally:
        enforcer.actions = real
    assert served_by() is speedups.BoundResponse


class _Method(str):
    """A REQUEST_METHOD that is text of another type (equal to, and hashing as, the plain str)."""


def test_compiled_middleware_reads_the_method_as_python_does(started: Client) -> None:
    from sqreen_mw import wsgi

    middleware = wsgi.SqreenMiddleware(lambda environ, start_response: [b"ok"])
    python = wsgi.SqreenMiddleware.__call__.__wrapped__  # type: ignore[attr-defined]
    # A method in _NO_BODY (by equality, as a frozenset sees it) has no body to tee; an unhashable one raises there
    for method in (_Method("GET"), _Method("HEAD"), _Method("POST"), b"GET", None, 5, ["GET"]):
        seen = []
        for call in (python, wsgi.SqreenMiddleware.__call__):
            environ = {"REQUEST_METHOD": method, "CONTENT_LENGTH": "2", "wsgi.input": io.BytesIO(b"{}")}
            try:
                result = call(middleware, environ, None)
            except TypeError as exc:
                seen.append(("raised", str(exc)))
            else:
                seen.append((result, type(environ["wsgi.input"]).__name__))
        assert seen[0] == seen[1], method


_FINALIZER_CHANGES_THE_ENVIRON = """
import gc, os, sys
from sqreen_mw._client import Client
from sqreen_mw._context import WSGI, RequestContext, current_context

class Dropper:  # garbage in a cycle: its finalizer runs when the collector next runs, within some allocation
    def __init__(self, environ):
        self.environ, self.me = environ, self

    def __del__(self):
        self.environ.pop("REQUEST_METHOD", None)

client = Client(token="t", url="http://127.0.0.1:9", install_signal_handler=False)
client._started_pid = os.getpid()
for i in range(300):
    environ = {"PATH_INFO": "/p", "REQUEST_METHOD": "".join(["POST", str(i)])}  # its only reference
    ctx = RequestContext(WSGI, environ)
    token = current_context.set(ctx)
    gc.collect()
    gc.set_threshold(1 + i % 5)  # the collector runs at one allocation or another of the capture
    Dropper(environ)
    client.track("e")
    gc.set_threshold(700)
    current_context.reset(token)
    verb = ctx._capture[3]
    assert verb == "GET" or verb == "POST" + str(i), repr(verb)
    client.queue.take(len(client.queue))
client._closed, client._accepting = True, False
print("ok")
"""


_FINALIZER_EMPTIES_THE_JSON = """
import gc, os, sys
from sqreen_mw._client import Client
from sqreen_mw._context import WSGI, RequestContext, current_context

class Dropper:
    def __init__(self, doomed):
        self.doomed, self.me = doomed, self

    def __del__(self):
        self.doomed.clear()

class Request:  # environ["werkzeug.request"] of a view that parsed a JSON body
    view_args = None

client = Client(token="t", url="http://127.0.0.1:9", install_signal_handler=False)
client._started_pid = os.getpid()
keep = None
for i in range(300):
    item = {"n": 10**6 + i, "s": "x" * 50 + str(i)}
    parsed = [dict(item) for _ in range(40)]  # each item referenced by the list alone
    request = Request()
    request._cached_json = (parsed, parsed)
    ctx = RequestContext(WSGI, {"PATH_INFO": "/p", "REQUEST_METHOD": "POST", "werkzeug.request": request})
    token = current_context.set(ctx)
    gc.collect()
    keep = None
    keep = [{} for _ in range(100)], [[] for _ in range(100)]  # the dict and list free lists empty: copies allocate
    gc.collect(0)
    Dropper(parsed)
    gc.set_threshold(1 + i % 11)  # the collector runs at one allocation or another of the copy
    client.track("e")
    gc.set_threshold(700)
    current_context.reset(token)
    json = ctx._capture[6]
    assert json == [] or json == [item] * 40, repr(json)
    client.queue.take(len(client.queue))
client._closed, client._accepting = True, False
print("ok")
"""


_FINALIZER_CHANGES_THE_SCOPE = """
import gc, os, sys
from sqreen_mw._client import Client
from sqreen_mw._context import ASGI, RequestContext, current_context

class Dropper:
    def __init__(self, scope):
        self.scope, self.me = scope, self

    def __del__(self):
        for key in ("method", "path", "client", "query_string", "path_params"):
            self.scope.pop(key, None)

client = Client(token="t", url="http://127.0.0.1:9", install_signal_handler=False)
client._started_pid = os.getpid()
for i in range(300):
    scope = {"type": "http", "method": "".join(["POST", str(i)]), "path": "".join(["/p", str(i)]),
             "query_string": bytes([97]) * (i + 1), "client": ("".join(["10.0.0.", str(i % 250)]), i),
             "headers": [(b"user-agent", b"x")], "path_params": {"id": str(i)}}  # each value's only reference
    ctx = RequestContext(ASGI, scope)
    token = current_context.set(ctx)
    gc.collect()
    keep = [{} for _ in range(100)], [() for _ in range(100)]
    gc.collect(0)
    Dropper(scope)
    gc.set_threshold(1 + i % 5)  # the collector runs at one allocation or another of the capture
    client.track("e")
    gc.set_threshold(700)
    current_context.reset(token)
    captured = ctx._capture
    assert captured[4] in ("POST" + str(i), None) and captured[3] in ("/p" + str(i), ""), repr(captured)
    client.queue.take(len(client.queue))
client._closed, client._accepting = True, False
print("ok")
"""


_FINALIZER_TRACKS_OTHER_KEYS = """
import gc, json, os
from sqreen_mw import Client

client = Client(token="t", url="http://127.0.0.1:9", heartbeat_interval=3600, install_signal_handler=False)
client._started_pid = os.getpid()  # no flusher thread: the records stay queued


class Closer:
    def __del__(self):  # a finalizer that tracks an event of other keys (the compiled track() runs again)
        client.track("ev", properties={"closed": True})


props = {f"p{i}": i for i in range(16)}
client.track("ev", properties=props)
client.track("ev", properties={"closed": True})  # both key sets learnt by the Python path
for i in range(40):
    client.track("ev", properties={"closed": True})  # the key cache: ("closed",)
    x = Closer()
    x.me = x
    del x  # cyclic garbage, collected at an allocation of the next track()
    gc.set_threshold(1 + i % 3)
    client.track("ev", properties=props)  # refreshes the key cache, then allocates
    gc.set_threshold(700)
events = json.loads(client._serialize(client.queue.take(len(client.queue)))[0])["events"]
for event in events:
    assert event["properties"] in ({"closed": True}, props), event["properties"]
assert sum(event["properties"] == props for event in events) == 41
client._closed, client._accepting = True, False
print("ok")
"""
_FINALIZER_REFILLS_THE_PROPERTIES = """
import gc, json, os
from sqreen_mw import Client

client = Client(token="t", url="http://127.0.0.1:9", heartbeat_interval=3600, install_signal_handler=False)
client._started_pid = os.getpid()
props = {}


def fill(tag):
    props.clear()
    props.update({f"k{i}": "".join([tag, str(i)]) * 3 for i in range(13)})  # values only the dict holds


class Refill:
    def __del__(self):  # a finalizer that reuses the app's dict while track() copies it
        fill("Z")


fill("A")
client.track("ev", properties=props)  # learnt by the Python path
for i in range(40):
    fill("A")
    x = Refill()
    x.me = x
    del x
    gc.set_threshold(1 + i % 3)
    client.track("ev", properties=props)
    gc.set_threshold(700)
events = json.loads(client._serialize(client.queue.take(len(client.queue)))[0])["events"]
for event in events:
    values = list(event["properties"].values())
    assert values in ([f"A{i}" * 3 for i in range(13)], [f"Z{i}" * 3 for i in range(13)]), values
client._closed, client._accepting = True, False
print("ok")
"""


@pytest.mark.parametrize("script", [_FINALIZER_CHANGES_THE_ENVIRON, _FINALIZER_EMPTIES_THE_JSON,
                                    _FINALIZER_CHANGES_THE_SCOPE, _FINALIZER_TRACKS_OTHER_KEYS,
                                    _FINALIZER_REFILLS_THE_PROPERTIES],
                         ids=["environ", "json", "scope", "track-in-finalizer", "properties-refilled"])
def test_the_capture_holds_what_it_reads(script: str) -> None:
    # A finalizer run by the garbage collector while the capture is made may drop environ entries, or empty the JSON
    # the app parsed: what the capture took of them stays alive (with PYTHONMALLOC=debug, -X dev, a freed verb read
    # back, or a freed item copied, crashed the interpreter). The same for the properties: a finalizer may track an
    # event of other keys (the key cache refreshed under the call) or refill the app's dict while it is copied.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("depth", [18, 19, 20, 21, 22, 40])
def test_a_deep_json_body_is_cut_where_python_cuts_it(depth: int) -> None:
    from sqreen_mw._context import WSGI, _wsgi_capture

    parsed = _nested(depth)
    environ = {"REQUEST_METHOD": "POST", "werkzeug.request": _Werkzeug({"_cached_json": (parsed, parsed)})}
    client = Client(token="t", url=URL, install_signal_handler=False)
    client._started_pid = os.getpid()
    try:
        client.track("e")
        token = current_context.set(RequestContext(WSGI, environ))
        try:
            client.track("e")
        finally:
            current_context.reset(token)
        assert queued(client)[-1][4] == _wsgi_capture(environ, None, None)
    finally:
        client._closed, client._accepting = True, False


# --- RLock: the queue's lock -------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [threading.RLock, lambda: speedups.RLock()], ids=["threading", "compiled"])
def test_the_compiled_lock_behaves_as_threading_rlock(make: Any) -> None:
    lock = make()
    with lock:
        with lock:  # re-entered
            assert lock._is_owned()
            results: list[Any] = []
            other = threading.Thread(target=lambda: results.extend(
                [lock.acquire(blocking=False), lock.acquire(timeout=0.05)]))
            other.start()
            other.join(10)
            assert results == [False, False]  # held here: another thread cannot take it
        assert lock._is_owned()
    assert not lock._is_owned()
    with pytest.raises(RuntimeError, match="cannot release un-acquired lock"):
        lock.release()
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(False, 1)
    assert lock.acquire(timeout=1) is True and lock.acquire(True) is True
    lock.release()
    lock.release()
    total = [0]

    def add() -> None:
        for _ in range(2000):
            with lock:
                total[0] += 1

    threads = [threading.Thread(target=add) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert total[0] == 8000


def test_a_signal_interrupts_a_wait_for_the_compiled_lock() -> None:
    import signal

    lock = speedups.RLock()
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    previous = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(KeyboardInterrupt):
            lock.acquire()  # waits for the holder: the signal's handler runs meanwhile, as with threading's locks
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        done.set()
        holder.join(10)
    assert not lock._is_owned() and lock.acquire(timeout=5)
    lock.release()


def test_compiled_response_steps_share_their_own_context(started: Client) -> None:
    # The response's steps run in the context the app call ended with (a copy, the request bound in it): what a step
    # sets is seen by the next steps, not by the server between them; a step within a step still sees its request.
    import contextvars

    from sqreen_mw.wsgi import SqreenMiddleware

    other: contextvars.ContextVar[str] = contextvars.ContextVar("other", default="unset")
    seen: list[Any] = []
    holder: list[Any] = []

    class Streamed:
        def __iter__(self) -> Iterator[bytes]:
            other.set("set by the first step")
            yield b"a"
            seen.append((other.get(), current_context.get()))
            holder[0].close()  # a step within a step: close() from the app's own code
            seen.append(current_context.get())
            yield b"b"

        def close(self) -> None:
            seen.append(("close", current_context.get()))

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        other.set("set by the app")
        return Streamed()

    result = SqreenMiddleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, None)
    holder.append(result)
    assert other.get() == "set by the app"  # the app call runs in the server's context, as in Python
    chunks = []
    for chunk in result:
        chunks.append(chunk)
        assert other.get() == "set by the app" and current_context.get() is None  # between steps: the server's
    result.close()  # type: ignore[attr-defined]
    ctx = result._ctx  # type: ignore[attr-defined]
    assert chunks == [b"a", b"b"]
    assert seen == [("set by the first step", ctx), ("close", ctx), ctx, ("close", ctx)]
    assert current_context.get() is None and other.get() == "set by the app"


# --- wire_batch: the flusher's Client._wire ----------------------------------------------------------------------

def test_wire_constants_are_the_python_ones() -> None:
    from sqreen_mw import _context, _scrub

    assert speedups.WIRE_CONSTANTS == (_scrub._MIN_KV_TEXT, _scrub._CACHED_TEXT, _scrub._CARD_INT_MIN,
                                       _context.MAX_KEYED_TEXT, _client._INFO_CACHE_SIZE, _scrub.MAX_DEPTH)


WHEN = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
wire_texts = st.one_of(
    st.sampled_from(["book", "a b", "hello world", "password=hunter2", "4111 1111 1111 1111", "x" * 300, "é" * 6,
                     "Bearer abc.def.ghi", '{"password": "x"}', "pin=1", "1234"]),
    st.text(max_size=8))
wire_values = st.one_of(st.none(), st.booleans(), st.integers(-(10**15), 10**17),
                        st.sampled_from([4111111111111111, 10**12, 10**12 - 1, 2**63 - 1, -(2**63)]),
                        st.floats(allow_nan=False, allow_infinity=False), wire_texts)
wire_props = st.one_of(st.none(), st.dictionaries(
    st.sampled_from(["item", "password", "card", "note", "apiKey", "q", "user_token"]), wire_values, max_size=4))
header_pairs = st.lists(st.tuples(
    st.sampled_from([b"user-agent", b"x-forwarded-for", b"cookie", b"content-type", b"cf-connecting-ip", b"forwarded"]),
    st.sampled_from([b"x", b"curl/8", b"203.0.113.7, 10.0.0.1", b"198.51.100.4", b"\xff\xfe", b"a=b; password=c"])),
    max_size=4)
wire_scopes = st.fixed_dictionaries({"type": st.sampled_from(["http", "http", "websocket"])}, optional={
    "client": st.one_of(st.none(), st.sampled_from([("10.0.0.2", 1), ("203.0.113.9", 2), ()]),
                        st.just(["192.0.2.1", 3])),
    "headers": st.one_of(header_pairs, header_pairs.map(tuple), st.just([[b"user-agent", b"list pair"]])),
    "path": st.sampled_from(["/", "/login", "/é", "/" + "p" * 1100]),
    "method": st.sampled_from(["GET", "POST", None]),
    "query_string": st.sampled_from([b"", b"q=1", b"user=42&q=select+name", b"a=%41&password=x", b"a=1&a=2&a=3&b",
                                     b"&&x=&=y&card=4111+1111+1111+1111", b"q=\xe9"]),
    "path_params": st.one_of(st.none(), st.just({}), st.just({"id": "7"}), st.just({"id": 7}),
                             st.just({"ok": True})),
})
wire_environs = st.fixed_dictionaries({"REQUEST_METHOD": st.sampled_from(["GET", "POST"])}, optional={
    "PATH_INFO": st.sampled_from(["/", "/login"]),
    "QUERY_STRING": st.sampled_from(["", "q=1", "password=x", "a=1&a=2&a=3", "q=a+b%20c", "x=\xe9"]),
    "werkzeug.request": st.sampled_from([{"view_args": {"id": 3}}, {"form": _Form()},
                                         {"_cached_json": ({"a": [1, "password=x"]}, None)}]).map(_Werkzeug),
    "REMOTE_ADDR": st.sampled_from(["10.0.0.2", "203.0.113.9"]),
    "HTTP_USER_AGENT": st.sampled_from(["curl/8", "Mozilla/5.0 (X11; Linux x86_64)"]),
    "HTTP_X_FORWARDED_FOR": st.just("198.51.100.4"), "HTTP_COOKIE": st.just("session=1"),
})
wire_bodies = st.one_of(st.none(), st.tuples(
    st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", "multipart/form-data"]),
    st.sampled_from([b'{"password": "x", "n": [1, "4111 1111 1111 1111"]}', b"a=1&password=2", b"\xff{", b"[1, 2"]),
    st.booleans()))
wire_requests = st.one_of(st.none(), st.tuples(st.just("asgi"), wire_scopes, wire_bodies),
                          st.tuples(st.just("wsgi"), wire_environs, wire_bodies))


def _tee(kind: str, body: tuple[str, bytes, bool] | None) -> Any:
    """The body tee of a request that read ``body`` (all of it, or a part)."""
    from sqreen_mw._body import ASGIBodyTee, WSGIInput

    if body is None:
        return None
    _, data, complete = body
    if kind == "asgi":
        tee = ASGIBodyTee(None, 1024)  # type: ignore[arg-type]
        tee.feed(data, complete)
        return tee
    wsgi = WSGIInput(io.BytesIO(data), len(data) if complete else len(data) + 10, 1024)
    wsgi.read(-1)
    return wsgi


@settings(max_examples=300, deadline=None)
@example([("wsgi", {"REQUEST_METHOD": "POST", "werkzeug.request": _Werkzeug({"form": _Form()})}, None)],
         [(None, 0, "plain")], None)
@given(st.lists(wire_requests, min_size=1, max_size=3),
       st.lists(st.tuples(wire_props, st.integers(0, 3), st.sampled_from(["plain", "timestamp", "body", "blocked",
                                                                          "user"])), min_size=1, max_size=10),
       st.sampled_from([None, "cf-connecting-ip"]))
def test_wire_batch_sends_what_python_sends(pool: list[Any], events: list[Any], ip_header: str | None) -> None:
    import json

    from sqreen_mw._context import WSGI
    from sqreen_mw._transport import encode_batch

    client = Client(token="t", url=URL, install_signal_handler=False, ip_header=ip_header,
                    trusted_proxies="10.0.0.0/8")
    client._started_pid = os.getpid()
    try:
        for props, which, kind in events:
            request = pool[which % len(pool)]
            ctx = None
            if request is not None:  # a request of its own, equal to others of the pool
                kind_, raw, body = request
                raw = dict(raw)
                if body is not None and kind_ == "asgi":
                    raw["headers"] = [*raw.get("headers", ()), (b"content-type", body[0].encode())]
                elif body is not None:
                    raw["CONTENT_TYPE"] = body[0]
                ctx = RequestContext(ASGI if kind_ == "asgi" else WSGI, raw, _tee(kind_, body))
                ctx.blocked = kind == "blocked"
                ctx.user = {"id": 7} if kind == "user" else None
            token = current_context.set(ctx)
            try:
                client.track("e", properties=props, timestamp=WHEN if kind == "timestamp" else None)
            finally:
                current_context.reset(token)
        batch = [(*record[:7], {"password": "x", "n": "4111 1111 1111 1111"}, *record[8:]) if kind == "body"
                 else record for record, (_, _, kind) in zip(client.queue.take(100), events, strict=True)]
        python = json.loads(encode_batch([client._wire(record, {}) for record in batch]))  # no cache at all
        handed: list[tuple[Any, ...]] = []
        wire = client._wire
        client._wire = lambda record, *rest: handed.append(record) or wire(record, *rest)  # type: ignore[method-assign]
        cold = json.loads(client._serialize(batch)[0] or b"")  # the caches are filled by the Python methods
        warm = json.loads(client._serialize(batch)[0] or b"")  # and answer
        assert cold == python and warm == python
        assert not handed  # every record compiled
        assert len({event["id"] for event in warm["events"]}) == len(batch)
    finally:
        client._closed, client._accepting = True, False


def test_wire_batch_keeps_its_request_cache_bounded() -> None:
    client = Client(token="t", url=URL, install_signal_handler=False)
    client._started_pid = os.getpid()
    try:
        for round_ in range(3):
            for i in range(700):
                token = current_context.set(RequestContext(ASGI, scope(f"/p/{round_}/{i}")))
                try:
                    client.track("e")
                finally:
                    current_context.reset(token)
            batch = client.queue.take(1000)
            client._serialize(batch)
            assert 0 < len(client._wire_cache) <= _client._INFO_CACHE_SIZE
        assert any(key[3] == "/p/2/699" for key in client._wire_cache)
    finally:
        client._closed, client._accepting = True, False


class _OddMethod:
    """A scope value that does not hash: the request is sent, never cached."""

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return other is self

    def __str__(self) -> str:
        return "GET"


def test_wire_batch_sends_a_request_whose_key_does_not_hash() -> None:
    import json

    client = Client(token="t", url=URL, install_signal_handler=False)
    client._started_pid = os.getpid()
    try:
        raw = scope() | {"method": _OddMethod()}
        for _ in range(2):
            token = current_context.set(RequestContext(ASGI, dict(raw)))
            try:
                client.track("e")
            finally:
                current_context.reset(token)
        batch = client.queue.take(10)
        assert speedups.request_key(batch[0][6], None) is not None  # keyed, but the key cannot be looked up
        with pytest.raises(TypeError):
            _ = {speedups.request_key(batch[0][6], None): 1}
        for _ in range(2):
            sent = json.loads(client._serialize(batch)[0] or b"")["events"]
            assert [event["request"]["verb"] for event in sent] == ["GET", "GET"]
        assert not client._wire_cache and not client._info_cache
    finally:
        client._closed, client._accepting = True, False


small_scopes = st.fixed_dictionaries({"type": st.just("http")}, optional={
    "client": st.sampled_from([None, ("10.0.0.2", 1), ("10.0.0.2", 9), ("203.0.113.9", 2)]),
    "headers": st.lists(st.tuples(st.sampled_from([b"user-agent", b"x-forwarded-for", b"cookie", b"accept"]),
                                  st.sampled_from([b"a", b"198.51.100.4"])), max_size=3),
    "path": st.sampled_from(["/", "/a"]), "method": st.sampled_from(["GET", None]),
    "query_string": st.sampled_from([b"", b"q=1"]), "path_params": st.sampled_from([None, {}, {"id": "1"}]),
})


@settings(max_examples=300, deadline=None)
@given(st.lists(small_scopes, min_size=2, max_size=6), st.sampled_from([None, "cf-connecting-ip", "accept"]))
def test_compiled_request_keys_are_equal_only_for_equal_request_properties(scopes: list[dict[str, Any]],
                                                                          ip_header: str | None) -> None:
    from sqreen_mw._context import request_info

    client = Client(token="t", url=URL, install_signal_handler=False, ip_header=ip_header,
                    trusted_proxies="10.0.0.0/8")
    extra = None if ip_header is None else ip_header.encode()
    captures = [RequestContext(ASGI, raw).capture() for raw in scopes]
    keys = [speedups.request_key(captured, extra) for captured in captures]
    assert all(key is not None for key in keys)  # plain scopes are all keyed
    for a, key_a in zip(captures, keys, strict=True):
        for b, key_b in zip(captures, keys, strict=True):
            if key_a == key_b:
                assert request_info(a, client.resolver) == request_info(b, client.resolver)


class _Mapping(dict[str, Any]):
    """Not a plain dict: the Python method scrubs it."""


scrub_leaves = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20),
                         st.sampled_from([4111111111111111, 10**12 - 1, 10**19]), st.floats(allow_nan=False),
                         wire_texts, st.binary(max_size=4))
scrub_keys = st.one_of(st.sampled_from(["item", "password", "card", "note", "apiKey", "q", "user_token", "Auth"]),
                       st.text(max_size=3))
scrub_trees = st.recursive(scrub_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=2).map(tuple), st.dictionaries(scrub_keys, inner, max_size=3),
    st.dictionaries(scrub_keys, inner, max_size=2).map(_Mapping), st.dictionaries(st.integers(), inner, max_size=1)),
    max_leaves=10)


@settings(max_examples=400, deadline=None)
@given(scrub_trees, st.integers(0, 24))
def test_compiled_scrub_is_the_scrubbers(value: Any, depth: int) -> None:
    from sqreen_mw._scrub import Scrubber

    for _ in range(depth):
        value = [value]  # deep trees: the depth limit
    scrubber, reference = Scrubber(), Scrubber()
    parts = scrubber.compiled_parts()
    assert parts is not None
    expected = reference.scrub(value)
    assert repr(speedups.scrub(value, parts)) == repr(expected)  # cold caches: the methods are asked
    assert repr(speedups.scrub(value, parts)) == repr(expected)  # warm
    assert Scrubber(enabled=False).compiled_parts() is None


def test_compiled_scrub_redacts_what_the_rules_say() -> None:
    from sqreen_mw._scrub import REDACTED, Scrubber

    parts = Scrubber(sensitive_keys=["order_ref"]).compiled_parts()
    assert parts is not None
    value = {"password": "x", "order_ref": 5, "note": "card 4111 1111 1111 1111", "n": 4111111111111111,
             "deep": [{"token": "t"}, "Bearer abcdef.ghijkl.mnopqr"], "ok": "fine text"}
    for _ in range(2):
        got = speedups.scrub(value, parts)
        assert got["password"] == got["order_ref"] == got["n"] == REDACTED
        assert got["note"] == f"card {REDACTED}" and got["deep"][0]["token"] == REDACTED and got["ok"] == "fine text"
        assert REDACTED in got["deep"][1]
    assert value["password"] == "x"  # a copy


def test_compiled_scrub_keeps_the_depth_of_each_text() -> None:
    from sqreen_mw._scrub import MAX_DEPTH, Scrubber

    parts = Scrubber().compiled_parts()
    assert parts is not None
    seen = set()
    for depth in range(MAX_DEPTH - 3, MAX_DEPTH + 2):  # a JSON text is parsed above the limit, read as text at it
        value: Any = {"note": '{"password": "x"}', "list": ['{"secret": "y"}']}
        for _ in range(depth):
            value = [value]
        expected = Scrubber().scrub(value)
        assert speedups.scrub(value, parts) == expected == speedups.scrub(value, parts)
        seen.add(repr(expected).replace("[", "").replace("]", ""))
    assert len(seen) > 2  # the depths do give different answers


# --- check_user_identifiers' common case (identify) --------------------------------------------------------------

user_values = st.one_of(st.text(max_size=6), st.sampled_from(["a\x00b", "\ud800", "é", "x" * 4097, "x" * 4096]),
                        st.integers(-(2**64), 2**64), st.booleans(), st.none(), st.floats())
user_keys = st.one_of(st.text(max_size=4), st.sampled_from(["", "k" * 255, "k" * 256, "é", "\udc00"]), st.integers())
user_maps = st.one_of(st.dictionaries(user_keys, user_values, max_size=18), st.just([("email", "a")]))


@settings(max_examples=500, deadline=None)
@given(user_maps, st.booleans(), st.booleans())
def test_common_user_identifiers_agree_with_python(value: Any, repair: bool, truncate: bool) -> None:
    from sqreen_mw._schema import _common_user_py

    compiled, python = speedups.check_common_user(value), _common_user_py(value)
    assert compiled == python and (compiled is None or type(compiled) is dict)
    if compiled is not None:  # the common case: what the full checks give, whatever the flags
        assert compiled is not value
        saved = _schema._common_user
        _schema._common_user = lambda _: None
        try:
            assert _schema.check_user_identifiers(value, repair=repair, truncate=truncate) == compiled
        finally:
            _schema._common_user = saved


def test_common_user_identifiers_take_the_usual_call() -> None:
    user = {"email": "alice@example.com", "id": 42}
    assert speedups.check_common_user(user) == user and speedups.check_common_user(user) is not user
    assert speedups.check_common_user({"email": "é"}) is None  # repaired or not, the Python checks decide
    assert speedups.check_common_user({"id": True}) is None and speedups.check_common_user({}) is None


def test_wire_batch_in_chunks_sends_what_python_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from sqreen_mw._transport import encode_batch

    client = Client(token="t", url=URL, install_signal_handler=False)
    client._started_pid = os.getpid()
    calls: list[int] = []
    real = speedups.wire_batch
    monkeypatch.setattr(speedups, "wire_batch", lambda batch, *rest: calls.append(len(batch)) or real(batch, *rest))
    try:
        for i in range(25):  # 25 requests of 7 events: one request's events straddle the chunks
            token = current_context.set(RequestContext(ASGI, scope(f"/p/{i}")))
            try:
                for j in range(7):
                    client.track("e", properties={"n": j})
            finally:
                current_context.reset(token)
        batch = client.queue.take(1000)
        python = json.loads(encode_batch([client._wire(record, {}) for record in batch]))
        scrubbed: dict[int, Any] = {}
        events = client._wire_all(batch, scrubbed)
        assert calls == [100, 75]
        assert json.loads(encode_batch(events)) == python
        assert events[99]["request"] is events[100]["request"]  # one request's properties, made once for the batch
        assert len(scrubbed) == 25
    finally:
        client._closed, client._accepting = True, False
