"""sqreen_mw SDK micro-benchmarks: ``track()`` cost, middleware overhead per request, one tracked event per request
(hello apps, bare vs middleware + 1 ``track()``), bytes per queued event; ``--callgrind``: instructions per call.

Run ``python benchmarks/bench_sdk.py`` (about 30 s) or ``python benchmarks/bench_sdk.py --quick`` (< 20 s, a smoke
check for CI). Every sqreen_mw number is printed next to a bare baseline measured in the same run, as absolute values
and as a delta / ratio, against the budgets of DESIGN §9. See ``benchmarks/README.md`` for what each row means.

Method: each variant runs ``rounds`` times ``n`` calls; a round's value is its total time divided by ``n`` (timed with
``time.perf_counter_ns`` around the whole loop, gc disabled, after a warm-up); the reported value is the median of the
round values. Variants that are compared are interleaved round by round (order alternating), so drift on a shared
machine hits both sides; a delta is the median of the per-round paired differences.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import logging
import os
import platform
import queue
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from _timing import asgi_loop, build, interleave, wsgi_loop
from _timing import first as first_clock

import sqreen_mw
from sqreen_mw._body import ASGIBodyTee
from sqreen_mw._context import ASGI, RequestContext, current_context

#: The clock of every timed loop: ``time.perf_counter_ns`` (wall) by default; ``--clock thread`` switches to
#: ``time.thread_time_ns`` (this thread's CPU time), which does not count the time the thread was preempted.
CLOCK = time.perf_counter_ns

# The event of budget 1, in one place.
EVENT = "order.placed"
#: Any token makes the client queue events; nothing listens at BENCH_URL, so nothing is ever sent.
BENCH_TOKEN = "bench-token"  # noqa: S105 - not a secret
BENCH_URL = "http://127.0.0.1:9"
US = 1000.0  # ns per µs

# --------------------------------------------------------------------------------------------------------------------
# measurement helpers


@dataclass
class Row:
    metric: str
    value: str
    baseline: str
    delta: str
    budget: str
    result: str
    spread: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def section(self, title: str) -> None:
        self.rows.append(Row(f"-- {title}", "", "", "", "", ""))

    def add(self, *args: str, spread: str = "") -> None:
        self.rows.append(Row(*args, spread=spread))


def timed(fn: Callable[[int], None]) -> Callable[[int], int]:
    """Wrap a loop ``fn(n)`` so it returns its own elapsed ns."""

    def run(n: int) -> int:
        t0 = CLOCK()
        fn(n)
        return CLOCK() - t0

    return run


def measure(
    variants: dict[str, Callable[[int], int]],
    n: int,
    rounds: int,
    before: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Per-call ns of each variant for each round; variants interleaved, order alternating between rounds."""
    res = interleave(variants, n, rounds, warmup=max(n // 5, 50), before=before)
    return {name: [elapsed / n for elapsed in values] for name, values in res.items()}


def med(values: list[float]) -> float:
    return statistics.median(values)


def paired_delta(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def us(ns: float) -> str:
    return f"{ns / US:.3f} µs"


def spread(values: list[float]) -> str:
    return f"{min(values) / US:.3f}..{max(values) / US:.3f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "OVER"


# --------------------------------------------------------------------------------------------------------------------
# realistic request inputs

USER_AGENT = b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def asgi_scope(
    method: str = "GET",
    path: str = "/api/orders/42",
    query: bytes = b"page=2&sort=desc",
    client_ip: str = "10.0.0.2",
    forwarded_for: bytes = b"203.0.113.7",
    body: bytes = b"",
) -> dict[str, Any]:
    """An HTTP scope as uvicorn builds it behind a reverse proxy (peer = the proxy, client in X-Forwarded-For)."""
    headers = [
        (b"host", b"shop.example.com"),
        (b"user-agent", USER_AGENT),
        (b"accept", b"application/json, text/plain, */*"),
        (b"accept-language", b"en-US,en;q=0.9"),
        (b"accept-encoding", b"gzip, deflate, br"),
        (b"cookie", b"session=6f1c2b7e9a; theme=dark"),
        (b"x-forwarded-for", forwarded_for),
        (b"x-forwarded-proto", b"https"),
    ]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("10.0.0.5", 8000),
        "client": (client_ip, 51712),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers,
        "state": {},
    }


def wsgi_environ(method: str = "GET", path: str = "/", body: bytes = b"") -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "10.0.0.5",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.2",
        "REMOTE_PORT": "51712",
        "HTTP_HOST": "shop.example.com",
        "HTTP_USER_AGENT": USER_AGENT.decode(),
        "HTTP_ACCEPT": "application/json, text/plain, */*",
        "HTTP_ACCEPT_LANGUAGE": "en-US,en;q=0.9",
        "HTTP_ACCEPT_ENCODING": "gzip, deflate, br",
        "HTTP_X_FORWARDED_FOR": "203.0.113.7",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if body:
        env["CONTENT_TYPE"] = "application/json"
        env["CONTENT_LENGTH"] = str(len(body))
    return env


POST_BODY = b'{"item": "book", "quantity": 2, "gift": false}'


async def receive() -> dict[str, Any]:
    """ASGI ``receive`` of the POST requests: the whole JSON body at once (GET handlers never call it)."""
    return {"type": "http.request", "body": POST_BODY, "more_body": False}


async def send(message: dict[str, Any]) -> None:
    pass


def status_recorder(statuses: list[Any]) -> Callable[[dict[str, Any]], Any]:
    """An ASGI ``send`` that appends the response status to ``statuses``."""

    async def check_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    return check_send


# --------------------------------------------------------------------------------------------------------------------
# 1. track()


def bare_call(
    event_name: str,
    options: Any = None,
    /,
    *,
    properties: Any = None,
    user_identifiers: Any = None,
    timestamp: Any = None,
    collect_body: bool = False,
    request: Any = None,
) -> bool:
    """Same signature as ``sqreen_mw.track``, does nothing."""
    return True


def bench_track(client: sqreen_mw.Client, report: Report, n: int, rounds: int, contexts: int) -> None:
    track = sqreen_mw.track
    client_track = client.track
    q_box: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue()]

    def drain() -> None:
        client.queue.take(len(client.queue))
        client.queue.done()
        q_box[0] = queue.SimpleQueue()

    def floor_queue(n: int) -> None:
        put = q_box[0].put
        for _ in range(n):
            put({"item": "book", "quantity": 2, "gift": False})

    def floor_call(n: int) -> None:
        f = bare_call
        for _ in range(n):
            f(EVENT, properties={"item": "book", "quantity": 2, "gift": False})

    def track_outside(n: int) -> None:
        for _ in range(n):
            track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})

    def client_track_outside(n: int) -> None:
        for _ in range(n):
            client_track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})

    # A client whose queue is full (1,000 events): every call drops the oldest event, as an overloaded app's does
    full = sqreen_mw.Client(token=BENCH_TOKEN, url=BENCH_URL, max_queue_events=1_000, heartbeat_interval=3600,
                            install_signal_handler=False)
    full_track = full.track
    for _ in range(1_000):
        full_track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})

    def client_track_full(n: int) -> None:
        for _ in range(n):
            full_track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})

    steady_ctx = RequestContext(ASGI, asgi_scope(), None)
    steady_ctx.info(client.resolver)  # the first track of the request already happened

    def track_inside(n: int) -> None:
        token = current_context.set(steady_ctx)
        try:
            for _ in range(n):
                track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})
        finally:
            current_context.reset(token)

    # A POST whose JSON body the app read through the middleware's tee, asked for with collect_body=True (the body is
    # parsed and attached to each event; scrubbing it is the flusher's work)
    body_tee = ASGIBodyTee(_never_receive, client.max_body_bytes)
    body_tee.feed(POST_BODY, True)
    body_ctx = RequestContext(ASGI, asgi_scope("POST", "/api/orders", b"", body=POST_BODY), body_tee)
    body_ctx.info(client.resolver)

    def track_body(n: int) -> None:
        token = current_context.set(body_ctx)
        try:
            for _ in range(n):
                track(EVENT, properties={"item": "book", "quantity": 2, "gift": False}, collect_body=True)
        finally:
            current_context.reset(token)

    token = current_context.set(body_ctx)
    try:
        track(EVENT, properties={}, collect_body=True)
        record = client.queue.take(len(client.queue))[-1]
        client.queue.done()
    finally:
        current_context.reset(token)
    if record[7] != json.loads(POST_BODY):  # (…, captured, body, size, blocked): the body must be in the event
        raise SystemExit(f"track(collect_body=True) did not attach the request body: {record!r}")

    dropped_before = dict(client.queue.dropped)
    res = measure(
        {
            "queue": timed(floor_queue),
            "call": timed(floor_call),
            "outside": timed(track_outside),
            "client_outside": timed(client_track_outside),
            "client_full": timed(client_track_full),
            "inside": timed(track_inside),
            "body": timed(track_body),
        },
        n,
        rounds,
        before=drain,
    )

    # First track of a request (computes and caches the request's default properties) vs the next ones. Per round:
    # K fresh contexts; A = bind + track + unbind on each (first track), B = the same again (now cached),
    # C = bind + unbind only. first = A - C, next = B - C.
    contexts_box: list[list[RequestContext]] = []
    base_get = asgi_scope()
    base_post = asgi_scope("POST", "/api/orders", b"", body=POST_BODY)

    def fresh(kind: str) -> list[RequestContext]:
        out = []
        for _ in range(contexts):
            if kind == "get":
                out.append(RequestContext(ASGI, dict(base_get), None))
            else:  # a POST whose JSON body the app read through the middleware's tee
                tee = ASGIBodyTee(_never_receive, client.max_body_bytes)
                tee.feed(POST_BODY, True)
                out.append(RequestContext(ASGI, dict(base_post), tee))
        return out

    def per_request(do_track: bool) -> Callable[[int], int]:
        def run(n: int) -> int:
            ctxs = contexts_box[0]
            set_, reset = current_context.set, current_context.reset
            t0 = CLOCK()
            if do_track:
                for ctx in ctxs:
                    token = set_(ctx)
                    track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})
                    reset(token)
            else:
                for ctx in ctxs:
                    token = set_(ctx)
                    reset(token)
            return CLOCK() - t0

        return run

    first: dict[str, dict[str, list[float]]] = {}
    for kind in ("get", "post"):
        a: list[float] = []
        b: list[float] = []
        c: list[float] = []
        for r in range(rounds + 1):  # round 0 is the warm-up
            drain()
            contexts_box[:] = [fresh(kind)]
            gc.collect()
            gc.disable()
            try:
                ta = per_request(True)(contexts)
                tb = per_request(True)(contexts)
                tc = per_request(False)(contexts)
            finally:
                gc.enable()
            if r:
                a.append(ta / contexts)
                b.append(tb / contexts)
                c.append(tc / contexts)
        first[kind] = {"first": paired_delta(a, c), "next": paired_delta(b, c)}
    drain()
    if client.queue.dropped != dropped_before:
        raise SystemExit(f"the queue shed events during the track benchmark: {client.queue.dropped}")

    fq, fc = med(res["queue"]), med(res["call"])
    report.section(f"track(): {rounds} rounds x {n:,} calls, median of round means per call")
    report.add("floor: SimpleQueue().put(dict)", us(fq), "", "", "", "", spread=spread(res["queue"]))
    report.add("floor: bare call, same args", us(fc), "", "", "", "", spread=spread(res["call"]))

    def track_row(metric: str, values: list[float], budget_ns: float | None) -> None:
        v = med(values)
        rel = f"{v / fq:.1f}x queue, {v / fc:.1f}x call"
        report.add(
            metric,
            us(v),
            us(fq),
            f"+{(v - fq) / US:.3f} µs; {rel}",
            "≤ 2 µs" if budget_ns else "info",
            verdict(v <= budget_ns) if budget_ns else "",
            spread=spread(values),
        )

    track_row("track() outside a request", res["outside"], 2000)
    track_row("  client.track() (no module wrapper)", res["client_outside"], None)
    track_row("  client.track(), full queue (drops the oldest)", res["client_full"], None)
    if not full.queue.dropped.get("queue_full"):
        raise SystemExit("the full queue dropped nothing")
    full.shutdown(timeout=0.1)
    track_row("track() in a request, steady state", res["inside"], 2000)
    track_row(f"  collect_body=True (POST, {len(POST_BODY)} B JSON body read)", res["body"], None)
    for kind, label in (("get", "GET"), ("post", "POST+JSON body")):
        first_v, next_v = first[kind]["first"], first[kind]["next"]
        track_row(f"track() in a request, 1st call ({label})", first_v, None)
        track_row(f"  next calls, same requests ({label})", next_v, 2000)
        amortized = [(f + 9 * x) / 10 for f, x in zip(first_v, next_v, strict=True)]
        track_row(f"  mean of 10 tracks/request ({label})", amortized, 2000)
    report.notes.append(
        f"track() first-call rows: {contexts:,} fresh request contexts per round; 1st call = (bind+track+unbind) "
        "- (bind+unbind); 'next calls' = the same on the now-cached contexts."
    )


