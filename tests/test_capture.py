"""The request's default properties are made on the flusher thread, from a capture taken by the first event."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import sqreen_mw._context as context_module
from sqreen_mw import Client
from sqreen_mw._context import ASGI, WSGI, RequestContext, current_context
from sqreen_mw._ip import ClientIPResolver


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
    calls: list[str] = []
    real = context_module.parse_query
    monkeypatch.setattr(context_module, "parse_query", lambda q: calls.append(q) or real(q))
    token = current_context.set(RequestContext(ASGI, scope()))
    try:
        client.track("search", properties={"n": 1})
        client.track("search", properties={"n": 2})
    finally:
        current_context.reset(token)
    assert calls == []  # nothing parsed on the request's thread
    events = sent(client)
    assert calls == ["user=42&q=select+name+from+users&page=3"]  # once for the request's two events
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
