"""Blocking in the WSGI middleware, in process: Flask through Werkzeug's test client, and a bare WSGI app."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import sqreen_mw
from sqreen_mw import UserBlocked
from sqreen_mw.testing import capture_events
from sqreen_mw.wsgi import SqreenMiddleware

flask = pytest.importorskip("flask")

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


def make_flask_app() -> Any:
    from sqreen_mw.flask import instrument

    app = flask.Flask(__name__)

    @app.get("/")
    def home() -> Any:
        calls.append("home")
        return "home"

    @app.post("/login")
    def login() -> Any:
        sqreen_mw.auth_track(True, email=flask.request.form["email"])
        calls.append("logged-in")
        return {"ok": True}

    @app.get("/swallow")
    def swallow() -> Any:
        try:
            sqreen_mw.identify(EVE)
        except UserBlocked:
            pass
        sqreen_mw.track("after.identify")
        return "you should not see this"

    return instrument(app)


@pytest.fixture
def client(make_client: MakeClient) -> sqreen_mw.Client:
    calls.clear()
    client = make_client()
    client.set_actions(ACTIONS)
    return client


def get(app: Any, path: str, peer: str = "198.51.100.5", **kwargs: Any) -> Any:
    response = app.test_client().get(path, environ_base={"REMOTE_ADDR": peer}, **kwargs)
    response.close()
    return response


def test_blocked_ip_gets_403_before_the_app_runs(client: sqreen_mw.Client) -> None:
    app = make_flask_app()
    with capture_events() as events:
        response = get(app, "/", ATTACKER)
        html = get(app, "/", ATTACKER, headers={"Accept": "text/html"})
    assert calls == []
    assert response.status_code == 403 and response.json == {"error": "blocked", "message": response.json["message"]}
    assert response.headers["Cache-Control"] == "no-store"
    assert html.status_code == 403 and html.mimetype == "text/html"
    assert [(e["name"], e.get("blocked")) for e in events] == [("sq.action.block_ip", True)]
    assert get(app, "/").status_code == 200 and calls == ["home"]


def test_blocked_user(client: sqreen_mw.Client) -> None:
    http = make_flask_app().test_client()
    with capture_events() as events:
        with http.post("/login", data=EVE) as response:
            assert response.status_code == 403
        with http.post("/login", data={"email": "ann@example.com"}) as response:
            assert response.status_code == 200
        with http.get("/swallow") as response:
            assert response.status_code == 403 and b"should not see" not in response.data
    assert calls == ["logged-in"]
    assert [(e["name"], e.get("blocked")) for e in events] == [
        ("sq.auth_track", True), ("sq.action.block_user", True), ("sq.auth_track", None),
        ("after.identify", True)]  # the second block of eve within a minute is not reported again


def test_flask_logs_no_traceback_for_a_blocked_user(
    client: sqreen_mw.Client, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_flask_app()
    with caplog.at_level(logging.DEBUG), app.test_client() as http:
        with http.post("/login", data=EVE) as response:
            assert response.status_code == 403 and response.json is not None
            assert response.json["error"] == "blocked"
    assert calls == []
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text


def test_flask_app_handler_for_user_blocked_wins(client: sqreen_mw.Client) -> None:
    app = make_flask_app()
    handled: list[str] = []

    @app.errorhandler(UserBlocked)
    def mine(exc: UserBlocked) -> Any:
        handled.append(type(exc).__name__)
        return "mine", 403

    with app.test_client().post("/login", data=EVE) as response:
        assert response.status_code == 403
    assert handled == ["UserBlocked"]


def test_forged_forwarded_for_from_an_untrusted_peer(client: sqreen_mw.Client) -> None:
    app = make_flask_app()
    assert get(app, "/", ATTACKER, headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 403
    assert get(app, "/", "198.51.100.1", headers={"X-Forwarded-For": ATTACKER}).status_code == 200
    assert get(app, "/", "127.0.0.1", headers={"X-Forwarded-For": ATTACKER}).status_code == 403


def bare_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    """A WSGI app whose body is a generator: it calls start_response when the server starts iterating."""
    def body() -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first,"
        try:
            sqreen_mw.identify(EVE)  # the response has started: it finishes, with a warning
        except UserBlocked:
            pass
        yield b"second"

    return body()


def test_generator_app_already_started_finishes_with_a_warning(
    client: sqreen_mw.Client, caplog: pytest.LogCaptureFixture
) -> None:
    app = SqreenMiddleware(bare_app)
    statuses: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "198.51.100.5", "wsgi.input": None}
    result = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        body = b"".join(result)
    finally:
        result.close()  # type: ignore[attr-defined]
    assert statuses == ["200 OK"] and body == b"first,second"
    assert any("response had already started" in r.getMessage() for r in caplog.records
               if r.name == "sqreen_mw" and r.levelno == logging.WARNING)


def test_bare_app_raising_user_blocked(client: sqreen_mw.Client) -> None:
    def raising(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        sqreen_mw.identify(EVE)
        raise AssertionError("not reached")

    statuses: list[tuple[str, list[tuple[str, str]]]] = []
    result = SqreenMiddleware(raising)(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "198.51.100.5"},
        lambda status, headers, exc_info=None: statuses.append((status, headers)))
    assert statuses[0][0] == "403 Forbidden"
    assert b"".join(result).startswith(b'{"error": "blocked"')
