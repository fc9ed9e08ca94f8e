"""The Django middleware in-process, through Django's own handlers (WSGI test client and ASGI async client)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import sqreen_mw
from sqreen_mw._context import current_context
from sqreen_mw.testing import capture_events

django = pytest.importorskip("django")
from django.conf import settings  # noqa: E402

from .django_project import settings as project_settings  # noqa: E402

if not settings.configured:  # configure in-process: no DJANGO_SETTINGS_MODULE leaking into servers spawned later
    settings.configure(**{name: getattr(project_settings, name) for name in dir(project_settings) if name.isupper()})
django.setup()

from django.test import AsyncClient, Client  # noqa: E402

MakeClient = Callable[..., sqreen_mw.Client]


def test_sync_views_get_request_properties_and_user(make_client: MakeClient) -> None:
    make_client()
    http = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.4")
    with capture_events() as events:
        assert http.post("/login?next=/x", {"email": "a@example.com", "password": "pw"}).status_code == 200
        assert http.get("/items/12?password=p").status_code == 200
    auth, after, viewed = events
    assert auth["name"] == "sq.auth_track"
    assert after["user_identifiers"] == {"email": "a@example.com"}
    assert after["request"] == {
        "client_ip": "198.51.100.4",
        "user_agent": None,
        "path": "/login",
        "verb": "POST",
        "params": {"query": {"next": "/x"}, "form": {"email": "a@example.com", "password": "[REDACTED]"}},
    }
    assert viewed["request"] is not None
    assert viewed["request"]["params"] == {"query": {"password": "[REDACTED]"}, "path": {"item_id": "12"}}
    assert viewed["user_identifiers"] == {"id": 7}
    assert current_context.get() is None


def test_body_collected_before_the_view_reads_it(make_client: MakeClient) -> None:
    make_client()
    with capture_events() as events:
        response = Client().post("/unread", data=b'{"k": "v", "token": "t"}', content_type="application/json")
    assert response.content == b'{"k": "v", "token": "t"}'
    assert events[0]["body"] == {"k": "v", "token": "[REDACTED]"}


def test_streaming_response_keeps_the_context(make_client: MakeClient) -> None:
    make_client()
    with capture_events() as events:
        response = Client().get("/stream")
        assert b"".join(response.streaming_content) == b"ab"  # type: ignore[attr-defined]
    assert events[0]["request"] is not None and events[0]["request"]["path"] == "/stream"


@pytest.mark.anyio
async def test_async_view_and_async_stream(make_client: MakeClient) -> None:
    make_client()
    http = AsyncClient()
    with capture_events() as events:
        response = await http.post("/order", data={"total": 5, "card": "4111111111111111"},
                                   content_type="application/json",
                                   headers={"X-Forwarded-For": "203.0.113.5"})  # the ASGI peer is 127.0.0.1
        assert response.json() == {"total": 5, "card": "4111111111111111"}
        streamed = await http.get("/astream")
        assert b"".join([chunk async for chunk in streamed.streaming_content]) == b"ab"  # type: ignore[attr-defined]
    placed, chunk = events
    assert placed["user_identifiers"] == {"id": 8}
    assert placed["body"] == {"total": 5, "card": "[REDACTED]"}
    assert placed["request"] is not None and placed["request"]["params"] == {"json": placed["body"]}
    assert placed["request"] is not None and placed["request"]["client_ip"] == "203.0.113.5"
    assert chunk["request"] is not None and chunk["request"]["path"] == "/astream"
