"""The explorer's login, session cookie, CSRF, rate limit and headers, checked over HTTP with httpx."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from sqreen_mw.collector import create_app
from sqreen_mw.collector.explorer._security import LoginLimiter, Sessions
from tests.support import Collector

TOKEN = "explorer-admin-token"
PAGES = ["/", "/events", "/events/0190b2a0-0000-7000-8000-000000000000", "/breakdown", "/actor?ip=192.0.2.1",
         "/agents"]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Starlette]:
    app = create_app(db_path=str(tmp_path / "events.db"), api_keys={"k": ""}, admin_token=TOKEN)
    yield app
    app.state.storage.close()


def _client(app: Starlette, base: str = "http://collector") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("192.0.2.50", 1234)), base_url=base)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as client:
        yield client


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def _cookie(response: httpx.Response, name: str) -> SimpleCookie:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            return jar
    raise AssertionError(f"no {name} cookie set: {response.headers.get_list('set-cookie')}")


async def _log_in(client: httpx.AsyncClient, token: str = TOKEN, next_: str = "/") -> httpx.Response:
    form = await client.get("/login")
    return await client.post("/login", data={"csrf": _csrf(form.text), "token": token, "next": next_})


@pytest.mark.anyio
async def test_pages_need_a_session(client: httpx.AsyncClient) -> None:
    for path in PAGES:
        answer = await client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/login?next=")


@pytest.mark.anyio
async def test_login_sets_a_strict_http_only_cookie_and_logout_ends_it(client: httpx.AsyncClient) -> None:
    answer = await _log_in(client, next_="/events?name=x")
    assert answer.status_code == 303 and answer.headers["location"] == "/events?name=x"
    morsel = _cookie(answer, "sqreen_explorer")["sqreen_explorer"]
    assert morsel["httponly"] and morsel["samesite"].lower() == "strict" and not morsel["secure"]
    assert int(morsel["max-age"]) > 0
    page = await client.get("/events")
    assert page.status_code == 200
    stolen = client.cookies.get("sqreen_explorer")
    # Logout without (or with a wrong) CSRF token changes nothing.
    assert (await client.post("/logout", data={})).status_code == 403
    assert (await client.post("/logout", data={"csrf": "forged"})).status_code == 403
    assert (await client.get("/events")).status_code == 200
    out = await client.post("/logout", data={"csrf": _csrf(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert (await client.get("/events")).status_code == 303
    # The old cookie, replayed, no longer works either.
    client.cookies.set("sqreen_explorer", stolen or "")
    assert (await client.get("/events")).status_code == 303


@pytest.mark.anyio
async def test_cookie_is_secure_over_https(app: Starlette) -> None:
    async with _client(app, "https://collector") as client:
        answer = await _log_in(client)
    assert _cookie(answer, "sqreen_explorer")["sqreen_explorer"]["secure"]


@pytest.mark.anyio
async def test_login_needs_its_csrf_token(client: httpx.AsyncClient, app: Starlette) -> None:
    await client.get("/login")
    assert (await client.post("/login", data={"token": TOKEN})).status_code == 403
    # A token from another browser's form (login CSRF) does not match this browser's pre-login cookie.
    async with _client(app) as other:
        foreign = _csrf((await other.get("/login")).text)
    answer = await client.post("/login", data={"token": TOKEN, "csrf": foreign})
    assert answer.status_code == 403 and "sqreen_explorer=" not in answer.headers.get("set-cookie", "")


@pytest.mark.anyio
async def test_wrong_tokens_are_rate_limited(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        answer = await _log_in(client, token="guess")
        assert answer.status_code == 401 and "Wrong admin token" in answer.text
    answer = await _log_in(client)  # even the right token waits
    assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1
    assert "sqreen_explorer=" not in answer.headers.get("set-cookie", "").replace("sqreen_explorer_login=", "")


@pytest.mark.anyio
async def test_next_never_leaves_the_site(client: httpx.AsyncClient) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        client.cookies.clear()
        answer = await _log_in(client, next_=target)
        assert answer.headers["location"] == "/", target


@pytest.mark.anyio
async def test_security_headers_on_pages_and_assets(client: httpx.AsyncClient) -> None:
    await _log_in(client)
    for path in ["/login", *PAGES, "/static/explorer.js", "/static/uPlot.iife.min.js"]:
        answer = await client.get(path)
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert answer.headers["x-content-type-options"] == "nosniff", path


@pytest.mark.anyio
async def test_pages_have_no_inline_script_or_style(client: httpx.AsyncClient) -> None:
    await _log_in(client)
    for path in ["/login", *PAGES]:
        html = (await client.get(path)).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert "<style" not in html and " style=" not in html, path
        assert not re.search(r"\son[a-z]+=", html), path


@pytest.mark.anyio
async def test_bad_filters_are_explained(client: httpx.AsyncClient) -> None:
    await _log_in(client)
    answer = await client.get("/events", params={"ip": "not-an-ip", "since": "yesterday", "prop": "novalue"})
    assert answer.status_code == 400
    assert "ip must be an IP address or a CIDR" in answer.text
    assert "since must be an ISO 8601 date-time" in answer.text
    assert "prop must be key=value" in answer.text
    for key in ("name", "user", "app", "prop"):  # refused by PostgreSQL in a query: explained, never a 500
        answer = await client.get("/events", params={key: "a\x00b"})
        assert answer.status_code == 400 and f"{key} must not contain a NUL character" in answer.text, key
    answer = await client.get("/breakdown", params={"group": "colour"})
    assert answer.status_code == 400 and "group must be one of" in answer.text


@pytest.mark.anyio
async def test_no_admin_token_disables_the_explorer(tmp_path: Path) -> None:
    app = create_app(db_path=str(tmp_path / "e.db"), api_keys={"k": ""}, admin_token=None)
    try:
        async with _client(app) as client:
            answer = await client.get("/login")
            assert answer.status_code == 404 and "--admin-token" in answer.text
            assert (await client.get("/")).status_code == 303
    finally:
        app.state.storage.close()


def test_sessions_expire_and_refuse_forgeries() -> None:
    sessions = Sessions("token", max_age=60)
    cookie, session = sessions.issue(now=1000.0)
    assert sessions.verify(cookie, now=1059.0) == session
    assert sessions.verify(cookie, now=1060.0) is None
    sid, expires, signature = cookie.split(".")
    assert sessions.verify(f"{sid}.{int(expires) + 3600}.{signature}", now=1000.0) is None
    assert Sessions("other token").verify(cookie, now=1000.0) is None
    for garbage in ("", "x", "a.b.c", "..", f"{sid}.{expires}."):
        assert sessions.verify(garbage, now=1000.0) is None


@pytest.mark.e2e
def test_real_server_cookie_flags_over_http(collector: Collector) -> None:
    with httpx.Client(base_url=collector.url, timeout=10) as client:
        form = client.get("/login")
        assert form.status_code == 200
        answer = client.post("/login", data={"csrf": _csrf(form.text), "token": collector.admin_token})
        assert answer.status_code == 303
        morsel = _cookie(answer, "sqreen_explorer")["sqreen_explorer"]
        assert morsel["httponly"] and morsel["samesite"].lower() == "strict" and not morsel["secure"]
        assert client.get("/").status_code == 200


def test_login_limit_is_per_address_and_ends_with_its_window() -> None:
    limiter = LoginLimiter(failures=3, window=60.0)
    for i in range(3):
        assert limiter.retry_after("192.0.2.1", now=100.0 + i) == 0
        limiter.failed("192.0.2.1", now=100.0 + i)
    assert limiter.retry_after("192.0.2.1", now=103.0) == 58
    assert limiter.retry_after("192.0.2.2", now=103.0) == 0  # another address is not held back
    assert limiter.retry_after("192.0.2.1", now=160.5) == 0  # the first failure left the window
