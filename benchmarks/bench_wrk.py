"""End to end under load: the FastAPI example under uvicorn and the Flask example under gunicorn, loaded by ``wrk``.

Run ``python benchmarks/bench_wrk.py`` (10 s per variant, about 2-3 minutes) or ``--quick`` (3 s per variant, about a
minute); ``--variants bare,sqreen_mw`` to choose. Needs Debian's ``wrk``. Everything is on loopback. Each variant is a
fresh server process serving ``benchmarks/_wrk_app.py`` (the example app; ``bare`` = without sqreen_mw, a peer = bare in
the peer's middleware with ``track`` replaced by the peer's event call, sending to the local sink). The request is
``GET /orders/1`` with alice's bearer token: it identifies the user and tracks one event (``order.viewed``). For
``sqreen_mw`` a real ``sqreen-mw serve`` collector (fresh SQLite database) receives the events at default SDK settings;
after the app has stopped (SIGTERM: it flushes) the events stored are counted against the events tracked.
``sqreen_mw-sink`` is the same app and SDK delivering to the sink the peers send to (``--variants
bare,sqreen_mw,sqreen_mw-sink``): the SDK's cost on the server alone, as the peers' is measured.

Reported per variant: req/s, p99 latency (wrk ``--latency``), ratio to bare req/s, and the app's all-in CPU per request:
"wrk" = utime + stime of the server's whole process tree from ``/proc/<pid>/stat`` over the wrk run (senders included);
"collector CPU" = the same for the collector over the wrk run, as a share of one CPU (it runs on the same 2 CPUs as
the server and wrk, and takes that much from them: with the collector on another host, as in production, it would
not);
"to exit" = from the start of the wrk run to the server's exit (SIGTERM, reaped with ``os.wait4``: its own and its
workers' CPU, every thread), so the events still queued when wrk stops, flushed at exit, are counted too; "Δ vs bare"
is that minus bare's, i.e. for ``sqreen_mw`` the all-in CPU of one tracked and delivered event (middleware, track,
the flusher's serialization, gzip and HTTP). wrk runs on the same 2 CPUs as the server: compare within one run.

``--gc`` also counts the served app's garbage collections per generation (``gc.callbacks`` in each of its processes,
written at exit), per 10,000 requests, with their total and longest pause: a full collection walks the whole heap
while no request is served, which is what a p99 several times bare's is made of.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import _peers  # noqa: E402
from _timing import table, tree_cpu  # noqa: E402

from tests.support import API_KEY, free_port, spawn, start_collector, stop_process, wait_http  # noqa: E402

SECRET = "bench-wrk-secret"  # noqa: S105 - the example's token signing key for this run
#: sqreen_mw delivering to the sink the peers send to (which answers at once and stores nothing): the SDK's own cost
#: on the server, without a collector's CPU taken from the same 2 CPUs.
SINK_VARIANT = "sqreen_mw-sink"
SERVERS = {
    "fastapi/uvicorn": ["uvicorn", "benchmarks._wrk_app:app", "--no-access-log", "--log-level", "warning"],
    "flask/gunicorn -w 2": ["gunicorn", "-w", "2", "--log-level", "warning", "benchmarks._wrk_app:app"],
}


def parse_wrk(text: str) -> dict[str, Any]:
    def grab(pattern: str) -> str | None:
        m = re.search(pattern, text)
        return m.group(1) if m else None

    def to_ms(value: str | None) -> float:
        if not value:
            return float("nan")
        m = re.match(r"([\d.]+)(us|ms|s)", value)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return {
        "rps": float(grab(r"Requests/sec:\s+([\d.]+)") or 0),
        "requests": int(grab(r"(\d+) requests in") or 0),
        "p99_ms": to_ms(grab(r"99%\s+([\d.]+\w+)")),
        "non2xx": int(grab(r"Non-2xx or 3xx responses:\s+(\d+)") or 0),
        "errors": grab(r"(Socket errors:.*)") or "",
    }


def run_variant(server: str, variant: str, seconds: int, sink_url: str, tmp: Path, gc_probe: bool = False
                ) -> dict[str, Any]:
    from examples.fastapi_app.store import issue_token

    port = free_port()
    command = SERVERS[server]
    bind = ["--bind", f"127.0.0.1:{port}"] if command[0] == "gunicorn" else ["--host", "127.0.0.1", "--port", str(port)]
    env = {
        "PYTHONPATH": str(ROOT),
        "EXAMPLE_SECRET_KEY": SECRET,
        "BENCH_VARIANT": "sqreen_mw" if variant == SINK_VARIANT else variant,
        "BENCH_FRAMEWORK": "fastapi" if server.startswith("fastapi") else "flask",
        "BENCH_SINK_URL": sink_url,
        **_peers.peer_env(sink_url),
    }
    gc_dir = tmp / f"gc-{server.split('/')[0]}-{variant}"
    if gc_probe:
        gc_dir.mkdir()
        env["BENCH_GC_DIR"] = str(gc_dir)
    for key in ("SQREEN_TOKEN", "SQREEN_URL", "SQREEN_HEARTBEAT_INTERVAL"):
        os.environ.pop(key, None)
    collector_ctx = None
    db = tmp / f"{server.split('/')[0]}-{variant}.db"
    if variant == "sqreen_mw":
        collector_ctx = start_collector(db)
        collector = collector_ctx.__enter__()
        env.update(SQREEN_TOKEN=API_KEY, SQREEN_URL=collector.url)
    if variant == SINK_VARIANT:  # the SDK as shipped, delivering to the peers' sink instead of a collector
        env.update(SQREEN_TOKEN=API_KEY, SQREEN_URL=sink_url)
        batches_before = _sink_batches(sink_url)
    result: dict[str, Any] = {"server": server, "variant": variant}
    try:
        proc = spawn([sys.executable, "-m", *command, *bind], env=env, cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthz", timeout=60)
            os.environ["EXAMPLE_SECRET_KEY"] = SECRET
            token = issue_token_with(SECRET, issue_token)
            url = f"{base}/orders/1"
            import httpx

            warm = 0
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
                for _ in range(50):
                    r = http.get(url)
                    if r.status_code != 200:
                        raise RuntimeError(f"{server} {variant}: GET /orders/1 answered {r.status_code}: {r.text}")
                    warm += 1
            collector_pid = None if collector_ctx is None or collector.process is None else collector.process.pid
            collector_cpu0 = 0.0 if collector_pid is None else tree_cpu(collector_pid)
            cpu0, t0 = tree_cpu(proc.pid), time.perf_counter()
            wrk = subprocess.run(  # noqa: S603 - wrk, fixed arguments
                [shutil.which("wrk") or "wrk", "-t1", "-c16", f"-d{seconds}s", "--latency",
                 "-H", f"Authorization: Bearer {token}", url],
                capture_output=True, text=True, timeout=seconds + 60, check=False,
            )
            cpu = tree_cpu(proc.pid) - cpu0
            wall = time.perf_counter() - t0
            if collector_pid is not None:  # on the same 2 CPUs: what it takes from the server under test
                result["collector_cpu"] = tree_cpu(collector_pid) - collector_cpu0
            result.update(parse_wrk(wrk.stdout))
            result.update(cpu=cpu, wall=wall, warm=warm)
            lifetime = stop_and_measure(proc, timeout=30)
            if lifetime is not None:  # the run and everything after it: the final flush at exit included
                result["cpu_to_exit"] = lifetime - cpu0
        finally:
            stop_process(proc, signal.SIGTERM, timeout=30)
    finally:
        if collector_ctx is not None:
            collector_ctx.__exit__(None, None, None)
    if variant == SINK_VARIANT:
        result["batches"] = _sink_batches(sink_url) - batches_before
    if gc_probe:
        result["gc"] = _gc_totals(gc_dir)
    if variant == "sqreen_mw":
        with sqlite3.connect(db) as conn:
            result["stored"] = conn.execute("SELECT count(*) FROM events WHERE name = 'order.viewed'").fetchone()[0]
        result["tracked"] = result["warm"] + result["requests"] - result["non2xx"]
    return result


def _gc_totals(gc_dir: Path) -> dict[str, Any]:
    """The served app's garbage collections (its processes', summed), as its ``BENCH_GC_DIR`` probe wrote them."""
    import json

    totals: dict[str, Any] = {"runs": [0, 0, 0], "paused_ms": 0.0, "longest_ms": 0.0, "requests": 0}
    for path in gc_dir.glob("*.json"):
        one = json.loads(path.read_text())
        for g in range(3):
            totals["runs"][g] += one["runs"][str(g)]
        totals["paused_ms"] += sum(one["paused_ms"].values())
        totals["longest_ms"] = max(totals["longest_ms"], one["longest_ms"])
        totals["requests"] += one["requests"]
    return totals


def _sink_batches(sink_url: str) -> int:
    import httpx

    paths = httpx.get(f"{sink_url}/__sink/stats", timeout=10).json()["paths"]
    return int(paths.get("/api/v1/agent/batch", 0))


def stop_and_measure(proc: subprocess.Popen[str], timeout: float) -> float | None:
    """SIGTERM the server's process group, reap it, and return the CPU seconds of its whole life: its own and its
    reaped children's (gunicorn's workers), every thread, so the final flush at exit is counted; None if it hangs."""
    os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        time.sleep(0.05)
    return None  # stop_process kills it


def issue_token_with(secret: str, issue: Any) -> str:
    """The example's token for alice, signed with ``secret`` (the key the served app reads from its environment)."""
    import examples.fastapi_app.store as store

    store.SECRET_KEY = secret.encode()
    token: str = issue("alice@example.com")
    return token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 s per variant")
    parser.add_argument("--seconds", type=int, help="wrk duration per variant (default 10, quick 3)")
    parser.add_argument("--variants", default="bare,sqreen_mw," + ",".join(_peers.MIDDLEWARE_PEERS))
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"subset of {','.join(SERVERS)}")
    parser.add_argument("--gc", action="store_true",
                        help="also count the served app's garbage collections (gc.callbacks in its processes; the "
                             "probe's own CPU is in the figures)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)")
        return 2
    seconds = args.seconds or (3 if args.quick else 10)
    load = os.getloadavg()
    print(f"wrk -t1 -c16 -d{seconds}s, GET /orders/1 (1 event per request) | {os.cpu_count()} CPUs | "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    rows = []
    gc_rows = []
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp_name, _peers.sink() as sink_url:
        for server in args.servers.split(","):
            bare: dict[str, Any] | None = None
            for variant in args.variants.split(","):
                try:
                    r = run_variant(server, variant, seconds, sink_url, Path(tmp_name), args.gc)
                except Exception as exc:  # one variant failing must not hide the others
                    print(f"  {server} {variant}: failed: {exc}", flush=True)
                    continue
                if variant == "bare":
                    bare = r
                requests = max(r["requests"], 1)
                per_req = r["cpu"] / requests * 1e6
                to_exit = r["cpu_to_exit"] / requests * 1e6 if "cpu_to_exit" in r else float("nan")
                ratio = over_bare = ""
                if bare:
                    ratio = f"{r['rps'] / bare['rps']:.2f}"
                    if "cpu_to_exit" in bare:
                        over_bare = f"{to_exit - bare['cpu_to_exit'] / max(bare['requests'], 1) * 1e6:+.0f}"
                delivered = ""
                if "stored" in r:
                    delivered = f"{r['stored']:,} stored / {r['tracked']:,} tracked"
                elif "batches" in r:
                    delivered = f"{r['batches']:,} batches to the sink"
                collector_share = f"{r['collector_cpu'] / r['wall'] * 100:.0f} %" if "collector_cpu" in r else ""
                rows.append((server, variant, f"{r['rps']:,.0f}", f"{r['p99_ms']:.1f}", ratio, f"{per_req:.0f}",
                             f"{to_exit:.0f}", over_bare, f"{r['cpu'] / r['wall'] * 100:.0f} %", collector_share,
                             str(r["non2xx"]), delivered))
                print(f"  {rows[-1]}", flush=True)
                if "gc" in r:
                    g = r["gc"]
                    served = max(g["requests"], 1)
                    gc_rows.append((server, variant, f"{g['requests']:,}",
                                    *(f"{g['runs'][i] * 10000 / served:.1f}" for i in range(3)),
                                    str(g["runs"][2]), f"{g['paused_ms']:.0f}", f"{g['longest_ms']:.1f}"))
    headers = ("server", "variant", "req/s", "p99 ms", "÷ bare", "CPU µs/req (wrk)", "CPU µs/req (to exit)",
               "Δ vs bare", "app CPU", "collector CPU", "non-2xx", "events")
    print(table(headers, rows))
    if gc_rows:
        print("garbage collections in the served app, from its start to its exit (warm-up and final flush included):")
        print(table(("server", "variant", "requests", "gen0 /10k req", "gen1 /10k req", "gen2 /10k req", "gen2",
                     "GC ms", "longest ms"), gc_rows))
    load = os.getloadavg()
    print(f"load at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    # SIGTERM (timeout, kill) ends through sys.exit: the servers started above are stopped on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())
