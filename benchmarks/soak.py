"""A bounded soak: apps with the middleware under steady load, the collector killed and restarted once, no growth.

Run ``python benchmarks/soak.py`` (about 3 minutes; ``--minutes`` to change it, ``--rate`` requests per second per
app). Loopback only; every process it starts is stopped at the end (SIGTERM to its process group).

What runs:

- a real collector (``sqreen-mw serve``, SQLite in a temporary directory);
- a Starlette app behind ``sqreen_mw.asgi.SqreenMiddleware`` under ``uvicorn`` (one process), and a WSGI app behind
  ``sqreen_mw.wsgi.SqreenMiddleware`` under ``gunicorn -w 2`` (sync workers); each request tracks one event with a
  unique ``uid`` property; ``heartbeat_interval`` is 2 s, so the flusher delivers all along;
- one client thread per app sending ``--rate`` requests per second over keep-alive connections;
- a third of the way through the run the collector is SIGKILLed and restarted ``--down`` seconds later on the same
  port and database: the apps queue meanwhile and deliver after (the flusher retries with backoff).

Every ``--interval`` seconds the script reads each app process's ``/proc/<pid>/status`` (VmRSS, Threads) and counts
``/proc/<pid>/fd``. It prints, per process, the first, last and maximum of each, and the median RSS before the kill;
the verdict compares the first third of what follows the recovery (``--down`` + 5 s after the restart) with its last
third, so that memory taken while the collector was down (the queue) is not mistaken for growth: RSS within
``--rss-slack`` (default 10 %), the same number of threads, file descriptors within 2. At the end the servers are
stopped with SIGTERM and every ``uid`` is counted in the collector: each request's event stored exactly once.
The exit status is 0 only when there is no growth and no event is lost or duplicated.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

API_KEY = "soak-api-key"
ADMIN_TOKEN = "soak-admin-token"  # noqa: S105 - a throwaway collector on loopback

BOOT = '''
import os
import sqreen_mw
sqreen_mw.init()
'''
ASGI_APP = BOOT + textwrap.dedent('''
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from sqreen_mw.asgi import SqreenMiddleware

    async def hit(request):
        sqreen_mw.track("soak.hit", properties={"uid": request.url.query})
        return PlainTextResponse("ok")

    async def healthz(request):
        return PlainTextResponse("ok")

    app = SqreenMiddleware(Starlette(routes=[Route("/hit", hit), Route("/healthz", healthz)]))
''')
WSGI_APP = BOOT + textwrap.dedent('''
    from sqreen_mw.wsgi import SqreenMiddleware

    def inner(environ, start_response):
        if environ["PATH_INFO"] == "/hit":
            sqreen_mw.track("soak.hit", properties={"uid": environ["QUERY_STRING"]})
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    app = SqreenMiddleware(inner)
''')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(args: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - the script's own commands
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return int(proc.returncode)


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout} s")


def start_collector(db: Path, port: int, log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    proc = spawn([sys.executable, "-m", "sqreen_mw.collector.cli", "serve", "--db", str(db), "--api-key", API_KEY,
                  "--admin-token", ADMIN_TOKEN, "--host", "127.0.0.1", "--port", str(port)], log, {}, cwd)
    wait_http(f"http://127.0.0.1:{port}/", 30)
    return proc


def family(pid: int) -> list[int]:
    """The process and its descendants (a server's master and workers)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


def sample(pid: int) -> tuple[float, int, int] | None:
    """(RSS in MB, threads, open file descriptors) from /proc, or None once the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss = re.search(r"VmRSS:\s+(\d+) kB", status)
    threads = re.search(r"Threads:\s+(\d+)", status)
    assert rss and threads
    return int(rss.group(1)) / 1024, int(threads.group(1)), fds


def drive(base: str, prefix: str, rate: float, until: float, sent: list[str], latencies: list[float],
          errors: Counter[str]) -> None:
    """Requests at a steady rate until ``until``; each uid is recorded only once its request was answered."""
    period, n = 1.0 / rate, 0
    start = time.monotonic()
    with httpx.Client(base_url=base, timeout=10) as http:
        while time.monotonic() < until:
            uid = f"{prefix}-{n}"
            t0 = time.perf_counter()
            try:
                response = http.get(f"/hit?{uid}")
                if response.status_code == 200:
                    sent.append(uid)
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[f"status {response.status_code}"] += 1
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
            n += 1
            pause = start + n * period - time.monotonic()
            if pause > 0:
                time.sleep(pause)


def stored_uids(collector: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    params: dict[str, Any] = {"limit": 1000, "name": "soak.hit"}
    with httpx.Client(base_url=collector, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as admin:
        while True:
            body = admin.get("/api/v1/events", params=params).raise_for_status().json()
            counts.update(str(e["properties"]["uid"]) for e in body["events"])
            if not body["next"]:
                return counts
            params["cursor"] = body["next"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="load duration (default 3)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second per app (default 100)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--down", type=float, default=10.0, help="seconds the collector stays down (default 10)")
    parser.add_argument("--rss-slack", type=float, default=0.10, help="allowed RSS growth (default 0.10)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sqreen_mw-soak-"))
    (work / "soak_asgi.py").write_text(ASGI_APP)
    (work / "soak_wsgi.py").write_text(WSGI_APP)
    db, log = work / "events.db", work / "servers.log"
    cport = free_port()
    collector_url = f"http://127.0.0.1:{cport}"
    env = {"SQREEN_TOKEN": API_KEY, "SQREEN_URL": collector_url, "SQREEN_HEARTBEAT_INTERVAL": "2",
           "SQREEN_SHUTDOWN_TIMEOUT": "10", "HOME": str(work),
           "PYTHONPATH": os.pathsep.join([str(work), os.environ.get("PYTHONPATH", "")])}
    ports = {"uvicorn": free_port(), "gunicorn -w 2": free_port()}
    commands = {
        "uvicorn": [sys.executable, "-m", "uvicorn", "--no-access-log", "--port", str(ports["uvicorn"]),
                    "soak_asgi:app"],
        "gunicorn -w 2": [sys.executable, "-m", "gunicorn", "-w", "2", "--bind",
                          f"127.0.0.1:{ports['gunicorn -w 2']}", "soak_wsgi:app"],
    }
    collector = start_collector(db, cport, log, work)
    servers = {name: spawn(cmd, log, env, work) for name, cmd in commands.items()}
    try:
        for port in ports.values():
            wait_http(f"http://127.0.0.1:{port}/healthz", 30)
        time.sleep(1.0)  # gunicorn's workers are up
        pids = {name: family(proc.pid) for name, proc in servers.items()}
        duration = args.minutes * 60
        t_start = time.monotonic()
        until = t_start + duration
        sent: dict[str, list[str]] = {name: [] for name in servers}
        latencies: dict[str, list[float]] = {name: [] for name in servers}
        errors: dict[str, Counter[str]] = {name: Counter() for name in servers}
        clients = [threading.Thread(target=drive, args=(f"http://127.0.0.1:{ports[name]}", f"s{i}", args.rate,
                                                        until, sent[name], latencies[name], errors[name]))
                   for i, name in enumerate(servers)]
        for client in clients:
            client.start()
        samples: dict[int, list[tuple[float, float, int, int]]] = {pid: [] for ps in pids.values() for pid in ps}
        killed_at = restarted_at = None
        next_sample = t_start
        while time.monotonic() < until:
            now = time.monotonic()
            if killed_at is None and now - t_start >= duration / 3:
                collector.kill()  # SIGKILL: no graceful anything
                collector.wait(10)
                killed_at = now - t_start
            if killed_at is not None and restarted_at is None and now - t_start >= killed_at + args.down:
                collector = start_collector(db, cport, log, work)
                restarted_at = time.monotonic() - t_start
            if now >= next_sample:
                for pid in samples:
                    got = sample(pid)
                    if got is not None:
                        samples[pid].append((now - t_start, *got))
                next_sample += args.interval
            time.sleep(0.05)
        for client in clients:
            client.join(30)
    finally:
        codes = {name: stop(proc) for name, proc in servers.items()}
    time.sleep(1.0)
    counts = stored_uids(collector_url)
    stop(collector)

    load = os.getloadavg()
    print(f"soak: {args.minutes:g} min, {args.rate:g} requests/s per app, samples every {args.interval:g} s; "
          f"collector SIGKILLed at {killed_at:.0f} s, restarted at {restarted_at:.0f} s; "
          f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'server':14} {'pid':>7} {'RSS MB first/last/max':>23} {'pre-kill':>9} {'threads f/l/max':>16} "
          f"{'fds f/l/max':>13}  verdict")
    grew = False
    for name, ps in pids.items():
        for pid in ps:
            rows = samples[pid]
            assert killed_at is not None and restarted_at is not None
            before_kill = [r for r in rows if r[0] < killed_at]
            recovered = [r for r in rows if r[0] >= restarted_at + args.down + 5]
            third = len(recovered) // 3
            if third < 2 or not before_kill:
                print(f"{name:14} {pid:>7} too few samples ({len(rows)})")
                grew = True
                continue
            early, late = recovered[:third], recovered[-third:]
            verdicts = []
            rss0, rss1 = (statistics.median(r[1] for r in part) for part in (early, late))
            if rss1 > rss0 * (1 + args.rss_slack):
                verdicts.append(f"RSS grew {rss0:.1f} -> {rss1:.1f} MB")
            thr0, thr1 = (statistics.median(r[2] for r in part) for part in (early, late))
            if thr1 > thr0:
                verdicts.append(f"threads grew {thr0:g} -> {thr1:g}")
            fd0, fd1 = (statistics.median(r[3] for r in part) for part in (early, late))
            if fd1 > fd0 + 2:
                verdicts.append(f"fds grew {fd0:g} -> {fd1:g}")
            grew = grew or bool(verdicts)
            cols = [f"{rows[0][i]:.0f}/{rows[-1][i]:.0f}/{max(r[i] for r in rows):.0f}" for i in (2, 3)]
            rss = f"{rows[0][1]:.1f}/{rows[-1][1]:.1f}/{max(r[1] for r in rows):.1f}"
            pre = statistics.median(r[1] for r in before_kill)
            verdict = "; ".join(verdicts) or f"no growth ({rss0:.1f} -> {rss1:.1f} MB after recovery)"
            print(f"{name:14} {pid:>7} {rss:>23} {pre:>9.1f} {cols[0]:>16} {cols[1]:>13}  {verdict}")

    ok = not grew
    for name in servers:
        expected = set(sent[name])
        mine = {uid: c for uid, c in counts.items() if uid.split("-")[0] == f"s{list(servers).index(name)}"}
        lost = len(expected - set(mine))
        duplicated = sum(c - 1 for c in mine.values())
        extra = len(set(mine) - expected)  # stored though the client saw no answer (a request cut by the stop)
        lat = sorted(latencies[name])
        p50 = lat[len(lat) // 2] * 1e3 if lat else float("nan")
        p99 = lat[int(len(lat) * 0.99)] * 1e3 if lat else float("nan")
        rate = len(expected) / (args.minutes * 60)
        print(f"{name}: {len(expected)} requests answered ({rate:.0f}/s), {len(mine)} events stored, lost {lost}, "
              f"duplicated {duplicated}, stored without an answer {extra}; request p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
              f"client errors {dict(errors[name]) or 'none'}; exit {codes[name]}")
        ok = ok and lost == 0 and duplicated == 0
    print("verdict:", "no growth, every event stored once" if ok else "FAILED (see above)")
    print(f"logs: {log}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
