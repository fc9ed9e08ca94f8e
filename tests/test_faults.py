"""The fault suite: real servers, real signals, a collector that dies or misbehaves; every event stored once.

Slow scenarios are marked ``slow``: they run with ``-m slow`` or ``RUN_SLOW=1``. docs/reliability.md publishes
the figures of each scenario and the command that reproduces it.
"""

from __future__ import annotations

import json
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

from .support import (
    API_KEY,
    Collector,
    free_port,
    output_of,
    spawn,
    start_collector,
    stop_process,
    wait_http,
)

pytestmark = pytest.mark.e2e


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


# --- a load generator in its own process: tracks at a steady rate, then shuts down and reports ---------------------

LOAD_SCRIPT = textwrap.dedent('''
    import itertools, json, os, sys, threading, time
    import sqreen_mw

    count, rate, prefix, threads = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    stop_file = os.environ.get("LOAD_STOP_FILE")  # with a count of -1: track until this file exists
    client = sqreen_mw.init(install_signal_handler=False)
    latencies = []

    def work(t):
        mine, period, start = [], threads / rate, time.monotonic()
        for i in (range(t, count, threads) if count >= 0 else itertools.count(t, threads)):
            if count < 0 and i % 100 == 0 and os.path.exists(stop_file):
                break
            t0 = time.perf_counter()
            sqreen_mw.track("load", properties={"uid": f"{prefix}-{i}"})
            mine.append(time.perf_counter() - t0)
            pause = start + len(mine) * period - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        latencies.extend(mine)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    t0 = time.monotonic()
    sqreen_mw.shutdown()
    exit_s = time.monotonic() - t0
    latencies.sort()
    print("RESULT " + json.dumps({
        "p50_us": latencies[len(latencies) // 2] * 1e6, "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
        "exit_s": exit_s, "stats": client.statistics(),
        "peak_rss_mb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024,
    }))
''')


def start_load(tmp_path: Path, url: str, count: int, rate: float, prefix: str, threads: int = 1,
               **settings: str) -> Any:
    script = tmp_path / "load.py"
    script.write_text(LOAD_SCRIPT)
    env = {"SQREEN_TOKEN": API_KEY, "SQREEN_URL": url, "SQREEN_HEARTBEAT_INTERVAL": "0.5",
           "SQREEN_SHUTDOWN_TIMEOUT": "2", "SQREEN_REQUEST_TIMEOUT": "1", **settings}
    return spawn([sys.executable, str(script), str(count), str(rate), prefix, str(threads)], env=env)


def load_result(proc: Any, timeout: float) -> dict[str, Any]:
    proc.wait(timeout)
    out = output_of(proc)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, out
    result: dict[str, Any] = json.loads(lines[-1][7:])
    print(json.dumps(result))  # the figures of docs/reliability.md (pytest -s shows them)
    return result


@pytest.mark.parametrize("kills", [pytest.param(2, id="2-kills"),
                                   pytest.param(5, id="5-kills", marks=pytest.mark.slow)])
def test_collector_sigkilled_and_restarted_under_load(kills: int, tmp_path: Path) -> None:
    port, db, stop = free_port(), tmp_path / "events.db", tmp_path / "stop"
    url = f"http://127.0.0.1:{port}"
    apps: list[Any] = []
    try:
        with start_collector(db, port=port):
            apps += [start_load(tmp_path, url, -1, 500, f"app{a}", SQREEN_SHUTDOWN_TIMEOUT="30",
                                LOAD_STOP_FILE=str(stop)) for a in (0, 1)]
            time.sleep(1.0)
        for _ in range(kills):
            with start_collector(db, port=port) as collector:
                time.sleep(1.0)
                assert collector.process is not None
                collector.process.kill()  # SIGKILL: no graceful anything
                collector.process.wait(10)
            time.sleep(0.3)
        with start_collector(db, port=port) as collector:
            time.sleep(1.0)  # the apps track on while the last collector is up, then stop
            stop.touch()
            results = [load_result(app, 120) for app in apps]
            events = collector.events()
    finally:
        for app in apps:  # a failure above must not leave them running into the next tests
            stop_process(app, signal.SIGKILL)
    counts = uids(events)
    tracked = [result["stats"]["tracked"] for result in results]
    assert min(tracked) > 1000
    assert sorted(counts) == sorted(f"app{a}-{i}" for a in (0, 1) for i in range(tracked[a]))
    assert set(counts.values()) == {1}
    for result in results:
        assert result["stats"]["dropped"] == {} and result["stats"]["sent"] == result["stats"]["tracked"]


