"""Garbage collections an app's process runs because of the SDK: the FastAPI and Flask examples, in process.

Each variant runs in a fresh interpreter: the example app as ``bench_wrk.py`` serves it (``_wrk_app``: ``bare`` is
the app with sqreen_mw's middleware removed and its calls no-ops), called directly (ASGI, or WSGI), ``GET
/orders/1`` with a bearer token (``identify()`` and one ``track()`` a request). Every 1,000 requests the queued
events are taken, serialized as the flusher does (``Client._serialize``, on the same thread: no network) and
dropped, as after a delivered batch. ``gc.callbacks`` count the collections of each generation and time them.

CPython's young collections run when allocations of objects it tracks exceed frees by 700; a queued event keeps a
few such objects alive until its batch is sent, so the SDK makes them more frequent, and each one promotes to the
older generations whatever the app's requests hold at that moment. A full collection walks the whole heap: in the
FastAPI example under uvicorn, tens of milliseconds during which no request is served (its p99).

    python benchmarks/bench_gc.py             # 20,000 requests per variant; --quick: 5,000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-gc-secret"  # noqa: S105 - the example's token signing key for this run
BATCH = 1000


def child(framework: str, requests: int) -> dict[str, Any]:
    """Run in the variant's own interpreter (``BENCH_VARIANT`` set): the counts and pause times."""
    import asyncio
    import gc
    import io

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    os.environ.update(EXAMPLE_SECRET_KEY=SECRET, SQREEN_TOKEN="k" * 32, SQREEN_URL="http://127.0.0.1:9",
                      BENCH_FRAMEWORK=framework)
    import _wrk_app
    from bench_wrk import issue_token_with

    from examples.fastapi_app.store import issue_token
    from sqreen_mw import _lifecycle

    token = issue_token_with(SECRET, issue_token)
    client = _lifecycle.get_client()
    client._started_pid = os.getpid()  # no flusher thread: the batches are serialized below, on this thread
    client.flusher.wake = lambda *args, **kwargs: False  # type: ignore[method-assign]
    app = _wrk_app.app
    if framework == "fastapi":
        loop = asyncio.new_event_loop()
        headers = [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {token}".encode())]

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            pass

        async def run_asgi(n: int) -> None:
            for _ in range(n):  # the scope and its header pairs made per request, as a server makes them
                scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                         "scheme": "http", "path": "/orders/1", "raw_path": b"/orders/1", "query_string": b"",
                         "root_path": "", "headers": [tuple(pair) for pair in headers],
                         "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
                await app(scope, receive, send)

        def serve(n: int) -> None:
            loop.run_until_complete(run_asgi(n))
    else:
        def start_response(status: str, response_headers: Any, exc_info: Any = None) -> None:
            return None

        def serve(n: int) -> None:
            for _ in range(n):
                environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/orders/1", "QUERY_STRING": "", "SERVER_NAME": "x",
                           "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                           "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr, "REMOTE_ADDR": "127.0.0.1",
                           "HTTP_HOST": "127.0.0.1:8000", "HTTP_AUTHORIZATION": f"Bearer {token}"}
                result = app(environ, start_response)
                for _chunk in result:
                    pass
                getattr(result, "close", lambda: None)()

    def deliver() -> None:
        batch = client.queue.take(BATCH)
        if batch:
            client._serialize(batch)
        client.queue.done()

    serve(300)  # warm up
    deliver()
    gc.collect()
    from _timing import Collections

    collections = Collections().install()
    t0 = time.perf_counter()
    for done in range(0, requests, BATCH):
        serve(min(BATCH, requests - done))
        deliver()
    wall = time.perf_counter() - t0
    collections.remove()
    return {"requests": requests, **collections.summary(), "wall_s": wall, "heap": len(gc.get_objects())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="5,000 requests per variant")
    parser.add_argument("--requests", type=int, help="requests per variant (default 20,000)")
    parser.add_argument("--frameworks", default="fastapi,flask")
    parser.add_argument("--child", nargs=2, metavar=("FRAMEWORK", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return 0
    requests = args.requests or (5000 if args.quick else 20000)
    print(f"bench_gc: {requests:,} requests per variant, a batch of {BATCH:,} serialized and dropped every "
          f"{BATCH:,} | Python {sys.version.split()[0]} | load {os.getloadavg()[0]:.2f}")
    header = (f"{'app':<8} {'variant':<10} {'gen0':>6} {'gen1':>6} {'gen2':>6}  {'per 10k requests: gen0/1/2':<27}"
              f" {'GC ms':>7} {'longest':>8} {'heap objects':>13}")
    print(header)
    print("-" * len(header))
    failed = 0
    for framework in args.frameworks.split(","):
        for variant in ("bare", "sqreen_mw"):
            env = {**os.environ, "BENCH_VARIANT": variant, "PYTHONPATH": str(ROOT)}
            proc = subprocess.run(  # noqa: S603 - this script, fixed arguments
                [sys.executable, __file__, "--child", framework, str(requests)], capture_output=True, text=True,
                env=env, cwd=ROOT, timeout=600, check=False)
            if proc.returncode != 0:
                print(f"{framework:<8} {variant:<10} failed: {proc.stderr.strip().splitlines()[-1:]}")
                failed = 1
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            runs = {int(k): v for k, v in r["runs"].items()}
            per = "/".join(f"{runs[g] * 10000 / r['requests']:.1f}" for g in (0, 1, 2))
            total = sum(r["paused_ms"].values())
            print(f"{framework:<8} {variant:<10} {runs[0]:>6} {runs[1]:>6} {runs[2]:>6}  {per:<27} {total:>7.1f}"
                  f" {r['longest_ms']:>6.2f}ms {r['heap']:>13,}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
