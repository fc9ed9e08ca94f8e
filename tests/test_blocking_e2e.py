"""End to end: a block made on the real collector reaches each example app under its real server within about a
second over the push channel, is enforced by every worker, and an unblock travels as fast.

The apps run behind a (simulated) proxy on loopback: loopback is trusted by default, so ``X-Forwarded-For`` names the
client, as behind nginx on the same host.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .support import API_KEY, ROOT, Collector, free_port, output_of, spawn, stop_process, wait_http

DJANGO_DIR = ROOT / "examples" / "django_app"
SERVERS: dict[str, tuple[list[str], int]] = {
    # name: (command after "python -m", worker processes)
    "fastapi-uvicorn": (["uvicorn", "examples.fastapi_app.app:app", "--no-access-log", "--no-proxy-headers"], 1),
    "flask-gunicorn-w2": (["gunicorn", "-w", "2", "examples.flask_app.app:app"], 2),
    "django-gunicorn-wsgi": (["gunicorn", "-w", "1", "--chdir", str(DJANGO_DIR), "exampleproject.wsgi"], 1),
    "django-uvicorn-asgi": (["uvicorn", "--app-dir", str(DJANGO_DIR), "exampleproject.asgi:application",
                             "--lifespan", "off", "--no-access-log", "--no-proxy-headers"], 1),
}
ATTACKER = "198.51.100.77"
SHOPPER = "198.51.100.78"
PROPAGATION_BUDGET = 5.0  # seconds; measured ~tens of ms on loopback, generous for a loaded machine


def bind_args(command: list[str], port: int) -> list[str]:
    if command[0] == "gunicorn":
        return [*command, "--bind", f"127.0.0.1:{port}"]
    return [*command, "--host", "127.0.0.1", "--port", str(port)]


def status(base: str, ip: str, peer_headers: dict[str, str] | None = None) -> int:
    # a fresh connection per request: with several workers, any of them may answer
    with httpx.Client(base_url=base, timeout=10) as http:
        return http.get("/healthz", headers={"X-Forwarded-For": ip, **(peer_headers or {})}).status_code


def until(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check()`` holds (polling every 20 ms); fails after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - start


def admin(collector: Collector) -> httpx.Client:
    return httpx.Client(base_url=collector.url, timeout=10,
                        headers={"Authorization": f"Bearer {collector.admin_token}"})


def open_agents(collector: Collector) -> int:
    return sum(1 for a in collector.agents() if a["logged_out_at"] is None)


@pytest.mark.e2e
@pytest.mark.parametrize("server", list(SERVERS))
def test_block_and_unblock_reach_every_worker(server: str, collector: Collector, tmp_path: Path) -> None:
    command, workers = SERVERS[server]
    port = free_port()
    env = {"SQREEN_TOKEN": API_KEY, "SQREEN_URL": collector.url, "SQREEN_HEARTBEAT_INTERVAL": "60",
           "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    proc = spawn([sys.executable, "-m", *bind_args(command, port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", timeout=30)
        # every worker serves a first request (which starts its agent) and logs in
        until(lambda: status(base, SHOPPER) == 200 and open_agents(collector) >= workers, 30)
        with admin(collector) as http:
            created = http.post("/api/v1/blocks", json={"kind": "ip", "value": ATTACKER, "duration": "10m",
                                                        "reason": "e2e"})
            assert created.status_code == 201, created.text
            block_id = created.json()["id"]
            to_block = until(lambda: all(status(base, ATTACKER) == 403 for _ in range(2 * workers)),
                             PROPAGATION_BUDGET)
            assert status(base, SHOPPER) == 200
            # an untrusted hop cannot forge its way out: the proxy (loopback) appends the real peer
            assert status(base, f"{SHOPPER}, {ATTACKER}") == 403
            assert status(base, f"{ATTACKER}, {SHOPPER}") == 200
            lifted = http.delete(f"/api/v1/blocks/{block_id}")
            assert lifted.status_code == 200, lifted.text
            to_lift = until(lambda: all(status(base, ATTACKER) == 200 for _ in range(2 * workers)),
                            PROPAGATION_BUDGET)
        print(f"{server}: blocked after {to_block * 1000:.0f} ms, unblocked after {to_lift * 1000:.0f} ms")
    finally:
        code = stop_process(proc, signal.SIGTERM, timeout=20)
    assert code in (0, -signal.SIGTERM), output_of(proc)
    # the enforcement events arrive with the exit flush, marked blocked (they never feed a playbook)
    reports = collector.events(name="sq.action.block_ip")
    assert reports and {e["properties"]["block_id"] for e in reports} == {block_id}
    assert all(e["request"]["blocked"] is True and e["request"]["client_ip"] == ATTACKER for e in reports)
    assert len(reports) <= workers  # one per actor per minute in each process