async def _never_receive() -> dict[str, Any]:
    raise AssertionError("not called")


# --------------------------------------------------------------------------------------------------------------------
# 2. middleware overhead


def build_asgi_apps(client: sqreen_mw.Client) -> dict[str, Any]:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from sqreen_mw.asgi import SqreenMiddleware

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("Hello, world!")

    async def order(request: Request) -> PlainTextResponse:
        await request.body()
        return PlainTextResponse("ok")

    routes = [Route("/", hello), Route("/api/orders", order, methods=["POST"])]

    async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] == "POST":
            more = True
            while more:
                message = await receive()
                more = message.get("more_body", False)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"13")],
            }
        )
        await send({"type": "http.response.body", "body": b"Hello, world!"})

    return {
        "starlette": (Starlette(routes=routes), Starlette(routes=routes, middleware=[Middleware(SqreenMiddleware)])),
        "raw asgi": (raw_app, SqreenMiddleware(raw_app)),
    }


def bench_asgi(client: sqreen_mw.Client, report: Report, n: int, rounds: int) -> None:
    apps = build_asgi_apps(client)
    statuses: list[int] = []

    check_send = status_recorder(statuses)

    get_scope = asgi_scope("GET", "/", b"")
    post_scope = asgi_scope("POST", "/api/orders", b"", body=POST_BODY)

    def loop_for(app: Any, scope: dict[str, Any], lp: asyncio.AbstractEventLoop) -> Callable[[int], int]:
        return first_clock(asgi_loop(app, scope, lp, receive, send, (CLOCK,)))

    lp = asyncio.new_event_loop()
    try:
        for name, (bare, wrapped) in apps.items():
            for method, scope in (("GET", get_scope), ("POST", post_scope)):
                for app in (bare, wrapped):  # sanity: both answer 200
                    statuses.clear()
                    lp.run_until_complete(app(dict(scope), receive, check_send))
                    assert statuses == [200], (name, method, statuses)
                res = measure({"bare": loop_for(bare, scope, lp), "mw": loop_for(wrapped, scope, lp)}, n, rounds)
                _middleware_row(report, f"ASGI {name} {method}", res, 1000, "≤ +1 µs")
    finally:
        lp.close()


