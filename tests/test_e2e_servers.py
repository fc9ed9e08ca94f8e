"""End to end: each example app under its real server, traffic over loopback, events read back from the collector.

The apps run with ``heartbeat_interval=60``: nothing is sent before the server is stopped with SIGTERM, so every
event found in the collector was delivered by the exit flush (atexit in gunicorn workers, lifespan shutdown and the
SIGTERM handler under uvicorn).
"""

from __future__ import annotations

import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import API_KEY, ROOT, Collector, free_port, output_of, spawn, stop_process, wait_http

DJANGO_DIR = ROOT / "examples" / "django_app"
SERVERS: dict[str, tuple[list[str], str]] = {
    # name: (command after "python -m", expected app name)
    "fastapi-uvicorn": (["uvicorn", "examples.fastapi_app.app:app", "--no-access-log"], "fastapi-example"),
    "flask-gunicorn-preload": (["gunicorn", "-w", "2", "--preload", "examples.flask_app.app:app"], "flask-example"),
    "django-gunicorn-wsgi": (["gunicorn", "-w", "2", "--chdir", str(DJANGO_DIR), "exampleproject.wsgi"],
                             "django-example"),
    "django-uvicorn-asgi": (["uvicorn", "--app-dir", str(DJANGO_DIR), "exampleproject.asgi:application",
                             "--lifespan", "off", "--no-access-log"], "django-example"),
}
RESETS = 12


def bind_args(command: list[str], port: int) -> list[str]:
    if command[0] == "gunicorn":
        return [*command, "--bind", f"127.0.0.1:{port}"]
    return [*command, "--host", "127.0.0.1", "--port", str(port)]


def drive(base: str) -> None:
    """The scripted traffic, with the same expectations for every framework."""
    ua = {"User-Agent": "e2e-agent/1.0"}
    with httpx.Client(base_url=base, timeout=10, headers=ua) as http:
        signup = http.post("/signup", data={"email": "carol@example.com", "password": "pw-carol"})
        assert signup.status_code == 201, signup.text
        assert http.post("/login", data={"email": "alice@example.com", "password": "nope"}).status_code == 401
        login = http.post("/login", data={"email": "alice@example.com", "password": "wonderland"})
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['token']}", "X-Forwarded-For": "198.51.100.23"}
        order = http.post(
            "/orders?coupon=SPRING&access_token=leaked",
            json={"item": "book", "quantity": 2, "card_number": "4111 1111 1111 1111"},
            headers=auth,
        )
        assert order.status_code == 201, order.text
        assert order.json()["item"] == "book"  # the app read its own body after the tee
        assert http.get("/orders/1", headers=auth).status_code == 200  # seeded: any worker has it
        for _ in range(RESETS):
            with httpx.Client(base_url=base, timeout=10, headers=ua) as fresh:  # new connections: any worker
                assert fresh.post("/password/reset", data={"email": "bob@example.com"}).status_code == 202


@pytest.mark.e2e
@pytest.mark.parametrize("server", list(SERVERS))
def test_example_app_under_real_server(server: str, collector: Collector, tmp_path: Path) -> None:
    command, app_name = SERVERS[server]
    port = free_port()
    env = {"SQREEN_TOKEN": API_KEY, "SQREEN_URL": collector.url, "SQREEN_HEARTBEAT_INTERVAL": "60",
           "SQREEN_SHUTDOWN_TIMEOUT": "10",
           "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}  # HOME: gunicorn's control socket lives there
    proc = spawn([sys.executable, "-m", *bind_args(command, port)], env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        drive(f"http://127.0.0.1:{port}")
        assert collector.events() == [], "nothing is sent before the heartbeat or the exit"
    finally:
        code = stop_process(proc, signal.SIGTERM, timeout=20)
    assert code in (0, -signal.SIGTERM), output_of(proc)

    events = collector.events()
    assert len({e["id"] for e in events}) == len(events), "an event was stored twice"
    assert Counter(e["name"] for e in events) == {
        "sq.signup_track": 1, "sq.auth_track": 2, "order.placed": 1, "order.viewed": 1, "password.reset": RESETS,
    }, output_of(proc)
    assert {e["app"] for e in events} == {app_name}
    # Each process reported what it sent in its last heartbeat: together, exactly what was stored.
    sessions = [a for a in collector.agents() if a["app"] == app_name]
    assert all(a["logged_out_at"] is not None for a in sessions), sessions
    assert sum(a["stats"]["sent"] for a in sessions if a["stats"]) == len(events), sessions
    by_name: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_name.setdefault(event["name"], []).append(event)

    assert by_name["sq.signup_track"][0]["user_identifiers"] == {"email": "carol@example.com"}
    logins = sorted((e["properties"]["success"], e["user_identifiers"]["email"]) for e in by_name["sq.auth_track"])
    assert logins == [(False, "alice@example.com"), (True, "alice@example.com")]

    placed = by_name["order.placed"][0]
    assert placed["user_identifiers"] == {"email": "alice@example.com"}  # inherited from identify()
    assert placed["properties"] == {"item": "book", "quantity": 2}
    assert placed["request"]["client_ip"] == "198.51.100.23"  # loopback peer is a trusted proxy
    assert placed["request"]["user_agent"] == "e2e-agent/1.0"
    assert (placed["request"]["path"], placed["request"]["verb"]) == ("/orders", "POST")
    assert placed["request"]["params"]["query"] == {"coupon": "SPRING", "access_token": "[REDACTED]"}
    assert placed["body"] == {"item": "book", "quantity": 2, "card_number": "[REDACTED]"}

    viewed = by_name["order.viewed"][0]
    assert viewed["user_identifiers"] == {"email": "alice@example.com"}
    assert str(viewed["request"]["params"]["path"]["order_id"]) == str(viewed["properties"]["order_id"]) == "1"
    reset = by_name["password.reset"][0]
    assert reset["user_identifiers"] is None
    assert reset["request"]["client_ip"] == "127.0.0.1"
    assert reset["properties"] == {"method": "email"}
