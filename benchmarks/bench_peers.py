"""sqreen_mw next to its peers: ``track()`` per call, cost vs number of properties, middleware per request; then
sqreen_mw alone: delivery (flush time of queued events vs batch size, over loopback to a real collector), memory.

Run ``python benchmarks/bench_peers.py`` (about 6 minutes on a busy 2-core machine) or ``--quick`` (a minute);
``--callgrind`` counts instructions per call of each variant under valgrind instead (about 4 minutes; ``--quick``
about 1); ``--plots DIR`` also writes PNG charts. The peers come from ``benchmarks/requirements-peers.txt``; a peer
that does not import is skipped with a note. Everything stays on loopback: sqreen_mw sends to a real ``sqreen-mw
serve`` collector, the peers to a local sink (``_sink.py``) that answers 200 at once; each client keeps its production
batching and background sender. See ``benchmarks/README.md`` for what each row means.

Method: variants are interleaved round by round (order alternating) in one process; a round's value is the loop's
total time divided by its calls, timed both with ``time.perf_counter_ns`` (wall) and ``time.thread_time_ns`` (the
measuring thread's CPU: the peers' and our own sender threads are not in it, preemption by other processes neither);
the value shown is the median of the rounds. gc is disabled while a round runs; in the track() sections each variant's
client is flushed after its round, outside the timed region, so its sender is idle when the next variant runs (the
middleware section flushes once per app and method: the senders run alongside, as in production). The delivery
section (``--only flush``) runs a child process per batch size against a fresh collector: N events are queued while
the collector is stopped (SIGSTOP), then it is resumed (SIGCONT) and ``client.flush()`` is timed, with the CPU of both
processes over the flush. ``--callgrind`` runs each variant in its own process under ``valgrind --tool=callgrind
--separate-threads=yes`` twice, with N calls and with 0 calls; (N-run - 0-run) / N is the instructions per call, for
the main thread alone and for all threads (the senders' serialization, compression and HTTP included: each run
flushes its client, from a helper thread, before exiting).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _peers  # noqa: E402
from _peers import EVENT, PEERS, USER, Peer  # noqa: E402
from _timing import WALL_AND_CPU, asgi_loop, build, interleave, table, tree_cpu, wsgi_loop  # noqa: E402

import sqreen_mw  # noqa: E402

LITERAL = '{"item": "book", "quantity": 2, "gift": False}'
US = 1000.0


@dataclass
class Variant:
    name: str
    expr: str  # the call, P = the properties expression
    names: dict[str, Any]
    flush: Callable[[], Any]
    enter: Callable[[], Any] = lambda: None
    leave: Callable[[], Any] = lambda: None


def loop_of(variant: Variant, props_expr: str) -> Callable[[int], tuple[int, int]]:
    """``run(n)``: n calls of the variant's expression; returns (wall ns, thread CPU ns)."""
    body = re.sub(r"\bP\b", lambda _: props_expr, variant.expr)
    src = (
        "def run(n):\n"
        "    t0, c0 = perf_counter_ns(), thread_time_ns()\n"
        "    for _ in range(n):\n"
        f"        {body}\n"
        "    return perf_counter_ns() - t0, thread_time_ns() - c0\n"
    )
    names = {
        **variant.names,
        "EVENT": EVENT,
        "USER": USER,
        "perf_counter_ns": time.perf_counter_ns,
        "thread_time_ns": time.thread_time_ns,
    }
    exec(src, names)  # noqa: S102 - fixed benchmark snippets
    return names["run"]  # type: ignore[no-any-return]


def measure(
    variants: list[Variant], props_expr: str, n: int, rounds: int, extra: dict[str, Any] | None = None
) -> dict[str, tuple[list[float], list[float]]]:
    """Per-call (wall ns, thread ns) per round of each variant, interleaved, order alternating."""
    loops = {}
    for v in variants:
        if extra:
            v.names.update(extra)
        loops[v.name] = loop_of(v, props_expr)
    by_name = {v.name: v for v in variants}

    def leave(name: str) -> None:
        by_name[name].leave()
        by_name[name].flush()  # outside the timed region: the sender is idle when the next variant runs

    res = interleave(loops, n, rounds, enter=lambda name: by_name[name].enter(), leave=leave)
    return {name: ([w / n for w, _ in values], [c / n for _, c in values]) for name, values in res.items()}