def build_wsgi_apps(client: sqreen_mw.Client) -> dict[str, Any]:
    from flask import Flask, request

    from sqreen_mw.wsgi import SqreenMiddleware

    def raw_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "POST":
            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "13")])
        return [b"Hello, world!"]

    class Closing:
        """A response iterable with ``close()``, as Werkzeug's ``ClosingIterator`` (what Flask returns)."""

        def __init__(self, chunks: list[bytes]) -> None:
            self._chunks = chunks

        def __iter__(self) -> Any:
            return iter(self._chunks)

        def close(self) -> None:
            pass

    def closing_app(environ: dict[str, Any], start_response: Any) -> Closing:
        return Closing(raw_app(environ, start_response))

    def flask_app() -> Flask:
        app = Flask("bench")

        @app.get("/")
        def hello() -> str:
            return "Hello, world!"

        @app.post("/api/orders")
        def order() -> str:
            request.get_data()
            return "ok"

        return app

    wrapped_flask = flask_app()
    wrapped_flask.wsgi_app = SqreenMiddleware(wrapped_flask.wsgi_app)  # type: ignore[method-assign]
    return {
        "raw wsgi": (raw_app, SqreenMiddleware(raw_app)),
        "raw wsgi+close()": (closing_app, SqreenMiddleware(closing_app)),
        "flask": (flask_app(), wrapped_flask),
    }


def bench_wsgi(client: sqreen_mw.Client, report: Report, n: int, rounds: int, flask_n: int) -> None:
    apps = build_wsgi_apps(client)
    statuses: list[str] = []

    def write(data: bytes) -> None:
        pass

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        return write

    def check_start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        statuses.append(status)
        return write

    get_env = wsgi_environ("GET", "/")
    post_env = wsgi_environ("POST", "/api/orders", POST_BODY)

    def loop_for(app: Any, base: dict[str, Any]) -> Callable[[int], int]:
        return first_clock(wsgi_loop(app, base, start_response, POST_BODY, (CLOCK,)))

    for name, (bare, wrapped) in apps.items():
        # Flask: ~50-100x slower per request than the raw app, so shorter rounds and 3x as many (the delta is a few
        # % of the request and needs the samples)
        count, reps = (flask_n, 3 * rounds) if name == "flask" else (n, rounds)
        for method, base in (("GET", get_env), ("POST", post_env)):
            for app in (bare, wrapped):
                statuses.clear()
                wsgi_loop(app, base, check_start_response, POST_BODY)(1)
                assert statuses == ["200 OK"], (name, method, statuses)
            res = measure({"bare": loop_for(bare, base), "mw": loop_for(wrapped, base)}, count, reps)
            _middleware_row(report, f"WSGI {name} {method}", res, 2000, "≤ +2 µs")


def _middleware_row(report: Report, label: str, res: dict[str, list[float]], budget_ns: float, budget: str) -> None:
    bare, mw = med(res["bare"]), med(res["mw"])
    deltas = paired_delta(res["mw"], res["bare"])
    d = med(deltas)
    report.add(
        f"{label}: per request",
        us(mw),
        us(bare),
        f"{d / US:+.3f} µs; {mw / bare:.3f}x",
        budget,
        verdict(d <= budget_ns),
        spread=f"Δ {spread(deltas)}",
    )


# --------------------------------------------------------------------------------------------------------------------
# 3. bytes per queued event


