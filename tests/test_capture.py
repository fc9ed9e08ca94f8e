"""The request's default properties are made on the flusher thread, from a capture taken by the first event."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sqreen_mw._context as context_module
from sqreen_mw import Client
from sqreen_mw._context import ASGI, WSGI, RequestContext, current_context
from sqreen_mw._ip import ClientIPResolver
from sqreen_mw._native import speedups

from .support import record_in_request


@pytest.fixture
def client() -> Any:
    # Nothing listens on port 9: events stay queued, and the test serializes them as the flusher would.
    c = Client(token="t", url="http://127.0.0.1:9", heartbeat_interval=3600, batch_size=10_000)
    yield c
    c.shutdown(timeout=0.2)


def sent(client: Client) -> list[dict[str, Any]]:
    payload, _ = client._serialize(client.queue.take(len(client.queue)))
    client.queue.done()
    assert payload is not None
    return json.loads(payload)["events"]  # type: ignore[no-any-return]


def scope(query: bytes = b"user=42&q=select+name+from+users&page=3") -> dict[str, Any]:
    return {
        "type": "http", "method": "GET", "path": "/search", "query_string": query, "client": ("127.0.0.1", 5000),
        "headers": [(b"user-agent", b"curl/8"), (b"x-forwarded-for", b"198.51.100.23, 10.0.0.3"),
                    (b"cookie", b"session=abc")],
    }


def test_track_parses_nothing_the_flusher_does(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default properties are made on the flusher thread (the client IP resolved, the query parsed), once for a
    # request's events, by the compiled serializer or the Python one alike.
    calls: list[Any] = []
    real = ClientIPResolver.resolve_cached
    monkeypatch.setattr(ClientIPResolver, "resolve_cached",
                        lambda self, peer, headers: calls.append((peer, dict(headers))) or real(self, peer, headers))
    token = current_context.set(RequestContext(ASGI, scope()))
    try:
        client.track("search", properties={"n": 1})
        client.track("search", properties={"n": 2})
    finally:
        current_context.reset(token)
    assert calls == []  # nothing made on the request's thread
    events = sent(client)
    assert calls == [("127.0.0.1", {"user-agent": "curl/8", "x-forwarded-for": "198.51.100.23, 10.0.0.3"})]  # once
    assert [e["request"] for e in events] == [{
        "client_ip": "10.0.0.3", "user_agent": "curl/8", "path": "/search", "verb": "GET",
        "params": {"query": {"user": "42", "q": "select name from users", "page": "3"}},
    }] * 2


def test_capture_is_the_first_events_view_of_the_environ(client: Client) -> None:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/login", "QUERY_STRING": "next=/a", "REMOTE_ADDR": "10.0.0.9",
               "HTTP_USER_AGENT": "ua/1"}
    token = current_context.set(RequestContext(WSGI, environ))
    try:
        client.track("login.page")
        # a later middleware rewrites the environ in place: the request's events keep what the first one saw
        environ["REMOTE_ADDR"] = "192.0.2.1"
        environ["QUERY_STRING"] = "next=/b"
        client.track("login.page")
    finally:
        current_context.reset(token)
    requests = [e["request"] for e in sent(client)]
    assert requests[0] == requests[1]
    assert requests[0]["client_ip"] == "10.0.0.9"
    assert requests[0]["params"] == {"query": {"next": "/a"}}


def test_request_that_cannot_be_read_still_sends_the_event(client: Client,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    hostile = scope()
    hostile["query_string"] = 12345  # not bytes: the default properties cannot be made of it
    token = current_context.set(RequestContext(ASGI, hostile))
    try:
        assert client.track("search", properties={"n": 1}) is True
    finally:
        current_context.reset(token)
    with caplog.at_level(logging.WARNING, logger="sqreen_mw"):
        events = sent(client)
    assert [(e["name"], e["properties"], e["request"]) for e in events] == [("search", {"n": 1}, None)]
    assert "could not read the request" in caplog.text


def test_resolve_cached_walks_once_per_distinct_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = ClientIPResolver("10.0.0.0/8")
    walks: list[str | None] = []
    real = ClientIPResolver.resolve

    def counting(self: ClientIPResolver, peer: str | None, headers: Any) -> str | None:
        walks.append(peer)
        return real(self, peer, headers)

    monkeypatch.setattr(ClientIPResolver, "resolve", counting)
    two_hops = {"x-forwarded-for": "198.51.100.23, 10.0.0.3"}
    assert resolver.resolve_cached("10.0.0.2", two_hops) == "198.51.100.23"
    assert resolver.resolve_cached("10.0.0.2", dict(two_hops)) == "198.51.100.23"
    assert walks == ["10.0.0.2"]
    # another header value, or another peer, is another walk with its own answer
    assert resolver.resolve_cached("10.0.0.2", {"x-forwarded-for": "203.0.113.5"}) == "203.0.113.5"
    assert resolver.resolve_cached("198.51.100.7", two_hops) == "198.51.100.7"  # untrusted peer: headers ignored
    assert resolver.resolve_cached("10.0.0.2", {"x-real-ip": "203.0.113.9"}) == "203.0.113.9"
    assert len(walks) == 4


def _asgi_variant(i: int) -> dict[str, Any]:
    base = scope(b"q=" + str(i % 3).encode())
    base["client"] = (f"10.0.0.{i % 2}", 5000 + i)  # the port is not in the properties
    base["headers"] = [(b"user-agent", b"curl/%d" % (i % 2)), (b"x-forwarded-for", b"198.51.100.%d" % (i % 4)),
                       (b"cookie", b"session=%d" % i)]
    base["path_params"] = ({"id": 1}, {"id": True}, {"id": "1"}, None, {"id": 1.0})[i % 5]  # True == 1 == 1.0
    return base


def _wsgi_variant(i: int) -> dict[str, Any]:
    return {"REQUEST_METHOD": ("GET", "HEAD")[i % 2], "PATH_INFO": f"/p{i % 3}", "QUERY_STRING": f"a={i % 2}",
            "REMOTE_ADDR": f"10.0.0.{i % 4}", "HTTP_USER_AGENT": "ua", "HTTP_X_REAL_IP": f"203.0.113.{i % 3}"}


def test_equal_requests_share_their_scrubbed_properties_and_no_other_does(client: Client) -> None:
    captures = [RequestContext(ASGI, _asgi_variant(i)).capture() for i in range(60)]
    captures += [RequestContext(WSGI, _wsgi_variant(i)).capture() for i in range(24)]
    for order in (captures, captures[::-1]):  # the cache filled in one order, read in the other
        for captured in order:
            assert client._request_info(captured, shared=True) == client._request_info(captured)
    assert 0 < len(client._info_cache) < len(captures)  # some were shared
    first = RequestContext(ASGI, _asgi_variant(0)).capture()
    again = RequestContext(ASGI, _asgi_variant(0)).capture()
    assert client._request_info(first, shared=True) is client._request_info(again, shared=True)


def test_requests_with_a_body_or_a_long_url_are_not_cached(client: Client) -> None:
    from sqreen_mw._body import ASGIBodyTee

    async def never() -> dict[str, Any]:
        raise AssertionError

    tee = ASGIBodyTee(never, 1000)
    tee.feed(b'{"a": 1}', True)
    posted = {**scope(), "method": "POST", "headers": [(b"content-type", b"application/json")]}
    with_body = RequestContext(ASGI, posted, tee).capture()
    long_query = RequestContext(ASGI, scope(b"q=" + b"x" * 2000)).capture()
    for captured in (with_body, long_query):
        assert context_module.request_key(captured, None) is None
        assert client._request_info(captured, shared=True) == client._request_info(captured)
    assert client._request_info(with_body, shared=True)["params"]["json"] == {"a": 1}
    assert not client._info_cache


def test_capture_events_gets_its_own_request_properties(client: Client) -> None:
    # What capture_events() hands to a test may be changed by it: never the flusher's shared object
    from sqreen_mw.testing import capture_events

    with capture_events(client) as events:
        for _ in range(2):
            token = current_context.set(RequestContext(ASGI, scope()))
            try:
                client.track("search")
            finally:
                current_context.reset(token)
    events[0]["request"]["params"]["query"]["q"] = "changed"  # type: ignore[index]
    assert events[1]["request"]["params"]["query"]["q"] == "select name from users"  # type: ignore[index]
    assert not client._info_cache


def test_a_capture_that_cannot_be_keyed_still_gets_its_properties(client: Client) -> None:
    odd = RequestContext(ASGI, {**scope(), "path": None}).capture()  # a server that leaves the path out
    info = client._request_info(odd, shared=True)
    assert info is not None and info["path"] is None and info["user_agent"] == "curl/8"
    assert not client._info_cache


HEADER_NAMES = [b"user-agent", b"content-type", b"x-forwarded-for", b"forwarded", b"x-real-ip", b"cf-connecting-ip",
                b"cookie", b"accept", b"authorization", b"host"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.binary(max_size=12)), max_size=12),
       st.sampled_from([None, "cf-connecting-ip", "x-real-ip"]), st.booleans())
def test_a_capture_keeps_only_the_headers_its_properties_read(headers: list[tuple[bytes, bytes]],
                                                               ip_header: str | None, as_tuple: bool) -> None:
    client = Client(token="t", url="http://127.0.0.1:9", heartbeat_interval=3600, batch_size=10_000,
                    ip_header=ip_header, trusted_proxies=["10.0.0.0/8", "127.0.0.1/32"], install_signal_handler=False)
    try:
        raw = {**scope(), "headers": tuple(headers) if as_tuple else list(headers)}
        ctx = RequestContext(ASGI, raw)
        record = record_in_request(client, ctx, {"n": 1})
        wanted = {b"user-agent", b"content-type", b"x-forwarded-for", b"forwarded", b"x-real-ip"}
        if ip_header is not None:
            wanted.add(ip_header.encode())
        kept = ctx._capture[2]
        # names and values, flat, in order, repeated names too; the values are the request's own objects
        assert list(kept) == [item for pair in headers if pair[0] in wanted for item in pair]
        assert all(a is b for a, b in zip(kept[1::2], (p[1] for p in headers if p[0] in wanted), strict=True))
        whole = (*ctx._capture[:2], tuple(item for pair in headers for item in pair), *ctx._capture[3:])
        assert context_module.request_info(ctx._capture, client.resolver) == context_module.request_info(
            whole, client.resolver)  # the same default properties as from every header
        payload, _ = client._serialize([record])
        assert payload is not None
        (event,) = json.loads(payload)["events"]
        assert event["request"] == client.scrubber.scrub(context_module.request_info(whole, client.resolver))
    finally:
        client.shutdown(timeout=0.1)


def test_a_queued_event_does_not_hold_the_requests_other_headers(client: Client) -> None:
    import gc

    cookie = b"session=" + b"x" * 4096
    raw = {**scope(), "headers": [(b"user-agent", b"curl/8"), (b"cookie", cookie), (b"accept", b"*/*")]}
    record = record_in_request(client, RequestContext(ASGI, raw), {"n": 1})
    seen, stack = set(), [record]
    while stack:  # everything the record keeps alive
        value = stack.pop()
        if id(value) not in seen:
            seen.add(id(value))
            stack.extend(gc.get_referents(value))
    assert id(raw["headers"][0][1]) in seen and id(cookie) not in seen and id(raw["headers"][2][1]) not in seen
    assert id(raw["headers"][0]) not in seen  # no pair tuple kept: the value alone, with a name of the SDK's own


@pytest.mark.skipif(speedups is None, reason="the compiled capture keeps the SDK's own name objects")
def test_a_queued_event_keeps_its_header_names_once_for_all_requests(client: Client) -> None:
    import gc

    kept = []
    for _ in range(3):  # names made per request, as a server parses them (uvicorn lowers each)
        name = bytes(bytearray(b"user-agent"))
        raw = {**scope(), "headers": [(name, b"curl/8")]}
        ctx = RequestContext(ASGI, raw)
        record = record_in_request(client, ctx, {"n": 1})
        kept.append(ctx._capture[2][0])
        seen, stack = set(), [record]
        while stack:
            value = stack.pop()
            if id(value) not in seen:
                seen.add(id(value))
                stack.extend(gc.get_referents(value))
        assert id(name) not in seen
    assert kept[0] == b"user-agent" and kept[0] is kept[1] is kept[2]


def test_headers_that_are_not_all_pairs_count_whole_towards_the_queues_estimate(client: Client) -> None:
    # Such headers are kept as they were (request_info() then says it cannot read them), the cookie with them: the
    # queue's estimate, which max_queue_bytes bounds, counts what is kept.
    odd = record_in_request(client, RequestContext(ASGI, {**scope(), "headers": [
        (b"user-agent", b"curl/8"), (b"cookie", b"c" * 1000), ()]}), {"n": 1})
    plain = record_in_request(client, RequestContext(ASGI, {**scope(), "headers": [(b"user-agent", b"curl/8")]}),
                              {"n": 1})
    assert type(odd[6][2]) is list and len(odd[6][2]) == 3
    assert odd[8] - plain[8] == len(b"cookie") + 1000


def test_a_request_with_many_wanted_headers_keeps_them_all(client: Client) -> None:
    headers = [(b"x-forwarded-for", b"10.0.0.%d" % i) for i in range(40)] + [(b"cookie", b"c")]
    ctx = RequestContext(ASGI, {**scope(), "headers": headers})
    record_in_request(client, ctx, {"n": 1})
    assert list(ctx._capture[2]) == [item for pair in headers[:40] for item in pair]


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_what_a_request_keeps_counts_towards_the_queues_byte_bound(kind: str) -> None:
    # An attacker's 8 KB URLs: each queued event keeps its request's query until the batch is sent, so the queue's
    # estimate counts it (once per request), and max_queue_bytes bounds what the queue holds.
    client = Client(token="t", url="http://127.0.0.1:9", heartbeat_interval=3600, batch_size=10_000,
                    max_queue_bytes=200_000, install_signal_handler=False)
    try:
        query = "q=" + "x" * 8000
        for i in range(100):
            raw: Any
            if kind == "asgi":
                raw = {**scope(query.encode()), "path": f"/search/{i}"}
                ctx = RequestContext(ASGI, raw)
            else:
                raw = {"REQUEST_METHOD": "GET", "PATH_INFO": f"/search/{i}", "QUERY_STRING": query,
                       "REMOTE_ADDR": "203.0.113.9"}
                ctx = RequestContext(WSGI, raw)
            token = current_context.set(ctx)
            try:
                client.track("e", properties={"n": i})
                client.track("e", properties={"n": i})  # the same request: its capture is counted once
            finally:
                current_context.reset(token)
        stats = client.queue.statistics()
        assert stats["queued_bytes"] <= 200_000 and stats["dropped"].get("queue_full", 0) > 150
        assert 8000 * stats["queued"] / 2 <= stats["queued_bytes"]  # every kept request's query is in the estimate
    finally:
        client.shutdown(timeout=0.1)
