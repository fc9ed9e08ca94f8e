"""The ASGI middleware in-process (Starlette and FastAPI driven through httpx.ASGITransport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

import sqreen_mw
from sqreen_mw._context import current_context
from sqreen_mw._schema import TRUNCATION_MARKER
from sqreen_mw.asgi import SqreenMiddleware
from sqreen_mw.testing import capture_events

from .support import all_slots

MakeClient = Callable[..., sqreen_mw.Client]
pytestmark = pytest.mark.anyio


async def login(request: Request) -> JSONResponse:
    form = await request.form()
    sqreen_mw.auth_track(True, email=str(form["email"]))
    sqreen_mw.track("after.login", properties={"step": 1})
    return JSONResponse({"ok": True})


def sync_item(request: Request) -> PlainTextResponse:  # runs in the thread pool
    sqreen_mw.identify({"id": 42})
    sqreen_mw.track("item.viewed", properties={"item": request.path_params["item_id"]})
    return PlainTextResponse("ok")


async def order(request: Request) -> JSONResponse:
    payload = await request.json()
    sqreen_mw.track("order.placed", properties={"total": payload["total"]}, collect_body=True)
    return JSONResponse({"echo": payload})


async def stream(request: Request) -> StreamingResponse:
    async def body() -> Any:
        yield b"a"
        sqreen_mw.track("stream.chunk")
        yield b"b"

    return StreamingResponse(body())


async def unread_body(request: Request) -> PlainTextResponse:
    sqreen_mw.track("unread", collect_body=True)
    return PlainTextResponse((await request.body()).decode())


def make_app() -> Starlette:
    app = Starlette(routes=[
        Route("/login", login, methods=["POST"]),
        Route("/items/{item_id}", sync_item),
        Route("/order", order, methods=["POST"]),
        Route("/stream", stream),
        Route("/unread", unread_body, methods=["POST"]),
    ])
    app.add_middleware(SqreenMiddleware)
    return app


def instrumented(endpoint: Any, path: str, post: bool = False) -> Starlette:
    """A one-route Starlette app behind the middleware."""
    app = Starlette(routes=[Route(path, endpoint, methods=["POST"] if post else ["GET"])])
    app.add_middleware(SqreenMiddleware)
    return app


def client_for(app: Any, client: tuple[str, int] = ("203.0.113.9", 5000)) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=client), base_url="http://app")


async def test_default_properties_and_inherited_user(make_client: MakeClient) -> None:
    make_client()
    async with client_for(make_app()) as http:
        with capture_events() as events:
            response = await http.post(
                "/login?next=%2Fhome&token=abc", data={"email": "bob@example.com", "password": "hunter2"},
                headers={"User-Agent": "pytest-agent/1.0"},
            )
    assert response.status_code == 200
    auth, after = events
    assert auth["name"] == "sq.auth_track" and auth["user_identifiers"] == {"email": "bob@example.com"}
    assert after["user_identifiers"] == {"email": "bob@example.com"}  # inherited from auth_track(True)
    request = after["request"]
    assert request is not None
    assert request["client_ip"] == "203.0.113.9"
    assert request["user_agent"] == "pytest-agent/1.0"
    assert (request["path"], request["verb"]) == ("/login", "POST")
    assert request["params"]["query"] == {"next": "/home", "token": "[REDACTED]"}
    assert request["params"]["form"] == {"email": "bob@example.com", "password": "[REDACTED]"}
    assert current_context.get() is None


async def test_sync_endpoint_in_thread_pool_sees_the_context(make_client: MakeClient) -> None:
    make_client()
    async with client_for(make_app()) as http:
        with capture_events() as events:
            await http.get("/items/sku-9")
    (event,) = events
    assert event["user_identifiers"] == {"id": 42}
    assert event["request"] is not None and event["request"]["params"]["path"] == {"item_id": "sku-9"}


async def test_collect_body_leaves_the_body_to_the_app(make_client: MakeClient) -> None:
    make_client()
    payload = {"total": 99, "card": "4111111111111111", "note": "gift"}
    async with client_for(make_app()) as http:
        with capture_events() as events:
            response = await http.post("/order", json=payload)
    assert response.json() == {"echo": payload}
    (event,) = events
    assert event["body"] == {"total": 99, "card": "[REDACTED]", "note": "gift"}
    assert event["request"] is not None and event["request"]["params"]["json"]["card"] == "[REDACTED]"


async def test_body_over_the_cap_is_cut_and_marked(make_client: MakeClient) -> None:
    make_client(max_body_bytes=16)
    async with client_for(make_app()) as http:
        with capture_events() as events:
            response = await http.post("/order", content=json.dumps({"total": 1, "pad": "x" * 100}),
                                       headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert events[0]["body"] == '{"total": 1, "pa...[truncated]'


async def test_body_not_read_by_the_app_is_not_collected_and_still_reaches_it(make_client: MakeClient) -> None:
    make_client()
    async with client_for(make_app()) as http:
        with capture_events() as events:
            response = await http.post("/unread", content=b"hello")
    assert response.text == "hello"
    assert events[0]["body"] is None


async def test_streamed_response_keeps_the_context(make_client: MakeClient) -> None:
    make_client()
    async with client_for(make_app()) as http:
        with capture_events() as events:
            response = await http.get("/stream")
    assert response.text == "ab"
    assert events[0]["request"] is not None and events[0]["request"]["path"] == "/stream"


async def test_request_argument_accepts_starlette_request_and_scope(make_client: MakeClient) -> None:
    make_client()

    async def endpoint(request: Request) -> PlainTextResponse:
        sqreen_mw.track("explicit", request=request)
        sqreen_mw.track("explicit", request=request.scope)
        sqreen_mw.track("no.request")
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/x", endpoint)])  # no middleware: request= is the only way in
    async with client_for(app) as http:
        with capture_events() as events:
            await http.get("/x?q=1")
    expected = {"client_ip": "203.0.113.9", "user_agent": "python-httpx/" + httpx.__version__, "path": "/x",
                "verb": "GET", "params": {"query": {"q": "1"}}}
    assert [e["request"] for e in events] == [expected, expected, None]


async def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored(make_client: MakeClient) -> None:
    make_client()
    async with client_for(make_app()) as http:
        with capture_events() as events:
            await http.get("/items/1", headers={"X-Forwarded-For": "1.2.3.4"})
    assert events[0]["request"] is not None and events[0]["request"]["client_ip"] == "203.0.113.9"
    # a private peer is no proxy by default (loopback only) ...
    async with client_for(make_app(), client=("10.0.0.5", 1)) as http:
        with capture_events() as events:
            await http.get("/items/1", headers={"X-Forwarded-For": "198.51.100.7, 10.0.0.2"})
    assert events[0]["request"] is not None and events[0]["request"]["client_ip"] == "10.0.0.5"
    # ... unless trusted_proxies="private" says so
    make_client(trusted_proxies="private")
    async with client_for(make_app(), client=("10.0.0.5", 1)) as http:
        with capture_events() as events:
            await http.get("/items/1", headers={"X-Forwarded-For": "198.51.100.7, 10.0.0.2"})
    assert events[0]["request"] is not None and events[0]["request"]["client_ip"] == "198.51.100.7"


async def test_fastapi_app(make_client: MakeClient) -> None:
    fastapi = pytest.importorskip("fastapi")
    make_client()
    app = fastapi.FastAPI()
    app.add_middleware(SqreenMiddleware)

    @app.get("/users/{user_id}")
    def read_user(user_id: int) -> dict[str, int]:
        sqreen_mw.identify({"id": user_id})
        sqreen_mw.track("user.read")
        return {"id": user_id}

    async with client_for(app) as http:
        with capture_events() as events:
            assert (await http.get("/users/7?password=x")).json() == {"id": 7}
    (event,) = events
    assert event["user_identifiers"] == {"id": 7}
    assert event["request"] is not None
    assert event["request"]["params"] == {"query": {"password": "[REDACTED]"}, "path": {"user_id": "7"}}


async def test_non_http_scopes_pass_through() -> None:
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["type"])
        assert current_context.get() is None

    await SqreenMiddleware(app)({"type": "websocket", "path": "/ws"}, None, None)  # type: ignore[arg-type]
    assert calls == ["websocket"]


async def test_hostile_json_body_never_raises_into_the_app(make_client: MakeClient) -> None:
    make_client()

    async def endpoint(request: Request) -> PlainTextResponse:
        await request.body()
        sqreen_mw.track("login.failed", collect_body=True)
        return PlainTextResponse("ok")

    app = instrumented(endpoint, "/deep", post=True)
    async with client_for(app) as http:
        with capture_events() as events:
            response = await http.post("/deep", content=b"[" * 5000, headers={"content-type": "application/json"})
    assert response.text == "ok"
    assert events[0]["request"] is not None and "json" not in events[0]["request"]["params"]
    assert events[0]["body"] == "[" * 5000  # too deep to parse: kept as text


async def test_explicit_user_identifiers_override_the_identified_user(make_client: MakeClient) -> None:
    make_client()

    async def endpoint(request: Request) -> PlainTextResponse:
        sqreen_mw.identify({"email": "admin@example.com"})
        sqreen_mw.track("user.impersonated", user_identifiers={"email": "victim@example.com"})
        sqreen_mw.track("admin.action")
        return PlainTextResponse("ok")

    app = instrumented(endpoint, "/x")
    async with client_for(app) as http:
        with capture_events() as events:
            await http.get("/x")
    assert [e["user_identifiers"] for e in events] == [{"email": "victim@example.com"}, {"email": "admin@example.com"}]


async def test_user_agent_and_cut_bodies_are_scrubbed(make_client: MakeClient) -> None:
    make_client(max_body_bytes=40)

    async def endpoint(request: Request) -> PlainTextResponse:
        await request.body()
        sqreen_mw.track("x", collect_body=True)
        return PlainTextResponse("ok")

    app = instrumented(endpoint, "/x", post=True)
    async with client_for(app) as http:
        with capture_events() as events:
            await http.post("/x", content=b"note=card 4111 1111 1111 1111 and more text after it",
                            headers={"content-type": "text/plain", "user-agent": "Bearer abc.def"})
    assert events[0]["request"] is not None and events[0]["request"]["user_agent"] == "[REDACTED]"
    assert events[0]["body"] == "note=card [REDACTED] and more t" + TRUNCATION_MARKER


async def test_lifespan_shutdown_flushes_before_it_completes(make_client: MakeClient, collector: Any) -> None:
    make_client("test-api-key", collector.url, heartbeat_interval=60)
    app = make_app()
    sent: list[str] = []
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: Any) -> None:
        if message["type"] == "lifespan.startup.complete":
            sqreen_mw.track("before.shutdown", properties={"n": 1})
        if message["type"] == "lifespan.shutdown.complete":  # the server exits right after this message
            sent.append(",".join(e["name"] for e in collector.events()))
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "before.shutdown", "lifespan.shutdown.complete"]


async def test_an_app_blocking_its_event_loop_does_not_stall_delivery(make_client: MakeClient, collector: Any) -> None:
    make_client("test-api-key", collector.url, heartbeat_interval=60)

    async def endpoint(request: Request) -> PlainTextResponse:
        sqreen_mw.track("blocking", properties={"n": 1})
        delivered = sqreen_mw.flush(10)  # blocks this loop: the flusher has a loop of its own
        return PlainTextResponse(str(delivered))

    app = instrumented(endpoint, "/x")
    async with client_for(app) as http:
        assert (await http.get("/x")).text == "True"
    assert [e["name"] for e in collector.events()] == ["blocking"]


async def test_the_context_and_tee_the_middleware_makes_equal_what_their_constructors_make(
    make_client: MakeClient,
) -> None:
    # The middleware builds both without their __init__ (per-request cost): every slot must still be set alike.
    from sqreen_mw._body import ASGIBodyTee
    from sqreen_mw._context import ASGI, RequestContext

    client = make_client()
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ctx = current_context.get()
        seen.append((ctx, {n: getattr(ctx, n) for n in RequestContext.__slots__}))  # as the app sees it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    for method in ("GET", "POST"):
        scope = {"type": "http", "method": method, "path": "/", "headers": []}
        await SqreenMiddleware(app, client=client)(scope, receive, send)
        ctx, fields = seen[-1]
        assert ctx.raw is ctx.body_tee is None  # released once served: copies of its context may outlive it
        expected = RequestContext(ASGI, scope)
        assert type(ctx) is RequestContext
        tee = fields["body_tee"]
        if method == "POST":
            assert type(tee) is ASGIBodyTee
            expected_tee = ASGIBodyTee(receive, client.max_body_bytes)
            assert {n: getattr(tee, n) for n in all_slots(ASGIBodyTee)} == {
                n: getattr(expected_tee, n) for n in all_slots(ASGIBodyTee)}
            expected.body_tee = tee
        assert fields == {n: getattr(expected, n) for n in RequestContext.__slots__}



class _Marker:
    """Something a scope holds (as FastAPI's exit stacks): dead once nothing holds the scope."""


async def test_a_copy_of_the_requests_context_does_not_keep_its_scope(make_client: MakeClient) -> None:
    # uvicorn's keep-alive timer copies the context while the response's last message is sent, and keeps the copy
    # for seconds: the request's context it holds must not hold the scope with it.
    import asyncio
    import contextvars
    import gc
    import weakref

    client = make_client()
    copies: list[contextvars.Context] = []
    later: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/tracked":
            sqreen_mw.track("seen.during", properties={"n": 1})
        copies.append(contextvars.copy_context())
        later.append(asyncio.ensure_future(track_later()))  # a task of the request's that outlives it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    served = asyncio.Event()

    async def track_later() -> None:
        await served.wait()
        sqreen_mw.track("seen.after", properties={"n": 2})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    markers = []
    with capture_events() as events:
        for path in ("/tracked", "/untracked"):
            marker = _Marker()
            markers.append(weakref.ref(marker))
            scope = {"type": "http", "method": "GET", "path": path, "headers": [(b"user-agent", b"ua/1")],
                     "client": ("203.0.113.9", 5000), "state": {"marker": marker}}
            await SqreenMiddleware(app, client=client)(scope, receive, send)
            del marker, scope
        served.set()
        await asyncio.gather(*later)
    gc.collect()
    assert [ref() for ref in markers] == [None, None] and len(copies) == 2  # the copies live, the scopes are gone
    assert all(copy[current_context] is not None for copy in copies)
    after = {(e["name"], e["request"]["path"] if e["request"] else None) for e in events}
    # tracked after the request: with the capture taken while it was served, else without request properties
    assert after == {("seen.during", "/tracked"), ("seen.after", "/tracked"), ("seen.after", None)}