def _traced_bytes(fn: Callable[[], Any], sites: bool) -> tuple[int, list[tuple[str, int]]]:
    """Bytes still allocated after ``fn()`` and a full collection (and the top allocation sites when ``sites``)."""
    gc.collect()  # also empties the free lists, so every new object is a traced allocation
    tracemalloc.start(1)
    try:
        keep = fn()
        gc.collect()
        total = tracemalloc.get_traced_memory()[0]
        top: list[tuple[str, int]] = []
        if sites:
            stats = tracemalloc.take_snapshot().statistics("lineno")
            top = [(str(stat.traceback[0]), stat.size) for stat in stats[:8]]
    finally:
        tracemalloc.stop()
    del keep
    return total, top


def bench_memory(report: Report, events: int, requests: int, sites: bool) -> list[str]:
    # A client of its own whose flusher is never woken during the traced window (batch_size above the event count,
    # heartbeat an hour away), so the only allocations traced are the benchmark thread's. It queues exactly like the
    # main one; client.track is sqreen_mw.track minus the module-level forwarding, which keeps nothing.
    client = sqreen_mw.Client(
        token=BENCH_TOKEN,
        url=BENCH_URL,
        max_queue_events=10_000_000,
        max_queue_bytes=1 << 40,
        batch_size=10 * events,
        heartbeat_interval=3600,
    )
    track = client.track
    per_request = events // requests
    ips = [f"198.51.100.{i}" for i in range(1, 201)]
    details: list[str] = []

    def drain() -> None:
        client.queue.take(len(client.queue))
        client.queue.done()

    def scope_for(i: int) -> dict[str, Any]:
        return asgi_scope(
            "GET", f"/api/orders/{i}", f"page={i % 7}&sort=desc".encode(), forwarded_for=ips[i % len(ips)].encode()
        )

    # warm-up: the flusher thread is started and idle, the IP resolver cache holds the addresses used below
    for i in range(len(ips)):
        token = current_context.set(RequestContext(ASGI, scope_for(i), None))
        track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})
        current_context.reset(token)
    drain()
    time.sleep(0.3)

    def floor() -> Any:
        q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(events):
            q.put({"item": "book", "quantity": 2, "gift": False})
        return q

    def outside() -> None:
        for _ in range(events):
            track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})

    def inside() -> None:
        for i in range(requests):
            # a fresh scope per request, built and dropped inside the traced window as a server does: only what the
            # queue keeps (the events, and the request's default properties they share) stays allocated
            token = current_context.set(RequestContext(ASGI, scope_for(i), None))
            for _ in range(per_request):
                track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})
            current_context.reset(token)

    def browser() -> None:
        for i in range(events):
            # one event a request, each request as a browser sends it: a dozen headers, a 1 KB cookie, made per request
            scope = scope_for(i)
            headers = [*scope["headers"], (b"accept", b"text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
                       (b"accept-language", b"en-US,en;q=0.9"), (b"referer", b"https://shop.example.com/"),
                       (b"cookie", b"session=%08d; prefs=" % i + b"p" * 1000),
                       (b"sec-fetch-mode", b"navigate"), (b"connection", b"keep-alive")]
            # each name and value its own bytes, as a server parses them (uvicorn lower-cases every name)
            scope["headers"] = [(bytes(bytearray(name)), bytes(bytearray(value))) for name, value in headers]
            token = current_context.set(RequestContext(ASGI, scope, None))
            track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})
            current_context.reset(token)

    try:
        floor_total, _ = _traced_bytes(floor, False)
        fb = floor_total / events
        report.section(f"bytes per queued event (tracemalloc, {events:,} events, 3 properties)")
        report.add("floor: SimpleQueue().put(dict)", f"{fb:.0f} B", "", "", "", "")
        for label, fn, detail in (
            ("queued event, outside a request", outside, "outside a request"),
            (f"queued event, {requests:,} requests x {per_request}", inside, "in requests"),
            ("queued event, a browser's request each", browser, "a browser's requests"),
        ):
            drain()
            estimate_before = client.queue.statistics()["queued_bytes"]
            total, top = _traced_bytes(fn, sites)
            queued = len(client.queue)
            assert queued == events and not client.queue.dropped, (queued, events, client.queue.dropped)
            estimate = (client.queue.statistics()["queued_bytes"] - estimate_before) / events
            v = total / events
            report.add(
                label,
                f"{v:.0f} B",
                f"{fb:.0f} B",
                f"+{v - fb:.0f} B; {v / fb:.1f}x",
                "≤ 700 B",
                verdict(v <= 700),
                spread=f"queue's own estimate {estimate:.0f} B",
            )
            if top:
                root = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
                details.append(
                    f"bytes/event by allocation site, {detail}: "
                    + "; ".join(f"{site.replace(root, '')} {size / events:.0f}" for site, size in top if size >= events)
                )
            drain()
    finally:
        client.shutdown(timeout=0.2)
    gc.collect()
    return details


# --------------------------------------------------------------------------------------------------------------------
# 4. optional breakdown of track()'s steps