def med(values: list[float]) -> float:
    return statistics.median(values)


# --------------------------------------------------------------------------------------------------------------------
# variants


def sqreen_variants(collector_url: str) -> list[Variant]:
    from bench_sdk import asgi_scope

    from sqreen_mw._context import ASGI, RequestContext, current_context

    client = sqreen_mw.init(token=_peers_api_key(), url=collector_url, install_signal_handler=False)
    ctx = RequestContext(ASGI, asgi_scope(), None)
    ctx.info(client.resolver)  # the request's first track() already happened: steady state
    tokens: list[Any] = []

    def enter() -> None:
        tokens.append(current_context.set(ctx))

    def leave() -> None:
        current_context.reset(tokens.pop())

    def flush() -> None:
        sqreen_mw.flush(10)

    track = {"track": sqreen_mw.track}
    return [
        Variant("sqreen_mw", "track(EVENT, properties=P)", dict(track), flush),
        Variant("sqreen_mw in a request", "track(EVENT, properties=P)", dict(track), flush, enter, leave),
    ]


def _peers_api_key() -> str:
    from tests.support import API_KEY

    return API_KEY


def floor_variant() -> Variant:
    box: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue()]
    names: dict[str, Any] = {"put": box[0].put}

    def flush() -> None:
        box[0] = queue.SimpleQueue()
        names["put"] = box[0].put

    return Variant("floor", "put(P)", names, flush)


def peer_variants(sink_url: str, wanted: list[str], notes: list[str]) -> tuple[list[Variant], list[Peer]]:
    variants, peers = [], []
    for name in wanted:
        peer = _peers.make_peer(name, sink_url)
        if isinstance(peer, str):
            notes.append(peer)
            continue
        peers.append(peer)
        variants.append(Variant(name, peer.expr, dict(peer.names), peer.flush, peer.enter, peer.leave))
    return variants, peers


@contextmanager
def servers() -> Iterator[tuple[str, str]]:
    """(collector URL, sink URL), both subprocesses on loopback, stopped at the end."""
    from tests.support import start_collector

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-peers-")))
        collector = stack.enter_context(start_collector(tmp / "events.db"))
        sink_url = stack.enter_context(_peers.sink())
        yield collector.url, sink_url


# --------------------------------------------------------------------------------------------------------------------
# 1. track() per call, 2. vs number of properties


def bench_track(variants: list[Variant], n: int, rounds: int) -> tuple[str, dict[str, float]]:
    res = measure(variants, LITERAL, n, rounds)
    ours_w, ours_c = med(res["sqreen_mw"][0]), med(res["sqreen_mw"][1])
    floor_w, floor_c = med(res["floor"][0]), med(res["floor"][1])
    rows = []
    for v in variants:
        w, c = med(res[v.name][0]), med(res[v.name][1])
        rows.append(
            (
                v.name,
                f"{w / US:.2f}",
                f"{min(res[v.name][0]) / US:.2f}..{max(res[v.name][0]) / US:.2f}",
                f"{c / US:.2f}",
                f"{w / ours_w:.2f}x",
                f"{c / ours_c:.2f}x",
                f"{w / floor_w:.1f}x",
                f"{c / floor_c:.1f}x",
            )
        )
    headers = ("variant", "wall µs", "wall min..max", "thread-CPU µs", "÷ ours wall", "÷ ours CPU", "÷ floor wall",
               "÷ floor CPU")
    title = (f"track() per call, 3 properties: {rounds} rounds x {n:,} calls, medians "
             "(ours = sqreen_mw outside a request)")
    return title + "\n" + table(headers, rows), {v.name: med(res[v.name][1]) for v in variants}


def props_literal(k: int) -> str:
    kinds = ('"value-{i}"', "{i}", "True", "{i}.5")
    items = [f'"prop_{i}": {kinds[i % 4].format(i=i)}' for i in range(k)]
    return "{" + ", ".join(items) + "}"


