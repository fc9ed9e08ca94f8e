"""The fault suite on more servers: uvicorn ``--workers 2`` (ASGI), Django under gunicorn (WSGI) and uvicorn (ASGI).

Each server runs an app that tracks one event when it is imported (once per process) and one per request, each
with a unique ``uid``; after the traffic the server is stopped with SIGTERM to the master only, SIGTERM to the whole
process group, or SIGINT to the group, and every event tracked before the signal must be stored exactly once.
Slow cases run with ``-m slow`` or ``RUN_SLOW=1``; docs/reliability.md publishes the figures.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import API_KEY, Collector, free_port, output_of, spawn, stop_process, wait_http

pytestmark = pytest.mark.e2e


BOOT = '''
import logging
import os
import sqreen_mw

logging.basicConfig(level=logging.INFO, format="%(process)d %(threadName)s %(name)s %(message)s")
logging.getLogger("httpx").setLevel(logging.WARNING)
sqreen_mw.init()
sqreen_mw.track("boot", properties={"uid": f"boot-{os.getpid()}"})
'''

# A Starlette app behind SqreenMiddleware: lifespan on, so uvicorn's shutdown runs the SDK's final flush.
ASGI_APP = BOOT + textwrap.dedent('''
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from sqreen_mw.asgi import SqreenMiddleware

    async def hit(request):
        sqreen_mw.track("hit", properties={"uid": request.url.query, "pid": os.getpid()})
        return PlainTextResponse("ok")

    async def healthz(request):
        return PlainTextResponse("ok")

    app = SqreenMiddleware(Starlette(routes=[Route("/hit", hit), Route("/healthz", healthz)]))
''')

# A Django project (no database) with sqreen_mw's middleware; sqreen_mw.init() runs when the settings load.
DJANGO_FILES = {
    "faultsite/__init__.py": "",
    "faultsite/settings.py": BOOT + textwrap.dedent('''
        SECRET_KEY = "fault-suite-only"
        DEBUG = False
        ALLOWED_HOSTS = ["*"]
        INSTALLED_APPS = []
        MIDDLEWARE = ["sqreen_mw.django.SqreenMiddleware"]
        ROOT_URLCONF = "faultsite.urls"
        DATABASES = {}
        USE_TZ = True
        TIME_ZONE = "UTC"
    '''),
    "faultsite/urls.py": textwrap.dedent('''
        import os
        from django.http import HttpResponse
        from django.urls import path
        import sqreen_mw

        def hit(request):
            sqreen_mw.track("hit", properties={"uid": request.META["QUERY_STRING"], "pid": os.getpid()})
            return HttpResponse("ok")

        async def ahit(request):
            sqreen_mw.track("hit", properties={"uid": request.META["QUERY_STRING"], "pid": os.getpid()})
            return HttpResponse("ok")

        def healthz(request):
            return HttpResponse("ok")

        urlpatterns = [path("hit", hit), path("ahit", ahit), path("healthz", healthz)]
    '''),
    "faultsite/wsgi.py": textwrap.dedent('''
        import os
        from django.core.wsgi import get_wsgi_application
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "faultsite.settings")
        application = get_wsgi_application()
    '''),
    "faultsite/asgi.py": textwrap.dedent('''
        import os
        from django.core.asgi import get_asgi_application
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "faultsite.settings")
        application = get_asgi_application()
    '''),
}

UVICORN = ["uvicorn", "--no-access-log", "--timeout-graceful-shutdown", "10"]
# name: (command after "python -m", with {port}; the path the traffic goes to)
SERVERS: dict[str, tuple[list[str], str]] = {
    "starlette-uvicorn-workers2": ([*UVICORN, "--workers", "2", "--port", "{port}", "fault_asgi_app:app"], "/hit"),
    "django-gunicorn-wsgi": (["gunicorn", "-w", "2", "--bind", "127.0.0.1:{port}", "faultsite.wsgi"], "/hit"),
    "django-uvicorn-asgi": ([*UVICORN, "--lifespan", "off", "--port", "{port}", "faultsite.asgi:application"],
                            "/ahit"),
    "django-uvicorn-asgi-workers2": ([*UVICORN, "--lifespan", "off", "--workers", "2", "--port", "{port}",
                                      "faultsite.asgi:application"], "/hit"),
}
STOPS = {
    "SIGTERM-group": (signal.SIGTERM, True),
    "SIGTERM-master": (signal.SIGTERM, False),
    "SIGINT-group": (signal.SIGINT, True),
}
DEFAULT = {("starlette-uvicorn-workers2", "SIGTERM-group"), ("django-uvicorn-asgi-workers2", "SIGTERM-master")}
SENT = 60


def write_apps(tmp_path: Path) -> None:
    (tmp_path / "fault_asgi_app.py").write_text(ASGI_APP)
    for name, text in DJANGO_FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)


def server_cases() -> list[Any]:
    return [pytest.param(server, stop, marks=() if (server, stop) in DEFAULT else (pytest.mark.slow,),
                         id=f"{server}-{stop}") for server in SERVERS for stop in STOPS]


def uids(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(str(e["properties"]["uid"]) for e in events)


@pytest.mark.parametrize(("server", "stop"), server_cases())
def test_every_event_tracked_before_the_signal_stored_once(server: str, stop: str, collector: Collector,
                                                            tmp_path: Path) -> None:
    write_apps(tmp_path)
    port = free_port()
    command, route = SERVERS[server]
    env = {"SQREEN_TOKEN": API_KEY, "SQREEN_URL": collector.url, "SQREEN_HEARTBEAT_INTERVAL": "60",
           "SQREEN_SHUTDOWN_TIMEOUT": "10", "HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = spawn([sys.executable, "-m", *(arg.format(port=port) for arg in command)], env=env, cwd=tmp_path)
    sig, group = STOPS[stop]
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        for n in range(SENT):
            with httpx.Client(timeout=10) as http:  # a new connection each time: every worker may get traffic
                assert http.get(f"http://127.0.0.1:{port}{route}?hit-{n}").status_code == 200
    finally:
        started = time.monotonic()
        if group:
            code = stop_process(proc, sig, timeout=30)
        else:
            os.kill(proc.pid, sig)  # the master only: it stops its workers itself
            code = proc.wait(30)
        print(f"\n{server} {stop}: exited {code} in {time.monotonic() - started:.2f} s")
    out = output_of(proc)
    assert code in (0, -sig, 128 + sig), out
    counts = uids(collector.wait_for(lambda evs: len([e for e in evs if e["name"] == "hit"]) >= SENT, timeout=10))
    hits = {uid: c for uid, c in counts.items() if uid.startswith("hit-")}
    assert hits == {f"hit-{n}": 1 for n in range(SENT)}, out
    boots = [c for uid, c in counts.items() if uid.startswith("boot-")]
    assert boots and set(boots) == {1}, out  # once per process that imported the app
    # Each process reported in its last heartbeat what it sent: together, exactly what was stored. (Not every
    # process logs out: with SIGINT to the group, uvicorn's supervisor SIGTERMs workers that are already exiting.)
    sessions = collector.agents()
    assert sum(a["stats"]["sent"] for a in sessions if a["stats"]) == sum(counts.values()), f"{sessions}\n{out}"
    logged_out = sum(a["logged_out_at"] is not None for a in sessions)
    assert "undelivered" not in out and "Traceback" not in out, out
    print(f"{server} {stop}: tracked {SENT} hits + {len(boots)} boots, stored {sum(counts.values())}, "
          f"duplicated {sum(c - 1 for c in counts.values())}, processes {len(sessions)}, logged out {logged_out}")