def bench_breakdown(client: sqreen_mw.Client, n: int, rounds: int) -> list[str]:
    """Each step of ``track()`` timed on its own, with the steady-state in-request inputs, and the steps of the first
    track of a request (building the request's default properties). Every loop's empty-loop cost is subtracted."""
    import itertools
    import threading
    from collections import deque
    from urllib.parse import parse_qsl

    from sqreen_mw._body import flat_pairs
    from sqreen_mw._context import _asgi_headers, request_info
    from sqreen_mw._lifecycle import get_client
    from sqreen_mw._schema import MAX_NAME_LENGTH, RESERVED_PREFIX, check_properties

    scope = asgi_scope()
    ctx = RequestContext(ASGI, scope, None)
    info = ctx.info(client.resolver)
    props, size = check_properties({"item": "book", "quantity": 2, "gift": False})
    eq = client.queue
    names = {
        "CLOCK": CLOCK,
        "check_properties": check_properties,
        "ctx": ctx,
        "current_context": current_context,
        "client": client,
        "resolver": client.resolver,
        "seq": itertools.count(1),
        "time_ns": time.time_ns,
        "props": props,
        "info": info,
        "eq": eq,
        "lock": threading.Lock(),
        "dq": deque(),
        "get_client": get_client,
        "EVENT": EVENT,
        "sqreen_mw": sqreen_mw,
        "MAX_NAME_LENGTH": MAX_NAME_LENGTH,
        "RESERVED_PREFIX": RESERVED_PREFIX,
        "record": (time.time_ns(), 1, EVENT, props, None, None, info, None, size + 200),
        "scope": scope,
        "headers": _asgi_headers(scope["headers"]),
        "_asgi_headers": _asgi_headers,
        "request_info": request_info,
        "captured": ctx.capture(),
        "parse_qsl": parse_qsl,
        "flat_pairs": flat_pairs,
        "RequestContext": RequestContext,
        "ASGI": ASGI,
    }

    def drain() -> None:
        eq.take(len(eq))
        eq.done()
        names["dq"].clear()

    def loop(body: str) -> Callable[[int], int]:
        src = f"def run(n):\n    t0 = CLOCK()\n    for _ in range(n):\n        {body}\n    return CLOCK() - t0\n"
        exec(src, names)  # noqa: S102 - fixed benchmark snippets
        return names.pop("run")  # type: ignore[no-any-return]

    literal = '{"item": "book", "quantity": 2, "gift": False}'
    steps = {
        "empty loop": "pass",
        "sqreen_mw.track(...) in a request": f"sqreen_mw.track(EVENT, properties={literal})",
        "  get_client()": "get_client()",
        "  client.track(...)": f"client.track(EVENT, properties={literal})",
        "    name check (the if in Client.track)": "type(EVENT) is not str or not 0 < len(EVENT) <= MAX_NAME_LENGTH "
        "or EVENT.startswith(RESERVED_PREFIX)",
        "    client._record(...)": f"client._record(EVENT, {literal}, None, None, False, None)",
        "      dict literal (the caller's)": f"d = {literal}",
        "      check_properties(literal)": f"check_properties({literal})",
        "      current_context.get()": "current_context.get()",
        "      ctx.capture(), cached": "ctx.capture()",
        "      time.time_ns()": "time_ns()",
        "      next(seq)": "next(seq)",
        "      9-tuple build": "r = (time_ns, 1, EVENT, props, None, None, info, None, 520)",
        "      EventQueue.put(record)": "eq.put(record)",
        "        with lock: (uncontended)": "with lock: pass",
        "        lock.acquire(); lock.release()": "lock.acquire(); lock.release()",
        "        deque.append(record)": "dq.append(record)",
        "first track: RequestContext.capture()": "RequestContext(ASGI, scope, None).capture()",
        "flusher: request_info(capture)": "request_info(captured, resolver)",
        "  _asgi_headers(scope), 8 headers": "_asgi_headers(scope['headers'])",
        "  resolver.resolve(peer, headers)": "resolver.resolve('10.0.0.2', headers)",
        "  parse_qsl+flat_pairs('page=2&sort=desc')": "flat_pairs(parse_qsl('page=2&sort=desc', True))",
        "middleware: RequestContext(ASGI, scope, None)": "RequestContext(ASGI, scope, None)",
        "middleware: contextvar set+reset": "current_context.reset(current_context.set(ctx))",
    }
    token = current_context.set(ctx)
    try:
        res = measure({name: loop(body) for name, body in steps.items()}, n, rounds, before=drain)
    finally:
        current_context.reset(token)
    drain()
    empty = med(res["empty loop"])
    out = [
        f"breakdown ({rounds} rounds x {n:,}; empty-loop cost {empty:.0f} ns subtracted)",
        f"{'step':48} {'ns/call':>8}",
    ]
    for name, values in res.items():
        if name != "empty loop":
            out.append(f"{name:48} {med(values) - empty:8.0f}")
    return out


# --------------------------------------------------------------------------------------------------------------------
# 5. one tracked event per request: hello apps, bare vs middleware + 1 track(), as a throughput ratio

#: The request of the one-event rows: a query string to parse, two forwarding hops to walk, a cookie to scrub.
ONE_EVENT_QUERY = b"user=42&q=select+name+from+users&page=3"
ONE_EVENT_XFF = b"198.51.100.23, 10.0.0.3"


def one_event_asgi_apps() -> tuple[Any, Any]:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from sqreen_mw.asgi import SqreenMiddleware

    def routes(tracked: bool) -> list[Route]:
        async def hello(request: Request) -> PlainTextResponse:
            if tracked:
                sqreen_mw.track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})
            return PlainTextResponse("Hello, world!")

        async def order(request: Request) -> PlainTextResponse:
            await request.json()
            if tracked:
                sqreen_mw.track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})
            return PlainTextResponse("ok")

        return [Route("/", hello), Route("/api/orders", order, methods=["POST"])]

    return Starlette(routes=routes(False)), Starlette(routes=routes(True), middleware=[Middleware(SqreenMiddleware)])


def one_event_flask_apps() -> tuple[Any, Any]:
    from flask import Flask, request

    from sqreen_mw.wsgi import SqreenMiddleware

    def app(tracked: bool) -> Flask:
        flask = Flask("bench")

        @flask.get("/")
        def hello() -> str:
            if tracked:
                sqreen_mw.track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})
            return "Hello, world!"

        @flask.post("/api/orders")
        def order() -> str:
            request.get_json()
            if tracked:
                sqreen_mw.track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})
            return "ok"

        return flask

    wrapped = app(True)
    wrapped.wsgi_app = SqreenMiddleware(wrapped.wsgi_app)  # type: ignore[method-assign]
    return app(False), wrapped


def one_event_scope(method: str) -> dict[str, Any]:
    scope = asgi_scope(method, "/" if method == "GET" else "/api/orders", ONE_EVENT_QUERY,
                       client_ip="127.0.0.1", forwarded_for=ONE_EVENT_XFF,
                       body=POST_BODY if method == "POST" else b"")
    return scope


def one_event_environ(method: str) -> dict[str, Any]:
    env = wsgi_environ(method, "/" if method == "GET" else "/api/orders", POST_BODY if method == "POST" else b"")
    env["QUERY_STRING"] = ONE_EVENT_QUERY.decode()
    env["REMOTE_ADDR"] = "127.0.0.1"
    env["HTTP_X_FORWARDED_FOR"] = ONE_EVENT_XFF.decode()
    env["HTTP_COOKIE"] = "session=6f1c2b7e9a; theme=dark"
    return env