def bench_props(variants: list[Variant], sizes: list[int], n: int, rounds: int) -> tuple[str, dict[str, list[float]]]:
    curves: dict[str, list[float]] = {v.name: [] for v in variants}
    for k in sizes:
        res = measure(variants, props_literal(k), n, rounds)
        for v in variants:
            curves[v.name].append(med(res[v.name][1]))
    headers = ("variant", *(f"{k} props" for k in sizes))
    rows = [(name, *(f"{x / US:.2f}" for x in xs)) for name, xs in curves.items()]
    title = (f"track() thread-CPU µs per call vs number of properties (literal dict of str/int/bool/float values): "
             f"{rounds} rounds x {n:,} calls, medians")
    return title + "\n" + table(headers, rows), curves


# --------------------------------------------------------------------------------------------------------------------
# 3. middleware per request, in process

BODY = b'{"item": "book", "quantity": 2, "gift": false}'


def _event(variant: str, sink_url: str) -> Callable[[], Any]:
    props = {"item": "book", "quantity": 2}
    if variant == "sqreen_mw":
        track = sqreen_mw.track
        return lambda: track(EVENT, properties=props)
    emit = _peers.request_emit(variant, sink_url)
    return lambda: emit(EVENT, props)


def asgi_apps(variant: str, events: int, sink_url: str) -> dict[str, Any]:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from sqreen_mw.asgi import SqreenMiddleware

    fire = _event(variant, sink_url) if events else None

    async def hello(request: Request) -> PlainTextResponse:
        if fire:
            fire()
        return PlainTextResponse("Hello, world!")

    async def order(request: Request) -> PlainTextResponse:
        await request.json()
        if fire:
            fire()
        return PlainTextResponse("ok")

    async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] == "POST":
            chunks = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            json.loads(b"".join(chunks))
        if fire:
            fire()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"13")]})
        await send({"type": "http.response.body", "body": b"Hello, world!"})

    routes = [Route("/", hello), Route("/api/orders", order, methods=["POST"])]
    if variant == "bare":
        return {"starlette": Starlette(routes=routes), "raw asgi": raw}
    if variant == "sqreen_mw":
        return {"starlette": Starlette(routes=routes, middleware=[Middleware(SqreenMiddleware)]),
                "raw asgi": SqreenMiddleware(raw)}
    return {"starlette": _peers.wrap_asgi(variant, Starlette(routes=routes), sink_url),
            "raw asgi": _peers.wrap_asgi(variant, raw, sink_url)}


def wsgi_apps(variant: str, events: int, sink_url: str) -> dict[str, Any]:
    from flask import Flask, request

    from sqreen_mw.wsgi import SqreenMiddleware

    fire = _event(variant, sink_url) if events else None

    def raw(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "POST":
            json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        if fire:
            fire()
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "13")])
        return [b"Hello, world!"]

    app = Flask(f"bench-{variant}-{events}")

    @app.get("/")
    def hello() -> str:
        if fire:
            fire()
        return "Hello, world!"

    @app.post("/api/orders")
    def order() -> str:
        request.get_json()
        if fire:
            fire()
        return "ok"

    if variant == "bare":
        return {"flask": app, "raw wsgi": raw}
    if variant == "sqreen_mw":
        app.wsgi_app = SqreenMiddleware(app.wsgi_app)  # type: ignore[method-assign]
        return {"flask": app, "raw wsgi": SqreenMiddleware(raw)}
    app.wsgi_app = _peers.wrap_wsgi(variant, app.wsgi_app, sink_url)  # type: ignore[method-assign]
    return {"flask": app, "raw wsgi": _peers.wrap_wsgi(variant, raw, sink_url)}


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    if message["type"] == "http.response.start" and message["status"] != 200:
        raise AssertionError(message)


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
    if status != "200 OK":
        raise AssertionError(status)
    return lambda data: None


