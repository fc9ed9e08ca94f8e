"""Blocking in the Django middleware, sync (WSGI test client) and async (ASGI async client), in process."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

import sqreen_mw
from sqreen_mw import UserBlocked
from sqreen_mw.testing import capture_events

django = pytest.importorskip("django")
from django.conf import settings  # noqa: E402

from .django_project import settings as project_settings  # noqa: E402

if not settings.configured:
    settings.configure(**{name: getattr(project_settings, name) for name in dir(project_settings) if name.isupper()})
django.setup()

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

MakeClient = Callable[..., sqreen_mw.Client]
ATTACKER = "203.0.113.66"
EVE = {"email": "eve@example.com"}
ACTIONS = {
    "actions_version": 3,
    "actions": [
        {"id": "b_ip", "action": "block_ip", "value": "203.0.113.64/27", "expires_at": None},
        {"id": "b_eve", "action": "block_user", "value": EVE, "expires_at": None},
    ],
}
calls: list[str] = []


def home(request: HttpRequest) -> HttpResponse:
    calls.append("home")
    return HttpResponse("home")


@csrf_exempt
def login(request: HttpRequest) -> HttpResponse:
    sqreen_mw.auth_track(True, email=request.POST["email"])
    calls.append("logged-in")
    return HttpResponse("welcome")


def swallow(request: HttpRequest) -> HttpResponse:
    try:
        sqreen_mw.identify(EVE)
    except UserBlocked:
        pass
    sqreen_mw.track("after.identify")
    return HttpResponse("you should not see this")


async def alogin(request: HttpRequest) -> HttpResponse:
    sqreen_mw.identify({"email": request.GET["email"]})
    calls.append("logged-in")
    return HttpResponse("welcome")


async def aswallow(request: HttpRequest) -> HttpResponse:
    try:
        sqreen_mw.identify(EVE)
    except UserBlocked:
        pass
    return HttpResponse("you should not see this")


def late(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        yield b"first,"
        try:
            sqreen_mw.identify(EVE)  # the body is being sent: it finishes, with a warning
        except UserBlocked:
            pass
        yield b"second"

    return StreamingHttpResponse(chunks())


urlpatterns = [
    path("", home),
    path("login", login),
    path("swallow", swallow),
    path("alogin", alogin),
    path("aswallow", aswallow),
    path("late", late),
]

pytestmark = pytest.mark.usefixtures("blocking_urls")


@pytest.fixture
def blocking_urls() -> Iterator[None]:
    with override_settings(ROOT_URLCONF=__name__):
        yield


@pytest.fixture
def client(make_client: MakeClient) -> sqreen_mw.Client:
    calls.clear()
    client = make_client()
    client.set_actions(ACTIONS)
    return client


def test_sync_blocked_ip(client: sqreen_mw.Client) -> None:
    with capture_events() as events:
        response = Client(REMOTE_ADDR=ATTACKER).get("/")
        html = Client(REMOTE_ADDR=ATTACKER).get("/", headers={"Accept": "text/html"})
    assert calls == []
    assert response.status_code == 403 and response.json()["error"] == "blocked"
    assert response["Cache-Control"] == "no-store"
    assert html.status_code == 403 and html["Content-Type"].startswith("text/html")
    assert [(e["name"], e.get("blocked")) for e in events] == [("sq.action.block_ip", True)]
    assert Client(REMOTE_ADDR="198.51.100.5").get("/").status_code == 200 and calls == ["home"]
    # forged headers: an untrusted peer can neither evade nor frame someone
    assert Client(REMOTE_ADDR=ATTACKER).get("/", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 403
    assert Client(REMOTE_ADDR="198.51.100.1").get("/", headers={"X-Forwarded-For": ATTACKER}).status_code == 200
    assert Client(REMOTE_ADDR="127.0.0.1").get("/", headers={"X-Forwarded-For": ATTACKER}).status_code == 403


def test_sync_blocked_user(client: sqreen_mw.Client, caplog: pytest.LogCaptureFixture) -> None:
    http = Client()
    with capture_events() as events:
        assert http.post("/login", EVE).status_code == 403
        assert http.post("/login", {"email": "ann@example.com"}).status_code == 200
        swallowed = http.get("/swallow")
    assert swallowed.status_code == 403 and b"should not see" not in swallowed.content
    assert calls == ["logged-in"]
    assert [(e["name"], e.get("blocked")) for e in events] == [
        ("sq.auth_track", True), ("sq.action.block_user", True), ("sq.auth_track", None), ("after.identify", True)]
    errors = [r for r in caplog.records if r.name == "django.request" and r.levelno >= logging.ERROR]
    assert not errors, "no 500 (nor its traceback) for a blocked user: Django only logs its usual 'Forbidden'"


def test_sync_streaming_already_started(client: sqreen_mw.Client, caplog: pytest.LogCaptureFixture) -> None:
    response = Client().get("/late")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"first,second"  # type: ignore[attr-defined]
    assert any("response had already started" in r.getMessage() for r in caplog.records
               if r.name == "sqreen_mw" and r.levelno == logging.WARNING)


@pytest.mark.anyio
async def test_async_blocked_ip_and_user(client: sqreen_mw.Client) -> None:
    http = AsyncClient()  # the ASGI peer is 127.0.0.1, a trusted proxy: X-Forwarded-For names the client
    with capture_events() as events:
        blocked = await http.get("/", headers={"X-Forwarded-For": ATTACKER})
        served = await http.get("/", headers={"X-Forwarded-For": "198.51.100.5"})
        eve = await http.get("/alogin", {"email": "eve@example.com"})
        ann = await http.get("/alogin", {"email": "ann@example.com"})
        swallowed = await http.get("/aswallow")
    assert blocked.status_code == 403 and blocked.json()["error"] == "blocked"
    assert served.status_code == 200
    assert eve.status_code == 403 and ann.status_code == 200
    assert swallowed.status_code == 403 and b"should not see" not in swallowed.content
    assert calls == ["home", "logged-in"]
    assert [e["name"] for e in events] == ["sq.action.block_ip", "sq.action.block_user"]
