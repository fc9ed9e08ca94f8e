"""``sqreen-mw demo``: a collector, a small shop app instrumented with sqreen_mw, and scripted traffic.

Everything runs for real on loopback in this one process: the collector and the shop each under their own uvicorn
server, the SDK's flusher in its thread, and an HTTP client playing shoppers and a credential-stuffing attacker. The
shop sits behind a (simulated) proxy on loopback, so the client IPs come from ``X-Forwarded-For`` through the trusted
proxy rule. At the end the demo reads the events back from the collector's API and prints what happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import sqreen_mw
from sqreen_mw.asgi import SqreenMiddleware

from . import create_app
from ._demo_script import ATTACKER_IP, DEMO_PLAYBOOKS, DemoError, drive_traffic, report
from .automation.service import parse_file_tables

DEMO_KEY = "demo-app-key"


def _hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def shop_app() -> Starlette:
    """The demo shop: signup, login, password reset and orders, each reporting to sqreen_mw."""
    users: dict[str, str] = {}
    sessions: dict[str, str] = {}

    async def signup(request: Request) -> JSONResponse:
        form = await request.form()
        email, password = str(form["email"]), str(form["password"])
        users[email] = _hash(password)
        sqreen_mw.signup_track(email=email)
        token = secrets.token_urlsafe(8)
        sessions[token] = email
        return JSONResponse({"token": token}, status_code=201)

    async def login(request: Request) -> JSONResponse:
        form = await request.form()
        email, password = str(form["email"]), str(form["password"])
        ok = users.get(email) == _hash(password)
        sqreen_mw.auth_track(ok, email=email)
        if not ok:
            return JSONResponse({"error": "invalid credentials"}, status_code=401)
        token = secrets.token_urlsafe(8)
        sessions[token] = email
        return JSONResponse({"token": token})

    async def reset(request: Request) -> JSONResponse:
        sqreen_mw.track("password.reset", properties={"method": "email"})
        return JSONResponse({}, status_code=202)

    async def order(request: Request) -> JSONResponse:
        email = sessions.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        if email is None:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        sqreen_mw.identify({"email": email})
        payload = await request.json()
        sqreen_mw.track(
            "order.placed", properties={"item": payload["item"], "quantity": payload["quantity"]}, collect_body=True
        )
        return JSONResponse({"ok": True}, status_code=201)

    app = Starlette(
        routes=[
            Route("/signup", signup, methods=["POST"]),
            Route("/login", login, methods=["POST"]),
            Route("/password/reset", reset, methods=["POST"]),
            Route("/orders", order, methods=["POST"]),
        ]
    )
    app.add_middleware(SqreenMiddleware)
    return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(app: Any, port: int = 0, lifespan: Literal["on", "off"] = "on") -> Iterator[str]:
    """Serve an ASGI app with uvicorn on loopback in a daemon thread; yield its URL; stop it on exit."""
    import uvicorn

    port = port or _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"could not start a server on 127.0.0.1:{port} (port in use?)")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        automation = getattr(getattr(app, "state", None), "automation", None)
        if automation is not None:  # a collector: answer held long-polls, or uvicorn waits for them to end
            automation.release_waiters()
        server.should_exit = True
        thread.join(10)


def run_demo(
    *, port: int = 0, db: str | None = None, keep_running: bool = True, say: Callable[[str], None] = print
) -> int:
    """Run the demo; return the process exit code (0 when the attackers were blocked, everyone else served, and
    every tracked event reached the collector)."""
    import tomllib

    admin = secrets.token_urlsafe(12)
    playbooks, allow = parse_file_tables(tomllib.loads(DEMO_PLAYBOOKS), allow_http_webhooks=False)
    with tempfile.TemporaryDirectory(prefix="sqreen-mw-demo-") as tmp:
        db_path = db or str(Path(tmp) / "demo.db")
        collector_app = create_app(
            db_path=db_path, api_keys={DEMO_KEY: "demo-shop"}, admin_token=admin, playbooks=playbooks, allow=allow
        )
        with serve_in_thread(collector_app, port) as collector:
            say(f"sqreen-mw collector listening on {collector} (db: {db_path})")
            say("playbooks: " + ", ".join(f"{p.name}{' (dry run)' if p.dry_run else ''}" for p in playbooks))
            # The default one-minute heartbeat: events that feed a playbook are sent at once anyway.
            client = sqreen_mw.init(DEMO_KEY, collector, app_name="demo-shop")
            with serve_in_thread(shop_app()) as shop:
                say(f"demo shop listening on {shop}, instrumented with sqreen_mw\n\nTraffic:")
                try:
                    outcome = drive_traffic(shop, collector, admin, say)
                except (DemoError, httpx.HTTPError) as exc:
                    say(f"demo failed: {exc}")
                    return 1
                delivered = sqreen_mw.flush(10)
            stats = client.statistics()
            say(
                f"\nSDK: tracked {stats['tracked']}, sent {stats['sent']}, dropped {stats['dropped'] or 'none'}"
                f" (flush {'complete' if delivered else 'INCOMPLETE'})"
            )
            shown = report(outcome, collector, admin, say)
            query = f"curl -H 'Authorization: Bearer {admin}' '{collector}/api/v1/events?ip={ATTACKER_IP}'"
            if keep_running:
                say(f"\nExplore: open {collector}/ and log in with the admin token {admin}\n"
                    f"     or: {query}\nThe collector keeps running; Ctrl-C to stop.")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)
            sqreen_mw.shutdown()
    return 0 if delivered and shown else 1