def bench_one_event(client: sqreen_mw.Client, report: Report, asgi_n: int, flask_n: int, rounds: int) -> None:
    """Starlette and Flask hello, bare vs the middleware + one track() per request, in process."""
    statuses: list[Any] = []

    def drain() -> None:
        client.queue.take(len(client.queue))
        client.queue.done()

    check_send = status_recorder(statuses)

    def one_asgi(app: Any, scope: dict[str, Any], lp: asyncio.AbstractEventLoop) -> Callable[[int], int]:
        return first_clock(asgi_loop(app, scope, lp, receive, send, (CLOCK,)))

    def write(data: bytes) -> None:
        pass

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        statuses.append(status)
        return write

    def one_wsgi(app: Any, base: dict[str, Any]) -> Callable[[int], int]:
        return first_clock(wsgi_loop(app, base, start_response, POST_BODY, (CLOCK,)))

    report.section(
        f"one tracked event per request, in process (median of {rounds} rounds): throughput of the app with the "
        "middleware + 1 track() / bare app"
    )
    lp = asyncio.new_event_loop()
    try:
        bare, tracked = one_event_asgi_apps()
        for method in ("GET", "POST"):
            scope = one_event_scope(method)
            tracked_before = client.queue.tracked
            for app in (bare, tracked):
                statuses.clear()
                lp.run_until_complete(app(dict(scope), receive, check_send))
                assert statuses == [200], ("starlette", method, statuses)
            assert client.queue.tracked == tracked_before + 1, "the tracked app did not queue its event"
            res = measure({"bare": one_asgi(bare, scope, lp), "mw": one_asgi(tracked, scope, lp)}, asgi_n, rounds,
                          before=drain)
            _one_event_row(report, f"Starlette hello {method}{' JSON' if method == 'POST' else ''}", res, 0.80)
    finally:
        lp.close()
    bare_f, tracked_f = one_event_flask_apps()
    for method in ("GET", "POST"):
        base = one_event_environ(method)
        for app in (bare_f, tracked_f):
            statuses.clear()
            one_wsgi(app, base)(1)
            assert statuses == ["200 OK"], ("flask", method, statuses)
        res = measure({"bare": one_wsgi(bare_f, base), "mw": one_wsgi(tracked_f, base)}, flask_n, 3 * rounds,
                      before=drain)
        _one_event_row(report, f"Flask hello {method}{' JSON' if method == 'POST' else ''}", res, 0.95)
    drain()


def _one_event_row(report: Report, label: str, res: dict[str, list[float]], budget: float) -> None:
    bare, mw = med(res["bare"]), med(res["mw"])
    ratios = [b / m for b, m in zip(res["bare"], res["mw"], strict=True)]
    ratio = med(ratios)
    report.add(
        f"{label}: mw + 1 track()",
        us(mw),
        us(bare),
        f"{(mw - bare) / US:+.3f} µs; {ratio:.3f} of bare",
        f"≥ {budget:.2f} of bare",
        verdict(ratio >= budget),
        spread=f"ratio {min(ratios):.3f}..{max(ratios):.3f}",
    )


# --------------------------------------------------------------------------------------------------------------------
# 6. instructions per call (callgrind)
#
# The parent re-runs this script under ``valgrind --tool=callgrind --dump-before=os_getppid``; the child calls
# ``os.getppid()`` between phases, so callgrind writes one profile per phase. Each measured variant runs twice, n and
# 2n times: (I(2n) - I(n)) / n is the cost of one call, free of the phases' fixed costs. Counts are the main
# thread's (``--separate-threads=yes``); the flusher's work per event is measured apart, on the main thread, as the
# ``_serialize`` + gzip of the batches that hold the events (what the flusher thread runs per batch, less the HTTP).


