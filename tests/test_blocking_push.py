"""Actions delivery with the real collector on loopback: login, the push channel, reconnection, hot events."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import sqreen_mw

from .support import API_KEY, Collector, free_port, serve_in_thread, start_collector

MakeClient = Callable[..., sqreen_mw.Client]
pytestmark = pytest.mark.e2e


def until(check: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - start


def block(collector: Collector, kind: str, value: object) -> str:
    with httpx.Client(base_url=collector.url, timeout=10,
                      headers={"Authorization": f"Bearer {collector.admin_token}"}) as http:
        answer = http.post("/api/v1/blocks", json={"kind": kind, "value": value, "duration": "1h", "reason": "t"})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])


def lift(collector: Collector, block_id: str) -> None:
    with httpx.Client(base_url=collector.url, timeout=10,
                      headers={"Authorization": f"Bearer {collector.admin_token}"}) as http:
        assert http.delete(f"/api/v1/blocks/{block_id}").status_code == 200


def started(client: sqreen_mw.Client) -> sqreen_mw.Client:
    client.start()
    until(lambda: client.actions.version >= 0, 10)  # logged in: the login answer carries the actions
    return client


def test_blocks_arrive_over_the_push_channel(make_client: MakeClient, collector: Collector) -> None:
    client = started(make_client(API_KEY, collector.url, heartbeat_interval=60))
    first = client.actions.version
    block_id = block(collector, "ip", "203.0.113.0/24")
    took = until(lambda: client.actions.ip_block("203.0.113.9") is not None, 5)
    assert client.actions.version != first
    user_block = block(collector, "user", {"email": "eve@example.com"})
    until(lambda: client.actions.user_block({"email": "eve@example.com"}) is not None, 5)
    lift(collector, block_id)
    lifted = until(lambda: client.actions.ip_block("203.0.113.9") is None, 5)
    lift(collector, user_block)
    until(lambda: not client.actions.has_user_blocks, 5)
    assert took < 5 and lifted < 5
    print(f"block arrived after {took * 1000:.0f} ms, unblock after {lifted * 1000:.0f} ms")


def test_login_carries_the_actions_and_tells_the_collector_our_proxies(
    make_client: MakeClient, collector: Collector
) -> None:
    block(collector, "ip", "198.51.100.0/24")
    client = started(make_client(API_KEY, collector.url, heartbeat_interval=60, trusted_proxies="192.0.2.1"))
    assert client.actions.ip_block("198.51.100.7") is not None
    # the collector now refuses to block the app's proxy (blocking it would block everyone behind it)
    with httpx.Client(base_url=collector.url, timeout=10,
                      headers={"Authorization": f"Bearer {collector.admin_token}"}) as http:
        refused = http.post("/api/v1/blocks", json={"kind": "ip", "value": "192.0.2.1", "duration": "1h",
                                                    "reason": "t"})
    assert refused.status_code == 422 and "trusted proxy" in refused.text


def test_reconnects_after_a_collector_restart(make_client: MakeClient, tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "events.db"
    with start_collector(db, port=port) as collector:
        client = started(make_client(API_KEY, collector.url, heartbeat_interval=60))
        block(collector, "ip", "203.0.113.0/24")
        until(lambda: client.actions.ip_block("203.0.113.9") is not None, 5)
    # The agent's collector is down. Blocks are still enforced (until they expire), and a block is made meanwhile
    # through another collector process on the same database, which the agent does not know.
    with start_collector(db) as elsewhere:
        block(elsewhere, "ip", "198.51.100.0/24")
    assert client.actions.ip_block("203.0.113.9") is not None
    assert client.actions.ip_block("198.51.100.9") is None
    with start_collector(db, port=port):
        # the agent reconnects (backoff), the versions differ, the missed block arrives
        took = until(lambda: client.actions.ip_block("198.51.100.9") is not None, 40)
        print(f"reconnected and got the missed block {took:.1f} s after the collector was back")
    client.shutdown(timeout=2)


def test_shutdown_is_not_delayed_by_the_push_channel(make_client: MakeClient, collector: Collector) -> None:
    client = started(make_client(API_KEY, collector.url, heartbeat_interval=60))
    time.sleep(0.3)  # the long-poll is open
    t0 = time.monotonic()
    client.shutdown(timeout=2)
    assert time.monotonic() - t0 < 2.5


def test_hot_events_are_sent_at_once(make_client: MakeClient, collector: Collector) -> None:
    with httpx.Client(base_url=collector.url, timeout=10,
                      headers={"Authorization": f"Bearer {collector.admin_token}"}) as http:
        answer = http.put("/api/v1/playbooks/stuffing", json={
            "name": "stuffing", "event": "login.failed", "actor": "ip", "threshold": 1000, "window": "5m",
            "response": [{"action": "log"}]})
        assert answer.status_code in (200, 201), answer.text
    client = started(make_client(API_KEY, collector.url, heartbeat_interval=60))
    until(lambda: "login.failed" in client.actions.hot_events, 5)
    sqreen_mw.track("page.viewed")  # not hot: waits for the heartbeat
    sqreen_mw.track("login.failed")
    took = until(lambda: len(collector.events(name="login.failed")) == 1, 5)
    print(f"hot event stored after {took * 1000:.0f} ms")


def test_events_tracked_before_the_first_login_answer_are_sent_on_login(make_client: MakeClient,
                                                                        collector: Collector) -> None:
    # Until its login is answered a process does not know which names are hot: what it queued meanwhile goes as
    # soon as the answer arrives, not at the next heartbeat (a worker busy at start must not miss an attack).
    import anyio
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from .support import FaultyProxy, serve_in_thread

    forward = FaultyProxy(collector.url, [])

    async def slow_login(request: Request) -> Response:
        if request.url.path.endswith("/login"):
            await anyio.sleep(1.0)
        return await forward._handle(request)  # type: ignore[no-any-return]

    with httpx.Client(base_url=collector.url, timeout=10,
                      headers={"Authorization": f"Bearer {collector.admin_token}"}) as http:
        http.put("/api/v1/playbooks/early", json={
            "name": "early", "event": "login.failed", "actor": "ip", "threshold": 1000, "window": "5m",
            "response": [{"action": "log"}]}).raise_for_status()
    app = Starlette(routes=[Route("/{path:path}", slow_login, methods=["GET", "POST"])])
    with serve_in_thread(app) as url:
        client = make_client(API_KEY, url, heartbeat_interval=60)
        client.start()
        sqreen_mw.track("login.failed")  # while the login is on its way
        assert "login.failed" not in client.actions.hot_events
        until(lambda: len(collector.events(name="login.failed")) == 1, 5)


def test_playbooks_loaded_at_a_collector_restart_reach_running_agents(make_client: MakeClient,
                                                                       tmp_path: Path) -> None:
    # Agents keep their session across the restart: the new hot event names must reach them all the same.
    port = free_port()
    playbooks = tmp_path / "playbooks.toml"
    playbooks.write_text('[[playbook]]\nname = "p"\nevent = "login.failed"\nactor = "ip"\nthreshold = 99\n'
                         'window = "1m"\n[[playbook.response]]\naction = "log"\n')
    with start_collector(tmp_path / "events.db", port=port):
        client = started(make_client(API_KEY, f"http://127.0.0.1:{port}", heartbeat_interval=60))
        assert "login.failed" not in client.actions.hot_events
    with start_collector(tmp_path / "events.db", port=port, extra=["--playbooks", str(playbooks)]):
        until(lambda: "login.failed" in client.actions.hot_events, 20)


def test_an_unchanged_answer_that_was_not_held_is_not_polled_again_at_once(make_client: MakeClient) -> None:
    # A proxy answering for the collector, or a collector that does not hold the request: without a pause the
    # channel polls in a busy loop (and keeps such a server's connection busy for ever).
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    polls: list[float] = []

    async def login(request: Request) -> Response:
        return JSONResponse({"protocol": 1, "session_id": "s", "app": "default", "heartbeat_delay": None,
                             "actions_version": 1, "actions": [], "hot_events": []})

    async def actions(request: Request) -> Response:
        polls.append(time.monotonic())
        return JSONResponse({"actions_version": 1, "changed": False})  # at once, never held

    async def other(request: Request) -> Response:
        return JSONResponse({})

    app = Starlette(routes=[Route("/api/v1/agent/login", login, methods=["POST"]),
                            Route("/api/v1/agent/actions", actions),
                            Route("/api/v1/agent/{rest:path}", other, methods=["POST"])])
    with serve_in_thread(app) as url:
        started(make_client(API_KEY, url, heartbeat_interval=60))
        until(lambda: len(polls) >= 1, 10)
        time.sleep(2.0)
        count = len(polls)
    assert 2 <= count <= 8, f"{count} polls in 2 s"  # one per 0.5-1 s, not a busy loop
