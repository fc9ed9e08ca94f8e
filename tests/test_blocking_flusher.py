"""How the flusher takes actions from the collector's answers (unit level: httpx.MockTransport is the network edge)."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

import sqreen_mw
from sqreen_mw._transport import Transport

MakeClient = Callable[..., sqreen_mw.Client]
BLOCK = {"id": "b_1", "action": "block_ip", "value": "203.0.113.0/24", "expires_at": None}


def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.01)


class FakeCollector:
    """Scripted answers, and every request kept (method, path, headers, JSON body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        raw = request.content
        if request.headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        body = json.loads(raw) if raw else None
        self.requests.append((request.method, request.url.path, dict(request.headers), body))
        path = request.url.path
        if path == "/api/v1/agent/login":
            return httpx.Response(200, json={"protocol": 1, "session_id": "s1", "app": "t", "heartbeat_delay": None,
                                             "actions_version": 1, "actions": [BLOCK], "hot_events": ["hot.one"]})
        if path == "/api/v1/agent/actions":
            return httpx.Response(404, json={"error": "not here"})  # an older collector: no push channel
        if path == "/api/v1/agent/batch":
            held = request.headers.get("x-actions-version")
            extra = {"actions_version": 2} if held == "2" else {"actions_version": 2, "actions": [], "hot_events": []}
            return httpx.Response(200, json={"accepted": len(body["events"]), "duplicates": 0, **extra})
        return httpx.Response(200, json={})


def test_login_batch_answers_and_hot_events(make_client: MakeClient) -> None:
    fake = FakeCollector()
    client = make_client("token", "http://collector", heartbeat_interval=60)
    settings = client.settings
    client.flusher._make_transport = lambda: Transport(  # the network edge only; the flusher runs for real
        settings["url"], "token", None, 5.0,
        httpx.AsyncClient(transport=httpx.MockTransport(fake.handler), base_url="http://collector"),
        trusted_proxies=list(client.resolver.networks))
    client.start()
    until(lambda: client.actions.version == 1)
    assert client.actions.ip_block("203.0.113.7") is not None
    assert client.actions.hot_events == {"hot.one"}
    login = next(r for r in fake.requests if r[1] == "/api/v1/agent/login")
    assert login[3]["trusted_proxies"] == ["127.0.0.0/8", "::1/128"]

    sqreen_mw.track("hot.one")  # feeds a playbook: sent at once, not at the one-minute heartbeat
    until(lambda: any(r[1] == "/api/v1/agent/batch" for r in fake.requests), 5)
    until(lambda: client.actions.version == 2)  # the batch answer carried newer (empty) actions
    assert not client.actions.has_ip_blocks
    batch = next(r for r in fake.requests if r[1] == "/api/v1/agent/batch")
    assert batch[2]["x-actions-version"] == "1"
    assert [e["name"] for e in batch[3]["events"]] == ["hot.one"]
    polls = [r for r in fake.requests if r[1] == "/api/v1/agent/actions"]
    assert len(polls) == 1, "a 404 ends the push channel: actions then come with the answers"
    assert polls[0][2]["x-actions-version"] == "1" and polls[0][2]["x-session-key"] == "s1"


def test_ordinary_events_wait_for_the_heartbeat(make_client: MakeClient) -> None:
    fake = FakeCollector()
    client = make_client("token", "http://collector", heartbeat_interval=60)
    client.flusher._make_transport = lambda: Transport(
        "http://collector", "token", None, 5.0,
        httpx.AsyncClient(transport=httpx.MockTransport(fake.handler), base_url="http://collector"))
    client.start()
    until(lambda: client.actions.version == 1)
    sqreen_mw.track("cold.one")
    time.sleep(0.5)
    assert not any(r[1] == "/api/v1/agent/batch" for r in fake.requests)
    assert len(client.queue) == 1


class SlowLogin(FakeCollector):
    """Answers the login only after a while: events are queued before the process knows which names are hot."""

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/agent/login":
            time.sleep(0.3)
        return super().handler(request)


def _start_slow(make_client: MakeClient) -> tuple[SlowLogin, sqreen_mw.Client]:
    fake = SlowLogin()
    client = make_client("token", "http://collector", heartbeat_interval=60)
    client.flusher._make_transport = lambda: Transport(
        "http://collector", "token", None, 5.0,
        httpx.AsyncClient(transport=httpx.MockTransport(fake.handler), base_url="http://collector"))
    return fake, client


def test_events_queued_before_login_wait_unless_hot(make_client: MakeClient) -> None:
    fake, client = _start_slow(make_client)
    sqreen_mw.track("cold.one")  # starts the flusher; its login is still on the way
    until(lambda: client.actions.version == 1)
    time.sleep(0.5)
    assert not any(r[1] == "/api/v1/agent/batch" for r in fake.requests), "an ordinary event waits for the heartbeat"
    assert len(client.queue) == 1


def test_a_hot_event_queued_before_login_is_sent_at_login(make_client: MakeClient) -> None:
    fake, _client = _start_slow(make_client)
    sqreen_mw.track("cold.one")
    sqreen_mw.track("hot.one")  # its name turns out to feed a playbook: sent as soon as that is known
    until(lambda: any(r[1] == "/api/v1/agent/batch" for r in fake.requests), 5)
    batch = next(r for r in fake.requests if r[1] == "/api/v1/agent/batch")
    assert [e["name"] for e in batch[3]["events"]] == ["cold.one", "hot.one"]