# The fault server: a raw socket server answering every request (login included) with one kind of failure.
FAULTS = {
    "500": b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    "503": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    "429": b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    "429-retry-after": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\nContent-Length: 2\r\n"
                       b"Connection: close\r\n\r\n{}",
    "close-mid-response": b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"session_",
    "accept-never-answer": b"",
}


class FaultServer:
    """Loopback only; every connection gets the same fault; every wait bounded by the test's own timeouts."""

    def __init__(self, fault: str) -> None:
        import socket
        import threading

        self.answer = FAULTS[fault]
        self.hang = fault == "accept-never-answer"
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self._stop = threading.Event()
        self._held: list[Any] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.requests += 1
            if self.hang:
                self._held.append(conn)  # accepted, read nothing, answer never
                continue
            conn.settimeout(2)
            try:
                conn.recv(65536)
                conn.sendall(self.answer)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self.sock.close()


FAULT_DEFAULT = {"503", "accept-never-answer"}


@pytest.mark.parametrize("fault", [pytest.param(f, marks=() if f in FAULT_DEFAULT else (pytest.mark.slow,))
                                   for f in FAULTS])
def test_a_failing_collector_costs_the_app_nothing_and_exit_is_bounded(fault: str, tmp_path: Path,
                                                                       collector: Collector) -> None:
    count, bound = 3000, 1000
    healthy = load_result(start_load(tmp_path, collector.url, count, 1000, "healthy"), 60)
    server = FaultServer(fault)
    try:
        faulty = load_result(start_load(tmp_path, f"http://127.0.0.1:{server.port}", count, 1000, fault,
                                        SQREEN_MAX_QUEUE_EVENTS=str(bound)), 60)
    finally:
        server.close()
    assert healthy["stats"]["sent"] == count and healthy["stats"]["dropped"] == {}
    stats = faulty["stats"]
    assert stats["sent"] == 0 and server.requests >= 1
    assert stats["dropped"] == {"queue_full": count - bound}  # drops counted, by reason
    assert stats["queued"] == bound  # the rest undelivered at exit, reported (never more than the bound)
    assert faulty["exit_s"] <= 2 + 1.5  # shutdown_timeout, plus the thread join's slack
    # track() never waits on the network: its cost is the same order as with a healthy collector (loose bound:
    # the machine is shared, the figures in docs/reliability.md are the honest comparison)
    assert faulty["p99_us"] < max(10 * healthy["p99_us"], 2000)


# --- many threads, and forks from threads that are tracking ---------------------------------------------------------

