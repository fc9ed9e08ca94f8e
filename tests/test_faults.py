"""The fault suite: real servers, real signals, a collector that dies or misbehaves; every event stored once.

Slow scenarios are marked ``slow``: they run with ``-m slow`` or ``RUN_SLOW=1``. docs/reliability.md publishes
the figures of each scenario and the command that reproduces it.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import API_KEY, Collector, free_port, output_of, spawn, stop_process, wait_http

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _slow_only_when_asked(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slow") is None:
        return
    asked = "slow" in (request.config.getoption("markexpr") or "") or os.environ.get("RUN_SLOW") == "1"
    if not asked:
        pytest.skip("slow scenario: run with -m slow or RUN_SLOW=1")


# A bare WSGI app that tracks at import time (in the gunicorn master, before the fork, with --preload) and on every
# request; each event carries a unique id so the test can count how often it was stored.
WSGI_APP = textwrap.dedent('''
    import logging
    import os
    import sqreen_mw

    logging.basicConfig(level=logging.INFO, format="%(process)d %(threadName)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sqreen_mw.init()
    sqreen_mw.track("boot", properties={"uid": f"boot-{os.getpid()}"})

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        sqreen_mw.track("hit", properties={"uid": environ["QUERY_STRING"]})
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
''')


def app_env(collector: Collector, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"SQREEN_TOKEN": API_KEY, "SQREEN_URL": collector.url, "SQREEN_HEARTBEAT_INTERVAL": "60",
            "SQREEN_SHUTDOWN_TIMEOUT": "10", "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get(
                "PYTHONPATH", "")]), "HOME": str(tmp_path), **extra}


def uids(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(e["properties"]["uid"]) for e in events)


GUNICORN = {
    "sync-preload": ["-w", "2", "--preload"],
    "gthread-preload-max-requests": ["-w", "2", "--preload", "-k", "gthread", "--threads", "4",
                                     "--max-requests", "15"],
    "sync-max-requests": ["-w", "2", "--max-requests", "15", "--max-requests-jitter", "3"],
}
STOPS = {
    "SIGTERM-group": (signal.SIGTERM, True),
    "SIGTERM-master": (signal.SIGTERM, False),
    "SIGINT-group": (signal.SIGINT, True),
}
DEFAULT = {("sync-preload", "SIGTERM-group"), ("gthread-preload-max-requests", "SIGTERM-master")}


def gunicorn_cases() -> list[Any]:
    cases = []
    for server in GUNICORN:
        for stop in STOPS:
            marks = () if (server, stop) in DEFAULT else (pytest.mark.slow,)
            cases.append(pytest.param(server, stop, marks=marks, id=f"{server}-{stop}"))
    return cases


@pytest.mark.parametrize(("server", "stop"), gunicorn_cases())
def test_gunicorn_every_event_stored_once(server: str, stop: str, collector: Collector, tmp_path: Path) -> None:
    (tmp_path / "fault_wsgi_app.py").write_text(WSGI_APP)
    port = free_port()
    proc = spawn([sys.executable, "-m", "gunicorn", *GUNICORN[server], "--bind", f"127.0.0.1:{port}",
                  "fault_wsgi_app:app"], env=app_env(collector, tmp_path), cwd=tmp_path)
    sig, group = STOPS[stop]
    sent = 60
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        for n in range(sent):
            with httpx.Client(timeout=10) as http:  # a new connection each time: both workers get traffic
                assert http.get(f"http://127.0.0.1:{port}/hit?hit-{n}").status_code == 200
    finally:
        if group:
            code = stop_process(proc, sig, timeout=30)
        else:
            os.kill(proc.pid, sig)  # the master only: it stops its workers itself
            code = proc.wait(30)
    assert code in (0, -sig), output_of(proc)
    counts = uids(collector.wait_for(lambda evs: len(evs) >= sent + 1, timeout=10))
    hits = {uid: c for uid, c in counts.items() if uid.startswith("hit-")}
    assert hits == {f"hit-{n}": 1 for n in range(sent)}, output_of(proc)
    boots = [c for uid, c in counts.items() if uid.startswith("boot-")]
    if "--preload" in GUNICORN[server]:
        assert boots == [1], output_of(proc)  # tracked once, in the master
    else:
        assert boots and set(boots) == {1}, output_of(proc)  # once per worker started
    assert "undelivered" not in output_of(proc) and "Traceback" not in output_of(proc), output_of(proc)