def callgrind_child(n: int) -> int:
    import json

    from sqreen_mw._transport import compress_batch

    logging.getLogger("sqreen_mw").setLevel(logging.CRITICAL)
    client = sqreen_mw.init(
        token=BENCH_TOKEN, url=BENCH_URL, max_queue_events=10_000_000, max_queue_bytes=1 << 40,
        batch_size=10_000_000, heartbeat_interval=3600, install_signal_handler=False,
    )
    track = sqreen_mw.track
    labels: list[str] = []

    def mark(label: str) -> None:  # the profile written now holds the work since the previous mark
        if label == "setup":  # as in the timed runs, no collection inside a measured phase (one lands at random)
            gc.collect()
        labels.append(label)
        os.getppid()

    gc.disable()

    def drain() -> None:
        client.queue.take(len(client.queue))
        client.queue.done()

    q: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def floor(k: int) -> None:
        put = q.put
        for _ in range(k):
            put({"item": "book", "quantity": 2, "gift": False})

    def outside(k: int) -> None:
        for _ in range(k):
            track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})

    steady_ctx = RequestContext(ASGI, one_event_scope("GET"), None)

    def steady(k: int) -> None:
        token = current_context.set(steady_ctx)
        try:
            for _ in range(k):
                track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})
        finally:
            current_context.reset(token)

    ctxs: list[RequestContext] = []

    def fresh(method: str, k: int) -> None:
        scope = one_event_scope(method)
        ctxs.clear()
        for _ in range(k):
            tee = None
            if method == "POST":
                tee = ASGIBodyTee(_never_receive, client.max_body_bytes)
                tee.feed(POST_BODY, True)
            ctxs.append(RequestContext(ASGI, dict(scope), tee))

    def bind_track(k: int) -> None:
        set_, reset = current_context.set, current_context.reset
        for ctx in ctxs[:k]:
            token = set_(ctx)
            track(EVENT, properties={"item": "book", "quantity": 2, "gift": False})
            reset(token)

    def bind_only(k: int) -> None:
        set_, reset = current_context.set, current_context.reset
        for ctx in ctxs[:k]:
            reset(set_(ctx))

    def flush_like(k: int) -> None:  # what the flusher does with k queued events, in batches of 1,000
        while len(client.queue):
            payload, _ = client._serialize(client.queue.take(1000))
            client.queue.done()
            assert payload is not None
            compress_batch(payload)

    plain: dict[str, Callable[[int], None]] = {
        "floor": floor, "track_outside": outside, "track_steady": steady,
    }
    steady(1)  # the steady context's capture is made
    for name, fn in plain.items():
        fn(200)  # warm-up
        drain()
        mark("setup")
        fn(n)
        mark(f"{name}:1")
        fn(2 * n)
        mark(f"{name}:2")
        drain()
    for method in ("GET", "POST"):
        for name, fn in (("bind_only", bind_only), ("first", bind_track)):
            for reps in (1, 2):
                fresh(method, 200)
                fn(200)
                drain()
                fresh(method, reps * n)
                mark("setup")
                fn(reps * n)
                mark(f"{name}_{method}:{reps}")
                if name == "first":
                    flush_like(reps * n)
                    mark(f"flusher_{method}:{reps}")
                drain()
    # The flusher again, every request a different one (client IP, query): no two share their default properties
    def fresh_distinct(k: int) -> None:
        ctxs.clear()
        for i in range(k):
            query = f"user={i}&q=select+name+from+users&page={i % 7}".encode()
            hops = f"198.51.{i // 250 % 250}.{i % 250}, 10.0.0.3".encode()
            scope = asgi_scope("GET", "/", query, client_ip="127.0.0.1", forwarded_for=hops)
            ctxs.append(RequestContext(ASGI, scope, None))

    for reps in (1, 2):
        fresh_distinct(200)
        bind_track(200)
        flush_like(200)
        fresh_distinct(reps * n)
        bind_track(reps * n)
        mark("setup")
        flush_like(reps * n)
        mark(f"flusher_distinct:{reps}")
        drain()
    # Whole requests: the hello apps, bare and with the middleware + 1 track()
    lp = asyncio.new_event_loop()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": POST_BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    def asgi_requests(app: Any, scope: dict[str, Any]) -> Callable[[int], None]:
        async def run(k: int) -> None:
            for _ in range(k):
                await app(dict(scope), receive, send)

        return lambda k: lp.run_until_complete(run(k))

    def wsgi_requests(app: Any, base: dict[str, Any]) -> Callable[[int], None]:
        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            return None

        def run(k: int) -> None:
            for _ in range(k):
                env = base.copy()
                env["wsgi.input"] = io.BytesIO(POST_BODY)
                result = app(env, start_response)
                for _chunk in result:
                    pass
                getattr(result, "close", lambda: None)()

        return run

    s_bare, s_tracked = one_event_asgi_apps()
    f_bare, f_tracked = one_event_flask_apps()
    raw_asgi, mw_asgi = build_asgi_apps(client)["raw asgi"]
    wsgi_apps = build_wsgi_apps(client)
    raw_wsgi, mw_wsgi = wsgi_apps["raw wsgi"]
    closing_wsgi, mw_closing_wsgi = wsgi_apps["raw wsgi+close()"]
    for method in ("GET", "POST"):
        scope, environ = one_event_scope(method), one_event_environ(method)
        # The middleware alone, around an app that does nothing else (the requests of the timed middleware rows)
        raw_scope = asgi_scope("GET", "/", b"") if method == "GET" else asgi_scope("POST", "/api/orders", b"",
                                                                                    body=POST_BODY)
        raw_environ = wsgi_environ("GET", "/") if method == "GET" else wsgi_environ("POST", "/api/orders", POST_BODY)
        for name, fn in (
            (f"rawasgi_bare_{method}", asgi_requests(raw_asgi, raw_scope)),
            (f"rawasgi_mw_{method}", asgi_requests(mw_asgi, raw_scope)),
            (f"rawwsgi_bare_{method}", wsgi_requests(raw_wsgi, raw_environ)),
            (f"rawwsgi_mw_{method}", wsgi_requests(mw_wsgi, raw_environ)),
            (f"closewsgi_bare_{method}", wsgi_requests(closing_wsgi, raw_environ)),
            (f"closewsgi_mw_{method}", wsgi_requests(mw_closing_wsgi, raw_environ)),
            (f"starlette_bare_{method}", asgi_requests(s_bare, scope)),
            (f"starlette_tracked_{method}", asgi_requests(s_tracked, scope)),
            (f"flask_bare_{method}", wsgi_requests(f_bare, environ)),
            (f"flask_tracked_{method}", wsgi_requests(f_tracked, environ)),
        ):
            fn(100)
            drain()
            mark("setup")
            fn(n // 2)
            mark(f"{name}:1")
            fn(n)
            mark(f"{name}:2")
            drain()
    lp.close()
    mark("setup")
    client.shutdown(timeout=0.2)
    print(json.dumps(labels))
    return 0


def bench_callgrind(n: int) -> int:
    import json
    import re
    import shutil
    import subprocess
    import tempfile

    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)")
        return 1
    out_dir = tempfile.mkdtemp(prefix="bench_sdk_cg.")
    try:
        cmd = [
            "valgrind", "--tool=callgrind", "--dump-instr=no", "--separate-threads=yes", "--dump-before=os_getppid",
            f"--callgrind-out-file={out_dir}/cg.out", sys.executable, os.path.abspath(__file__),
            "--callgrind-child", str(n),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"sqreen_mw {sqreen_mw.__version__} ({build()}) | Python {platform.python_version()} | load {load:.2f} | "
              f"callgrind, n = {n:,} (main thread, instructions per call = (I(2n) - I(n)) / n)")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=3600)  # noqa: S603
        if proc.returncode:
            print(proc.stderr[-3000:])
            return proc.returncode
        labels: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
        totals: dict[str, int] = {}
        for part, label in enumerate(labels, 1):
            with open(f"{out_dir}/cg.out.{part}-01") as f:
                m = re.search(r"^totals: (\d+)", f.read(), re.M)
            assert m, part
            totals[label] = int(m.group(1))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)

    def per_call(name: str) -> float:
        return (totals[f"{name}:2"] - totals[f"{name}:1"]) / n

    floor = per_call("floor")
    rows = [("floor: SimpleQueue().put(dict)", floor, "")]
    for label, value in (
        ("track() outside a request", per_call("track_outside")),
        ("track() in a request, steady state", per_call("track_steady")),
    ):
        rows.append((label, value, f"{value / floor:.2f}x floor (budget ≤ 3x: {verdict(value <= 3 * floor)})"))
    steady_v = per_call("track_steady")
    for method in ("GET", "POST"):
        first = per_call(f"first_{method}") - per_call(f"bind_only_{method}")
        rows.append((f"track() 1st of a request ({method}{'+JSON' if method == 'POST' else ''})", first,
                     f"{first / floor:.2f}x floor, {first / steady_v:.2f}x steady (budget ≤ 2x: "
                     f"{verdict(first <= 2 * steady_v)})"))
        flusher = per_call(f"flusher_{method}")
        rows.append((f"  flusher per event, 1 event/request ({method}): serialize+scrub+gzip", flusher,
                     f"all-in with the 1st track: {first + flusher:,.0f}"))
    distinct = per_call("flusher_distinct")
    rows.append(("  flusher per event, every request a different one (GET)", distinct,
                 "client IP and query differ: nothing shared between requests"))

    def per_request(name: str) -> float:
        return (totals[f"{name}:2"] - totals[f"{name}:1"]) / (n - n // 2)

    for app, label, budget in (("rawasgi", "raw ASGI", 1.0), ("rawwsgi", "raw WSGI", 2.0),
                               ("closewsgi", "raw WSGI + close()", 2.0)):
        for method in ("GET", "POST"):
            bare = per_request(f"{app}_bare_{method}")
            mw = per_request(f"{app}_mw_{method}")
            rows.append((f"{label} {method}{' JSON' if method == 'POST' else ''}: bare", bare, ""))
            rows.append(("  with the middleware alone", mw, f"+{mw - bare:,.0f} (budget ≤ +{budget:.0f} µs)"))
    budgets = {"starlette": 0.80, "flask": 0.95}
    for app in ("starlette", "flask"):
        for method in ("GET", "POST"):
            bare = per_request(f"{app}_bare_{method}")
            tracked = per_request(f"{app}_tracked_{method}")
            rows.append((f"{app} hello {method}{' JSON' if method == 'POST' else ''}: bare", bare, ""))
            rows.append(("  with the middleware + 1 track()", tracked,
                         f"+{tracked - bare:,.0f}; {bare / tracked:.3f} of bare (budget ≥ {budgets[app]:.2f}: "
                         f"{verdict(bare / tracked >= budgets[app])})"))
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':{width}}  {'instructions/call':>17}  ratio")
    for label, value, note in rows:
        print(f"{label:{width}}  {value:17,.0f}  {note}")
    return 0


# --------------------------------------------------------------------------------------------------------------------


def print_table(report: Report) -> None:
    headers = ("metric", "sqreen_mw", "baseline", "delta; ratio", "budget", "result", "spread (round min..max)")
    rows = [(r.metric, r.value, r.baseline, r.delta, r.budget, r.result, r.spread) for r in report.rows]
    widths = [max(len(h), *(len(row[i]) for row in rows if not row[0].startswith("--"))) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for row in rows:
        if row[0].startswith("--"):
            print(row[0])
            continue
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (< 20 s): a smoke check")
    parser.add_argument("--breakdown", action="store_true", help="also time each step of track() on its own")
    parser.add_argument("--rounds", type=int, help="rounds per measurement (default 21, quick 7)")
    parser.add_argument(
        "--clock",
        choices=("wall", "thread"),
        default="wall",
        help="wall = time.perf_counter_ns (default); thread = time.thread_time_ns, this thread's CPU "
        "time, which excludes preemption by other processes on a busy machine",
    )
    parser.add_argument("--callgrind", type=int, nargs="?", const=2000, metavar="N",
                        help="instead: instructions per call (valgrind callgrind, main thread) of track() next to "
                        "the floor, and the flusher's per event; N calls per phase (default 2000; about 2 min)")
    parser.add_argument("--callgrind-child", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.callgrind_child:
        return callgrind_child(args.callgrind_child)
    if args.callgrind:
        return bench_callgrind(args.callgrind)
    global CLOCK
    CLOCK = time.perf_counter_ns if args.clock == "wall" else time.thread_time_ns

    # Short rounds (a few ms) and many of them: on a shared machine a round hit by preemption is an outlier the
    # median ignores.
    if args.quick:
        rounds, track_n, contexts, asgi_n, wsgi_n, flask_n = 7, 2_000, 300, 300, 1_000, 50
    else:
        rounds, track_n, contexts, asgi_n, wsgi_n, flask_n = 21, 20_000, 3_000, 3_000, 10_000, 150
    mem_events, mem_requests = 20_000, 2_000
    if args.rounds:
        rounds = args.rounds

    # Quiet: the flusher cannot reach 127.0.0.1:9 and would log it. Shedding is checked explicitly instead.
    logging.getLogger("sqreen_mw").setLevel(logging.CRITICAL)
    client = sqreen_mw.init(
        token=BENCH_TOKEN,
        url=BENCH_URL,  # nothing listens: the flusher fails to log in and backs off, nothing is sent
        max_queue_events=10_000_000,
        max_queue_bytes=1 << 40,
        install_signal_handler=False,
    )
    started = time.perf_counter()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(
        f"sqreen_mw {sqreen_mw.__version__} ({build()}) | Python {platform.python_version()} "
        f"({platform.python_implementation()}) "
        f"| {platform.machine()} | {os.cpu_count()} CPUs | load {load[0]:.2f} | starlette {version('starlette')} "
        f"| flask {version('flask')} | {'quick' if args.quick else 'full'} run, {rounds} rounds, clock {args.clock}"
    )
    report = Report()
    laps: list[str] = []
    lap = time.perf_counter()

    def done(what: str) -> None:
        nonlocal lap
        now = time.perf_counter()
        laps.append(f"{what} {now - lap:.1f} s")
        lap = now

    try:
        bench_track(client, report, track_n, rounds, contexts)
        done("track")
        report.section(
            f"middleware overhead, in-process, per request (median of {rounds} rounds; Δ = median of "
            "paired round deltas); the requests track nothing"
        )
        bench_asgi(client, report, asgi_n, rounds)
        done("asgi")
        bench_wsgi(client, report, wsgi_n, rounds, flask_n)
        done("wsgi")
        bench_one_event(client, report, asgi_n, flask_n, rounds)
        done("one event")
        details = bench_memory(report, mem_events, mem_requests, args.breakdown)
        done("memory")
        breakdown = bench_breakdown(client, track_n, rounds) if args.breakdown else []
        if breakdown:
            done("breakdown")
        stats = client.statistics()
    finally:
        client.shutdown(timeout=0.5)
    print()
    print_table(report)
    print()
    for note in [*report.notes, *details]:
        print(note)
    if stats["dropped"]:
        print(f"WARNING: events were dropped during the run: {stats['dropped']}")
    if breakdown:
        print()
        print("\n".join(breakdown))
    print(
        f"\n{time.perf_counter() - started:.1f} s ({', '.join(laps)}); clock {args.clock}; "
        f"flusher sent {stats['sent']} event(s) (expected 0: nothing listens on :9), "
        f"dropped {stats['dropped'] or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