THREADS_SCRIPT = textwrap.dedent('''
    import faulthandler, json, os, sys, threading, time
    import sqreen_mw

    per_thread, forks = int(sys.argv[1]), int(sys.argv[2])
    client = sqreen_mw.init(install_signal_handler=False)
    children = []
    lock = threading.Lock()

    def work(t):
        for i in range(per_thread):
            sqreen_mw.track("thread", properties={"uid": f"p-{t}-{i}"})
            if t < forks and i == per_thread // 2:  # fork from a thread in the middle of tracking
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        for j in range(100):
                            sqreen_mw.track("child", properties={"uid": f"c-{t}-{j}"})
                        began = time.monotonic()
                        ok = sqreen_mw.flush(60)
                        stats = client.statistics()
                        flusher = client.flusher._thread
                        print("CHILD " + json.dumps({  # what a failure needs to be understood
                            "ok": ok, "tracked": stats["tracked"], "sent": stats["sent"],
                            "flush_s": round(time.monotonic() - began, 2), "last_error": stats["last_error"],
                            "restarts": stats["flusher_restarts"], "queued": stats["queued"],
                            "flusher_alive": flusher is not None and flusher.is_alive(),
                            "threads": sorted(th.name for th in threading.enumerate())}), flush=True)
                        if not ok:
                            faulthandler.dump_traceback(all_threads=True)
                        code = 0 if ok and stats["tracked"] == stats["sent"] == 100 else 1
                    finally:
                        os._exit(code)
                with lock:
                    children.append(pid)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = []
    for pid in children:  # bounded: a child that hangs is reported, not waited for
        for _ in range(1200):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes.append(status)
                break
            time.sleep(0.05)
        else:
            codes.append("hung")
    ok = sqreen_mw.flush(120)
    stats = client.statistics()
    print("RESULT " + json.dumps({"ok": ok, "codes": codes, "stats": stats}), flush=True)
''')


@pytest.mark.parametrize("per_thread", [pytest.param(1000, id="16x1000"),
                                        pytest.param(10_000, id="16x10000", marks=pytest.mark.slow)])
def test_sixteen_threads_and_forks_from_tracking_threads_add_up(per_thread: int, tmp_path: Path,
                                                                 collector: Collector) -> None:
    script = tmp_path / "threads.py"
    script.write_text(THREADS_SCRIPT)
    env = {"SQREEN_TOKEN": API_KEY, "SQREEN_URL": collector.url, "SQREEN_HEARTBEAT_INTERVAL": "1",
           "SQREEN_MAX_QUEUE_EVENTS": "200000", "SQREEN_MAX_QUEUE_BYTES": "500000000"}
    proc = spawn([sys.executable, str(script), str(per_thread), "2"], env=env)
    result = load_result(proc, 300)
    assert result["ok"] and result["codes"] == [0, 0], output_of(proc)
    assert result["stats"]["tracked"] == result["stats"]["sent"] == 16 * per_thread
    assert result["stats"]["dropped"] == {}
    counts = uids(collector.wait_for(lambda evs: len(evs) >= 16 * per_thread + 200, timeout=60))
    expected = {f"p-{t}-{i}" for t in range(16) for i in range(per_thread)}
    expected |= {f"c-{t}-{j}" for t in range(2) for j in range(100)}
    assert set(counts) == expected and set(counts.values()) == {1}


# --- what a failing collector costs a request, end to end: a real app server, latency measured by the client ------

LATENCY_APP = textwrap.dedent('''
    import json
    import sqreen_mw
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route
    from sqreen_mw.asgi import SqreenMiddleware

    client = sqreen_mw.init()

    async def hit(request):
        sqreen_mw.track("hit", properties={"uid": request.url.query})
        return PlainTextResponse("ok")

    async def stats(request):
        status = open("/proc/self/status").read()  # VmHWM: this program's peak (ru_maxrss keeps the parent's)
        body = {"stats": client.statistics(), "peak_rss_mb": int(status.split("VmHWM:")[1].split()[0]) / 1024}
        return Response(json.dumps(body), media_type="application/json")

    async def healthz(request):
        return PlainTextResponse("ok")

    app = SqreenMiddleware(Starlette(routes=[Route("/hit", hit), Route("/stats", stats), Route("/healthz", healthz)]))
''')


