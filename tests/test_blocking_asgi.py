"""Blocking in the ASGI middleware, in process (Starlette and FastAPI through httpx.ASGITransport)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

import sqreen_mw
from sqreen_mw import UserBlocked
from sqreen_mw._ip import ClientIPResolver
from sqreen_mw.asgi import SqreenMiddleware
from sqreen_mw.testing import capture_events

MakeClient = Callable[..., sqreen_mw.Client]
pytestmark = pytest.mark.anyio

ATTACKER = "203.0.113.66"
EVE = {"email": "eve@example.com"}
ACTIONS = {
    "actions_version": 3,
    "actions": [
        {"id": "b_ip", "action": "block_ip", "value": "203.0.113.64/27", "expires_at": None},
        {"id": "b_eve", "action": "block_user", "value": EVE, "expires_at": None},
    ],
    "hot_events": [],
}
calls: list[str] = []


async def home(request: Request) -> PlainTextResponse:
    calls.append("home")
    sqreen_mw.track("home.viewed")
    return PlainTextResponse("home")


async def quiet(request: Request) -> PlainTextResponse:
    return PlainTextResponse("tracks nothing")


async def login(request: Request) -> JSONResponse:
    payload = await request.json()
    sqreen_mw.auth_track(True, email=payload["email"])  # raises UserBlocked for eve: not caught here
    calls.append("logged-in")
    return JSONResponse({"ok": True})


def swallow(request: Request) -> PlainTextResponse:  # sync: runs in the thread pool
    try:
        sqreen_mw.identify(EVE)
    except UserBlocked:
        pass  # the app ignores it: the middleware still answers 403
    sqreen_mw.track("after.identify")
    return PlainTextResponse("you should not see this")


async def late(request: Request) -> StreamingResponse:
    async def body() -> Any:
        yield b"first,"
        try:
            sqreen_mw.identify(EVE)  # the response has started: it finishes, with a warning
        except UserBlocked:
            pass
        yield b"second"

    return StreamingResponse(body())


def make_app() -> Starlette:
    app = Starlette(routes=[
        Route("/", home),
        Route("/quiet", quiet),
        Route("/login", login, methods=["POST"]),
        Route("/swallow", swallow),
        Route("/late", late),
    ])
    app.add_middleware(SqreenMiddleware)
    return app


def client_for(app: Any, peer: str = "198.51.100.5") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(peer, 5000)), base_url="http://app")


@pytest.fixture
def client(make_client: MakeClient) -> sqreen_mw.Client:
    calls.clear()
    client = make_client()
    client.set_actions(ACTIONS)
    return client


async def test_blocked_ip_gets_403_before_the_app_runs(client: sqreen_mw.Client) -> None:
    async with client_for(make_app(), ATTACKER) as http:
        with capture_events() as events:
            blocked = await http.get("/")
            again = await http.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert calls == []
    assert blocked.status_code == 403
    assert blocked.headers["content-type"] == "application/json"
    assert blocked.headers["cache-control"] == "no-store"
    assert blocked.json()["error"] == "blocked"
    assert again.status_code == 403 and again.headers["content-type"].startswith("text/html")
    assert "Access blocked" in again.text
    # one enforcement event per actor per minute, marked blocked so it never feeds a playbook
    (event,) = events
    assert event["name"] == "sq.action.block_ip"
    assert event["properties"] == {"block_id": "b_ip", "actor": ATTACKER}
    assert event["blocked"] is True  # type: ignore[typeddict-item]
    assert event["request"] is not None and event["request"]["client_ip"] == ATTACKER
    assert client.statistics()["blocked"] == {"ip": 2, "user": 0}


async def test_other_clients_are_served(client: sqreen_mw.Client) -> None:
    async with client_for(make_app(), "203.0.113.96") as http:  # just outside the /27
        with capture_events() as events:
            response = await http.get("/")
    assert response.status_code == 200 and calls == ["home"]
    assert [e["name"] for e in events] == ["home.viewed"]
    assert "blocked" not in events[0]


async def test_lifting_and_expiry(client: sqreen_mw.Client) -> None:
    async with client_for(make_app(), ATTACKER) as http:
        assert (await http.get("/")).status_code == 403
        client.set_actions({"actions_version": 4, "actions": [], "hot_events": []})
        assert (await http.get("/")).status_code == 200
        client.set_actions({"actions_version": 5, "actions": [
            {"id": "gone", "action": "block_ip", "value": ATTACKER, "expires_at": "2001-01-01T00:00:00Z"}]})
        assert (await http.get("/")).status_code == 200
    assert client.actions.version == 5


async def test_blocked_user_uncaught(client: sqreen_mw.Client) -> None:
    async with client_for(make_app()) as http:
        with capture_events() as events:
            response = await http.post("/login", json=EVE)
            ok = await http.post("/login", json={"email": "ann@example.com"})
    assert response.status_code == 403 and response.json()["error"] == "blocked"
    assert ok.status_code == 200
    assert calls == ["logged-in"]  # only ann's
    names = [(e["name"], e.get("blocked")) for e in events]
    assert names == [("sq.auth_track", True), ("sq.action.block_user", True), ("sq.auth_track", None)]
    report = events[1]
    assert report["properties"] == {"block_id": "b_eve", "actor": '{"email":"eve@example.com"}'}
    assert report["user_identifiers"] == EVE


async def test_blocked_user_caught_by_the_app_still_gets_403(client: sqreen_mw.Client) -> None:
    async with client_for(make_app()) as http:
        with capture_events() as events:
            response = await http.get("/swallow")
    assert response.status_code == 403 and "should not see" not in response.text
    assert [(e["name"], e.get("blocked")) for e in events] == [
        ("sq.action.block_user", True), ("after.identify", True)]


async def test_response_already_started_finishes_with_a_warning(
    client: sqreen_mw.Client, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for(make_app()) as http:
        response = await http.get("/late")
    assert response.status_code == 200 and response.text == "first,second"
    warnings = [r.getMessage() for r in caplog.records if r.name == "sqreen_mw" and r.levelno == logging.WARNING]
    assert any("response had already started" in w for w in warnings), warnings


async def test_identify_outside_a_request_raises_too(client: sqreen_mw.Client) -> None:
    with pytest.raises(UserBlocked) as info:
        sqreen_mw.identify({"email": "eve@example.com"})
    assert info.value.user_identifiers == EVE and info.value.action_id == "b_eve"
    with pytest.raises(UserBlocked):
        sqreen_mw.auth_track(True, email="eve@example.com")
    sqreen_mw.auth_track(False, email="eve@example.com")  # a failed attempt names nobody: no block


async def test_forged_forwarded_for_from_an_untrusted_peer(client: sqreen_mw.Client) -> None:
    async with client_for(make_app(), ATTACKER) as http:  # cannot evade: the header is ignored
        assert (await http.get("/", headers={"X-Forwarded-For": "198.51.100.1"})).status_code == 403
    async with client_for(make_app(), "198.51.100.1") as http:  # cannot get someone else blocked
        assert (await http.get("/", headers={"X-Forwarded-For": ATTACKER})).status_code == 200
    async with client_for(make_app(), "127.0.0.1") as http:  # a trusted proxy's word is taken
        assert (await http.get("/", headers={"X-Forwarded-For": ATTACKER})).status_code == 403
        assert (await http.get("/", headers={"X-Forwarded-For": f"{ATTACKER}, 198.51.100.1"})).status_code == 200


async def test_loopback_and_trusted_proxies_are_never_blocked(make_client: MakeClient) -> None:
    client = make_client(trusted_proxies="127.0.0.1, 10.0.0.0/8")
    client.set_actions({"actions_version": 1, "actions": [
        {"id": "all", "action": "block_ip", "value": "0.0.0.0/0", "expires_at": None}]})
    async with client_for(make_app(), "127.0.0.1") as http:
        assert (await http.get("/")).status_code == 200
    async with client_for(make_app(), "10.1.2.3") as http:
        assert (await http.get("/")).status_code == 200
    async with client_for(make_app(), "11.1.2.3") as http:
        assert (await http.get("/")).status_code == 403


async def test_custom_block_response(make_client: MakeClient) -> None:
    client = make_client(block_status=429, block_body="<p>Too many attempts</p>")
    client.set_actions(ACTIONS)
    async with client_for(make_app(), ATTACKER) as http:
        response = await http.get("/", headers={"Accept": "application/json"})
    assert response.status_code == 429
    assert response.text == "<p>Too many attempts</p>"
    assert response.headers["content-type"] == "text/html; charset=utf-8"


async def test_no_ip_block_means_no_client_ip_resolution(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved: list[str | None] = []
    original = ClientIPResolver.resolve

    def spy(self: ClientIPResolver, peer: str | None, headers: Any) -> str | None:
        resolved.append(peer)
        return original(self, peer, headers)

    monkeypatch.setattr(ClientIPResolver, "resolve", spy)
    client = make_client()
    client.set_actions({"actions_version": 1, "actions": [ACTIONS["actions"][1]]})  # a user block only
    async with client_for(make_app(), ATTACKER) as http:
        assert (await http.get("/quiet")).status_code == 200
    assert resolved == []
    client.set_actions(ACTIONS)
    async with client_for(make_app(), ATTACKER) as http:
        assert (await http.get("/quiet")).status_code == 403
    assert set(resolved) == {ATTACKER}  # the check (and the enforcement event of the refusal)


async def test_websocket_from_a_blocked_ip_is_refused(client: sqreen_mw.Client) -> None:
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not run")

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": [], "client": (ATTACKER, 1), "query_string": b""}
    await SqreenMiddleware(app)(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_behind_a_base_http_middleware(client: sqreen_mw.Client) -> None:
    fastapi = pytest.importorskip("fastapi")
    app = fastapi.FastAPI()

    @app.middleware("http")
    async def add_header(request: Any, call_next: Any) -> Any:  # a BaseHTTPMiddleware inside ours
        response = await call_next(request)
        response.headers["x-user-middleware"] = "1"
        return response

    app.add_middleware(SqreenMiddleware)

    @app.post("/login")
    def do_login(payload: dict[str, str]) -> dict[str, bool]:
        sqreen_mw.auth_track(True, email=payload["email"])
        return {"ok": True}

    @app.get("/swallow")
    async def do_swallow() -> dict[str, bool]:
        try:
            sqreen_mw.identify(EVE)
        except UserBlocked:
            pass
        return {"ok": True}

    async with client_for(app) as http:
        assert (await http.post("/login", json={"email": "ann@example.com"})).status_code == 200
        response = await http.post("/login", json=EVE)
        assert response.status_code == 403 and json.loads(response.text)["error"] == "blocked"
        assert (await http.get("/swallow")).status_code == 403
    async with client_for(app, ATTACKER) as http:
        assert (await http.get("/swallow")).status_code == 403


async def test_outside_base_http_middleware(client: sqreen_mw.Client) -> None:
    # Ours added first, then the user's BaseHTTPMiddleware: the user's is the outer one.
    fastapi = pytest.importorskip("fastapi")
    app = fastapi.FastAPI()
    app.add_middleware(SqreenMiddleware)

    @app.middleware("http")
    async def outer(request: Any, call_next: Any) -> Any:
        return await call_next(request)

    @app.post("/login")
    async def do_login(payload: dict[str, str]) -> dict[str, bool]:
        sqreen_mw.auth_track(True, email=payload["email"])
        return {"ok": True}

    async with client_for(app) as http:
        assert (await http.post("/login", json=EVE)).status_code == 403
        assert (await http.post("/login", json={"email": "ann@example.com"})).status_code == 200