def bench_middleware(
    variants: list[str], sink_url: str, rounds: int, round_ms: float, flushers: dict[str, Callable[[], Any]]
) -> tuple[str, dict[tuple[str, str], dict[str, float]]]:
    """For each app and method: bare (0 events) vs each variant with 0 and 1 event per request."""
    from bench_sdk import asgi_scope, wsgi_environ

    cells = [("bare", 0)] + [(v, e) for v in variants if v != "bare" for e in (0, 1)]
    apps = {(v, e): {**asgi_apps(v, e, sink_url), **wsgi_apps(v, e, sink_url)} for v, e in cells}
    scopes = {"GET": asgi_scope("GET", "/", b""), "POST": asgi_scope("POST", "/api/orders", b"", body=BODY)}
    envs = {"GET": wsgi_environ("GET", "/"), "POST": wsgi_environ("POST", "/api/orders", BODY)}
    lp = asyncio.new_event_loop()
    rows = []
    summary: dict[tuple[str, str], dict[str, float]] = {}
    try:
        for app_name in ("starlette", "raw asgi", "flask", "raw wsgi"):
            for method in ("GET", "POST"):
                loops = {}
                for cell in cells:
                    app = apps[cell][app_name]
                    if app_name in ("starlette", "raw asgi"):
                        loops[cell] = asgi_loop(app, scopes[method], lp, _receive, _send, WALL_AND_CPU)
                    else:
                        loops[cell] = wsgi_loop(app, envs[method], _start_response, BODY, WALL_AND_CPU)
                # calibrate: about round_ms per round for each cell, 20 requests at least
                counts = {}
                for cell, fn in loops.items():
                    fn(20)
                    wall, _ = fn(50)
                    counts[cell] = max(20, int(round_ms * 1e6 / max(wall / 50, 1)))
                    _flush(cell[0], flushers)
                keys = {f"{v}/{e}": (v, e) for v, e in cells}
                raw = interleave({k: loops[c] for k, c in keys.items()}, {k: counts[c] for k, c in keys.items()},
                                 rounds, warmup=0)
                res = {c: [(w / counts[c], cpu / counts[c]) for w, cpu in raw[k]] for k, c in keys.items()}
                for cell in cells:  # once per group: the senders run alongside the rounds, as in production
                    _flush(cell[0], flushers)
                print(f"  middleware: {app_name} {method} measured", file=sys.stderr, flush=True)
                bare_w = med([w for w, _ in res[("bare", 0)]])
                bare_c = med([c for _, c in res[("bare", 0)]])
                for cell in cells:
                    w = med([x for x, _ in res[cell]])
                    c = med([y for _, y in res[cell]])
                    label = cell[0] if cell[0] == "bare" else f"{cell[0]}, {cell[1]} event"
                    rows.append((f"{app_name} {method}", label, f"{w / US:.1f}", f"{c / US:.1f}",
                                 f"{(c - bare_c) / US:+.1f}", f"{bare_w / w:.2f}", f"{bare_c / c:.2f}"))
                    summary[(f"{app_name} {method}", label)] = {"cpu": c, "ratio": bare_c / c}
    finally:
        lp.close()
    headers = ("app", "variant", "wall µs/req", "CPU µs/req", "Δ CPU vs bare", "÷bare thr. (wall)",
               "÷bare thr. (CPU)")
    title = (f"middleware per request, in process ({rounds} rounds of ~{round_ms:.0f} ms per cell, medians; "
             "ratio = bare time / variant time = the share of bare throughput kept)")
    return title + "\n" + table(headers, rows), summary


def _flush(variant: str, flushers: dict[str, Callable[[], Any]]) -> None:
    fn = flushers.get(variant)
    if fn:
        fn()


# --------------------------------------------------------------------------------------------------------------------
# 4. memory


RSS_CHILD = """
import logging, os, sys, time
import sqreen_mw
logging.getLogger("sqreen_mw").setLevel(logging.CRITICAL)
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
client = sqreen_mw.init(token="bench-token", url="http://127.0.0.1:9", install_signal_handler=False)
track = sqreen_mw.track
for _ in range(1000):
    track("order.placed", properties={"item": "book", "quantity": 2, "gift": False})
time.sleep(0.2)
before = rss()
t0 = time.perf_counter()
for i in range(N):
    track("order.placed", properties={"item": "book", "quantity": i, "gift": False})
elapsed = time.perf_counter() - t0
stats = client.statistics()
print(json.dumps({"before": before, "after": rss(), "queued": stats["queued"], "queued_bytes": stats["queued_bytes"],
                  "dropped": stats["dropped"], "tracked": stats["tracked"], "elapsed": elapsed,
                  "max_events": client.queue.max_events, "max_bytes": client.queue.max_bytes}))
os._exit(0)
"""