def run_latency_app(tmp_path: Path, url: str, prefix: str, requests: int, rate: float) -> dict[str, Any]:
    """uvicorn serving LATENCY_APP; ``requests`` at ``rate``/s over one keep-alive connection; then SIGTERM."""
    (tmp_path / "latency_app.py").write_text(LATENCY_APP)
    port = free_port()
    env = {"SQREEN_TOKEN": API_KEY, "SQREEN_URL": url, "SQREEN_HEARTBEAT_INTERVAL": "0.5",
           "SQREEN_SHUTDOWN_TIMEOUT": "2", "SQREEN_REQUEST_TIMEOUT": "1", "SQREEN_MAX_QUEUE_EVENTS": "1000",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    proc = spawn([sys.executable, "-m", "uvicorn", "--no-access-log", "--port", str(port), "latency_app:app"],
                 env=env, cwd=tmp_path)
    latencies, answered = [], []
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            start = time.monotonic()
            for n in range(requests):
                t0 = time.perf_counter()
                assert http.get(f"/hit?{prefix}-{n}").status_code == 200
                latencies.append(time.perf_counter() - t0)
                answered.append(f"{prefix}-{n}")
                pause = start + (n + 1) / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            report: dict[str, Any] = http.get("/stats").json()
    finally:
        started = time.monotonic()
        code = stop_process(proc, signal.SIGTERM, timeout=30)
        exit_s = time.monotonic() - started
    assert code in (0, -signal.SIGTERM), output_of(proc)
    latencies.sort()
    report.update(p50_ms=latencies[len(latencies) // 2] * 1e3, p99_ms=latencies[int(len(latencies) * 0.99)] * 1e3,
                  exit_s=exit_s, answered=answered, output=output_of(proc))
    return report


@pytest.mark.slow
@pytest.mark.parametrize("fault", [*FAULTS, "down"])
def test_request_latency_with_a_failing_collector(fault: str, tmp_path: Path, collector: Collector) -> None:
    requests, rate, bound = 2000, 200.0, 1000
    healthy = run_latency_app(tmp_path, collector.url, "healthy", requests, rate)
    server = FaultServer(fault) if fault != "down" else None
    url = f"http://127.0.0.1:{server.port if server else free_port()}"  # "down": nothing listens there
    try:
        faulty = run_latency_app(tmp_path, url, fault, requests, rate)
    finally:
        if server is not None:
            server.close()
    counts = uids(collector.wait_for(lambda evs: len(evs) >= requests, timeout=20))
    assert counts == Counter(healthy["answered"]), "the healthy run stores every request's event once"
    stats = faulty["stats"]
    assert stats["tracked"] == requests and stats["sent"] == 0
    # every event accounted for: still queued (reported undelivered at exit) or dropped, counted by reason
    assert stats["queued"] + sum(stats["dropped"].values()) == requests
    assert stats["queued"] <= bound and set(stats["dropped"]) <= {"queue_full"}
    assert "undelivered" in faulty["output"] and "Traceback" not in faulty["output"]
    print("\nLATENCY " + json.dumps({
        "fault": fault, "requests": requests, "healthy_p50_ms": healthy["p50_ms"], "healthy_p99_ms": healthy["p99_ms"],
        "p50_ms": faulty["p50_ms"], "p99_ms": faulty["p99_ms"], "healthy_stored": sum(counts.values()),
        "dropped": stats["dropped"], "queued": stats["queued"], "retries": stats.get("retries"),
        "healthy_rss_mb": healthy["peak_rss_mb"], "peak_rss_mb": faulty["peak_rss_mb"],
        "exit_s": faulty["exit_s"], "healthy_exit_s": healthy["exit_s"]}))


# --- the collector against hostile clients: memory bound, slow clients, connection limit -------------------------

def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


BOMBS = {  # gzip bodies of ~1.5 KB to ~10 KB that inflate to 1 to 10 MiB of JSON
    "values-over-the-limit": lambda: '{"events": [' + "{}," * (10 * 2**20 // 3 - 10) + "{}]}",
    "values-under-the-limit": lambda: '{"events": [' + "{}," * 498_999 + "{}]}",
    "one-deep-event-body": lambda: '{"events": [{"body": ' + "[" * 100_000 + "]" * 100_000 + "}]}",
}


@pytest.mark.slow
@pytest.mark.parametrize(("bomb", "count", "at_once"), [
    *((bomb, 12, 12) for bomb in BOMBS),
    ("values-over-the-limit", 30, 1),  # one after the other: refused batches must not pile up until a gc
])
def test_collector_memory_is_bounded_under_twelve_concurrent_bombs(bomb: str, count: int, at_once: int,
                                                                   tmp_path: Path) -> None:
    import gzip
    from concurrent.futures import ThreadPoolExecutor

    body = gzip.compress(BOMBS[bomb]().encode())
    with start_collector(tmp_path / "c.db") as collector:  # a fresh process: its high-water mark is this test's
        assert collector.process is not None
        login = httpx.post(f"{collector.url}/api/v1/agent/login", headers={"X-Api-Key": API_KEY}, json={},
                           timeout=10)
        sid = login.json()["session_id"]
        before = peak_rss_mb(collector.process.pid)

        def send(_: int) -> int:
            with httpx.Client(timeout=60) as http:
                return http.post(f"{collector.url}/api/v1/agent/batch", content=body,
                                 headers={"X-Session-Key": sid, "Content-Encoding": "gzip"}).status_code

        with ThreadPoolExecutor(at_once) as pool:
            statuses = Counter(pool.map(send, range(count)))
        after = peak_rss_mb(collector.process.pid)
        print(f"\nBOMB {bomb}: {len(body):,} gzip bytes inflating to {len(gzip.decompress(body)):,}, {count} sent "
              f"{at_once} at once, answers {dict(statuses)}, collector peak RSS {before:.0f} -> {after:.0f} MB")
        assert all(400 <= s < 500 or s == 503 for s in statuses), statuses  # refused, never a 500
        # at most 2 batches decoded at once (max_parallel_batches), ~40 MB each at most, whatever arrives
        assert after - before < 100
        assert httpx.get(f"{collector.url}/healthz", timeout=10).status_code == 200


@pytest.mark.slow
def test_a_thousand_half_sent_requests_are_cut_off_and_connections_are_limited(tmp_path: Path) -> None:
    import socket

    from sqreen_mw.collector._server import HEADER_TIMEOUT, MAX_CONNECTIONS

    with start_collector(tmp_path / "c.db") as collector:
        host, port = collector.url.removeprefix("http://").split(":")
        started = time.monotonic()
        socks = []
        for _ in range(MAX_CONNECTIONS + 100):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"POST /api/v1/agent/login HTTP/1.1\r\nHost: x\r\n")  # the headers never end
            socks.append(sock)
        closed_at: dict[int, float] = {}
        deadline = started + HEADER_TIMEOUT + 20
        for sock in socks:
            sock.setblocking(False)
        while len(closed_at) < len(socks) and time.monotonic() < deadline:
            for i, sock in enumerate(socks):
                if i in closed_at:
                    continue
                try:
                    if not sock.recv(4096):
                        closed_at[i] = time.monotonic() - started
                except BlockingIOError:
                    pass
                except ConnectionError:
                    closed_at[i] = time.monotonic() - started
            time.sleep(0.1)
        for sock in socks:
            sock.close()
        early = sum(1 for t in closed_at.values() if t < HEADER_TIMEOUT / 2)
        print(f"\nSLOW {len(socks)} half-sent requests: {len(closed_at)} closed, {early} at once (beyond "
              f"{MAX_CONNECTIONS} connections), the last after {max(closed_at.values()):.1f} s "
              f"(header timeout {HEADER_TIMEOUT:g} s)")
        assert len(closed_at) == len(socks)
        assert early >= 100  # the connections beyond the limit are closed on arrival
        assert httpx.get(f"{collector.url}/healthz", timeout=10).status_code == 200