def bench_memory(calls: int) -> str:
    code = f"import json\nN = {calls}\n{RSS_CHILD}"
    out = subprocess.run(  # noqa: S603 - this interpreter, fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    if out.returncode:
        return f"memory: the child failed: {out.stderr.strip()[-500:]}"
    m = json.loads(out.stdout.strip().splitlines()[-1])
    dropped = sum(m["dropped"].values()) if isinstance(m["dropped"], dict) else m["dropped"]
    lines = [
        f"memory: {calls:,} track() calls (3 properties) with the collector down (nothing listens at the URL), "
        "default queue bounds",
        f"  RSS before {m['before'] / 2**20:.1f} MiB, after {m['after'] / 2**20:.1f} MiB "
        f"(+{(m['after'] - m['before']) / 2**20:.1f} MiB); queued {m['queued']:,} events "
        f"({m['queued_bytes'] / 2**20:.1f} MiB by the queue's estimate; bounds {m['max_events']:,} events / "
        f"{m['max_bytes'] / 2**20:.0f} MiB), dropped {dropped:,} ({m['dropped']}); "
        f"{m['elapsed'] / calls * 1e6:.2f} µs per call on average",
    ]
    from bench_sdk import Report, print_table
    from bench_sdk import bench_memory as sdk_bytes

    report = Report()
    sdk_bytes(report, 20_000, 2_000, False)
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_table(report)
    lines.append("bytes per queued event (bench_sdk.py's tracemalloc measurement, 20,000 events):")
    lines += ["  " + line for line in buf.getvalue().splitlines()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# 4b. delivery: flush time of N queued events over loopback, vs batch size (the collector's ingest as the SDK feeds it)

FLUSH_CHILD = """
import json, logging, os, sys, time
import sqreen_mw
logging.getLogger("sqreen_mw").setLevel(logging.CRITICAL)
client = sqreen_mw.init(token=TOKEN, url=URL, batch_size=BATCH, max_queue_events=N + 10_000, max_queue_bytes=2**31,
                        heartbeat_interval=3600, install_signal_handler=False)
client.track("order.placed", properties={"item": "book", "quantity": 0, "gift": False})
assert client.flush(30), client.statistics()  # the flusher runs and is logged in
print("warm", flush=True)
sys.stdin.readline()  # the collector is stopped now: the first full batch waits in flight, the rest stays queued
t0 = time.perf_counter()
for i in range(N):
    client.track("order.placed", properties={"item": "book", "quantity": i, "gift": False})
print("queued", time.perf_counter() - t0, len(client.queue), flush=True)
sys.stdin.readline()  # the collector runs again
c0, t0 = time.process_time(), time.perf_counter()
ok = client.flush(300)
elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
stats = client.statistics()
print(json.dumps({"ok": ok, "elapsed": elapsed, "cpu": cpu, "sent": stats["sent"], "retries": stats["retries"],
                  "dropped": stats["dropped"]}), flush=True)
os._exit(0)
"""


def _flush_once(batch: int, events: int, tmp: Path) -> dict[str, Any]:
    import sqlite3

    from tests.support import start_collector

    db = tmp / f"flush-{batch}.db"
    with start_collector(db) as collector:
        assert collector.process is not None
        pid = collector.process.pid
        code = f"TOKEN = {_peers_api_key()!r}\nURL = {collector.url!r}\nBATCH = {batch}\nN = {events}\n{FLUSH_CHILD}"
        proc = subprocess.Popen(  # noqa: S603 - this interpreter, fixed code
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            if proc.stdout.readline().strip() != "warm":
                raise RuntimeError(f"batch {batch}: the child did not start")
            os.kill(pid, signal.SIGSTOP)
            try:
                proc.stdin.write("queue\n")
                proc.stdin.flush()
                _, queue_s, queued = proc.stdout.readline().split()
                cpu0 = tree_cpu(pid)
            finally:
                os.kill(pid, signal.SIGCONT)
            proc.stdin.write("flush\n")
            proc.stdin.flush()
            result: dict[str, Any] = json.loads(proc.stdout.readline())
            result["collector_cpu"] = tree_cpu(pid) - cpu0
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        result.update(queue_s=float(queue_s), queued=int(queued))
    with sqlite3.connect(db) as conn:
        result["stored"] = conn.execute("SELECT count(*) FROM events").fetchone()[0] - 1  # less the warm-up event
    return result


def bench_flush(batches: list[int], events: int) -> tuple[str, dict[int, float]]:
    rows = []
    rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-peers-flush-") as tmp_name:
        for batch in batches:
            r = _flush_once(batch, events, Path(tmp_name))
            dropped = sum(r["dropped"].values()) if isinstance(r["dropped"], dict) else r["dropped"]
            rates[batch] = events / r["elapsed"]
            rows.append((f"{batch:,}", f"{r['queued']:,}", f"{r['elapsed']:.2f}", f"{events / r['elapsed']:,.0f}",
                         f"{r['cpu'] / events * 1e6:.1f}", f"{r['collector_cpu'] / events * 1e6:.1f}",
                         f"{r['stored']:,} / {events:,}", str(r["retries"]), f"{dropped:,}",
                         "yes" if r["ok"] else "NO"))
            print(f"  flush: batch {batch:,} measured", file=sys.stderr, flush=True)
    headers = ("batch size", "queued at start", "flush s", "events/s", "SDK CPU µs/event", "collector CPU µs/event",
               "stored / tracked", "retries", "dropped", "flush() ok")
    title = (f"delivery: {events:,} track() calls queued while the collector was stopped (SIGSTOP; the first full "
             "batch waits in flight), then the collector resumed and client.flush() timed; default settings but "
             "batch_size; a fresh collector (SQLite) per row; SDK CPU = the app process's (the flusher: serialize, "
             "scrub, gzip, HTTP), collector CPU = the server process's, both over the flush")
    return title + "\n" + table(headers, rows), rates


# --------------------------------------------------------------------------------------------------------------------
# 5. callgrind


def child(variant: str, calls: int, collector_url: str, sink_url: str) -> int:
    """Inside valgrind: set up one variant, warm it up, make ``calls`` calls, flush from a helper thread, exit."""
    _peers.quiet_peers()
    if variant == "floor":
        v = floor_variant()
    elif variant.startswith("sqreen_mw"):
        v = {x.name: x for x in sqreen_variants(collector_url)}[variant]
    else:
        notes: list[str] = []
        vs, _ = peer_variants(sink_url, [variant], notes)
        if not vs:
            print(notes[0], file=sys.stderr)
            return 3
        v = vs[0]
    run = loop_of(v, LITERAL)
    v.enter()
    run(200)
    v.leave()
    v.flush()
    time.sleep(0.5)
    v.enter()
    run(calls)
    v.leave()
    t = threading.Thread(target=v.flush)
    t.start()
    t.join()
    sys.stdout.flush()
    os._exit(0)


def _totals(path: Path) -> int:
    text = path.read_text(errors="replace")
    match = re.search(r"^(?:totals|summary):\s*(\d+)", text, re.M)
    return int(match.group(1)) if match else 0


def callgrind_run(variant: str, calls: int, collector_url: str, sink_url: str, tmp: Path) -> tuple[int, int]:
    """(main thread, all threads) instructions of one child run."""
    out = tmp / f"{variant.replace(' ', '_')}-{calls}"
    out.mkdir()
    cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}/cg.out",
           sys.executable, str(Path(__file__)), "--child", variant, "--calls", str(calls),
           "--collector-url", collector_url, "--sink-url", sink_url]
    env = {**os.environ, "PYTHONHASHSEED": "0", **_peers.peer_env(sink_url)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)  # noqa: S603
    if proc.returncode:
        raise RuntimeError(f"{variant}: valgrind run failed ({proc.returncode}): {proc.stderr[-800:]}")
    files = sorted(out.glob("cg.out*"))
    per_thread = {f.name: _totals(f) for f in files}
    main = [v for k, v in per_thread.items() if k.endswith("-01")]
    return (main[0] if main else 0), sum(per_thread.values())


def bench_callgrind(variants: list[str], calls: int, collector_url: str, sink_url: str) -> tuple[str, dict[str, int]]:
    if not shutil.which("valgrind"):
        return "callgrind: valgrind is not installed (apt-get install valgrind)", {}
    rows = []
    result: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-peers-cg-") as tmp_name:
        tmp = Path(tmp_name)
        for variant in variants:
            t0 = time.perf_counter()
            try:
                main_n, all_n = callgrind_run(variant, calls, collector_url, sink_url, tmp)
                main_0, all_0 = callgrind_run(variant, 0, collector_url, sink_url, tmp)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                rows.append((variant, "failed", str(exc)[:80], "", "", ""))
                continue
            main = (main_n - main_0) / calls
            total = (all_n - all_0) / calls
            result[variant] = round(main)
            rows.append((variant, f"{main:,.0f}", f"{total:,.0f}", "", "", f"{time.perf_counter() - t0:.0f} s"))
            print(f"  callgrind {variant}: {main:,.0f} main-thread / {total:,.0f} all-thread instructions per call",
                  file=sys.stderr, flush=True)
    ours = result.get("sqreen_mw")
    floor = result.get("floor")
    final = []
    for name, main_s, all_s, _, _, took in rows:
        ratio_ours = f"{result[name] / ours:.2f}x" if ours and name in result else ""
        ratio_floor = f"{result[name] / floor:.1f}x" if floor and name in result else ""
        final.append((name, main_s, all_s, ratio_ours, ratio_floor, took))
    headers = ("variant", "instr/call main thread", "instr/call all threads", "main ÷ ours", "main ÷ floor", "took")
    title = (f"track() instructions per call (callgrind, ({calls:,}-call run - 0-call run) / {calls:,}, 3 properties; "
             "all threads = with the client's own sender: serialization, compression, HTTP, flushed before exit)")
    return title + "\n" + table(headers, final), result


# --------------------------------------------------------------------------------------------------------------------
# 6. plots


def plots(directory: Path, track_cpu: dict[str, float], curves: dict[str, list[float]], sizes: list[int],
          instructions: dict[str, int], delivery: dict[int, float]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["plots skipped: matplotlib is not installed (pip install -r benchmarks/requirements-peers.txt)"]
    directory.mkdir(parents=True, exist_ok=True)
    written = []

    def bars(values: dict[str, float], label: str, filename: str) -> None:
        fig, ax = plt.subplots(figsize=(8, 4))
        names = sorted(values, key=values.__getitem__)
        ax.barh(names, [values[n] for n in names])
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_title("track()-equivalent, 3 properties")
        fig.tight_layout()
        fig.savefig(directory / filename, dpi=120)
        plt.close(fig)
        written.append(str(directory / filename))

    if track_cpu:
        bars({k: v / US for k, v in track_cpu.items()}, "thread-CPU µs per call (log scale)", "track_per_peer.png")
    if instructions:
        bars({k: float(v) for k, v in instructions.items()},
             "instructions per call, main thread (callgrind, log scale)", "track_instructions.png")
    if curves:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name, ys in curves.items():
            ax.plot(sizes, [y / US for y in ys], marker="o", label=name)
        ax.set_yscale("log")
        ax.set_xlabel("number of properties")
        ax.set_ylabel("thread-CPU µs per call (log scale)")
        ax.set_title("track() cost vs number of properties")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(directory / "track_vs_properties.png", dpi=120)
        plt.close(fig)
        written.append(str(directory / "track_vs_properties.png"))
    if delivery:
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot(list(delivery), list(delivery.values()), marker="o")
        ax.set_xscale("log")
        ax.set_xlabel("batch_size (events per batch, log scale)")
        ax.set_ylabel("events delivered per second")
        ax.set_title("flush of queued events to the collector over loopback")
        fig.tight_layout()
        fig.savefig(directory / "delivery_vs_batch_size.png", dpi=120)
        plt.close(fig)
        written.append(str(directory / "delivery_vs_batch_size.png"))
    return written


# --------------------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small counts: under a minute")
    parser.add_argument("--callgrind", action="store_true", help="instructions per call under valgrind, not timings")
    parser.add_argument("--only", default="track,props,middleware,flush,memory",
                        help="comma-separated sections: track, props, middleware, flush, memory (default: all)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    parser.add_argument("--rounds", type=int, help="rounds per measurement (default 15, quick 5)")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="also write PNG charts into DIR")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--collector-url", help=argparse.SUPPRESS)
    parser.add_argument("--sink-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.calls, args.collector_url, args.sink_url)

    wanted = [p for p in args.peers.split(",") if p]
    sections = set(args.only.split(","))
    rounds = args.rounds or (5 if args.quick else 15)
    load = os.getloadavg()
    started = time.perf_counter()
    versions = ", ".join(f"{p} {_peers.peer_version(p)}" for p in wanted)
    print(f"sqreen_mw {sqreen_mw.__version__} ({build()}) | Python {platform.python_version()} | "
          f"{os.cpu_count()} CPUs | load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} | {versions} | "
          f"{'quick' if args.quick else 'full'}{' callgrind' if args.callgrind else ''} run", flush=True)
    notes: list[str] = []
    outputs: list[str] = []
    track_cpu: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    instructions: dict[str, int] = {}
    delivery: dict[int, float] = {}
    sizes = [0, 16] if args.quick else [0, 1, 2, 4, 8, 16]

    with servers() as (collector_url, sink_url):
        os.environ.update({k: v for k, v in _peers.peer_env(sink_url).items() if k not in os.environ})
        _peers.quiet_peers()
        if args.callgrind:
            calls = 200 if args.quick else 1000
            names = ["floor", "sqreen_mw", "sqreen_mw in a request", *wanted]
            text, instructions = bench_callgrind(names, calls, collector_url, sink_url)
            outputs.append(text)
        else:
            peers_v, peers = peer_variants(sink_url, wanted, notes)
            variants = [floor_variant(), *sqreen_variants(collector_url), *peers_v]
            try:
                if "track" in sections:
                    n = 300 if args.quick else 1000
                    text, track_cpu = bench_track(variants, n, rounds)
                    outputs.append(text)
                    print(text + "\n", flush=True)
                if "props" in sections:
                    n = 200 if args.quick else 500
                    text, curves = bench_props(variants, sizes, n, max(3, rounds // 2))
                    outputs.append(text)
                    print(text + "\n", flush=True)
                if "middleware" in sections:
                    mw = ["sqreen_mw", *(p for p in _peers.MIDDLEWARE_PEERS if p in {x.name for x in peers})]
                    flushers = {"sqreen_mw": lambda: sqreen_mw.flush(10)}
                    flushers.update({p.name: p.flush for p in peers})
                    text, _ = bench_middleware(mw, sink_url, max(3, rounds // 2 + 1), 4 if args.quick else 8,
                                               flushers)
                    outputs.append(text)
                    print(text + "\n", flush=True)
                stats = sqreen_mw.get_client().statistics()
                if stats["dropped"]:
                    notes.append(f"sqreen_mw dropped events during the run: {stats['dropped']}")
                notes.append(f"sqreen_mw: {stats['tracked']:,} tracked, {stats['sent']:,} sent to the collector")
            finally:
                for peer in peers:
                    try:
                        peer.close()
                    except Exception as exc:  # a peer failing to shut down must not hide the tables
                        notes.append(f"{peer.name} shutdown: {exc!r}")
                sqreen_mw.shutdown(2)
            notes.append(f"sink received {_peers.sink_stats(sink_url)}")
    if "flush" in sections and not args.callgrind:
        text, delivery = bench_flush([500, 1000] if args.quick else [100, 500, 1000, 2000, 5000],
                                     20_000 if args.quick else 100_000)
        outputs.append(text)
        print(text + "\n", flush=True)
    if "memory" in sections and not args.callgrind:
        text = bench_memory(200_000 if args.quick else 1_000_000)
        outputs.append(text)
        print(text + "\n", flush=True)
    if args.callgrind:
        print("\n" + "\n\n".join(outputs))
    if args.plots:
        notes += [f"wrote {p}" for p in plots(args.plots, track_cpu, curves, sizes, instructions, delivery)]
    for note in notes:
        print(note)
    load = os.getloadavg()
    print(f"{time.perf_counter() - started:.0f} s; load at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    # SIGTERM (timeout, kill) ends through sys.exit: the servers started above are stopped on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())
