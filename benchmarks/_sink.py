"""A loopback HTTP sink for the peers' exporters: answers every request 200 at once and counts what it received.

``python benchmarks/_sink.py [--port 0]`` prints ``listening on http://127.0.0.1:PORT`` and serves until SIGTERM.
``GET /__sink/stats`` answers ``{"requests": N, "bytes": B, "paths": {...}}``. The answers are what each peer's client
accepts as a success: ``{}`` JSON for PostHog, Segment and Sentry, an empty protobuf message for OTLP
(``application/x-protobuf``), ``{"rate_by_service": {}}`` for the Datadog agent's trace endpoints, a session for
sqreen_mw's login (and 404 for its push channel: actions come with the answers, which have none). It runs in its own
process, so its CPU is not counted in the process under test.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections import Counter
from typing import Any

STATS: dict[str, Any] = {"requests": 0, "bytes": 0}
PATHS: Counter[str] = Counter()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path: str = scope["path"]
    size = 0
    more = True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    if path == "/__sink/stats":
        body = json.dumps({**STATS, "paths": dict(PATHS)}).encode()
        content_type = b"application/json"
    else:
        STATS["requests"] += 1
        STATS["bytes"] += size
        PATHS[path] += 1
        content_type = b"application/json"
        body = b"{}"
        if path == "/api/v1/agent/login":  # sqreen_mw's agent protocol: a session, and no push channel (404)
            body = b'{"session_id": "sink", "actions": [], "actions_version": 0}'
        elif path == "/api/v1/agent/actions":
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        elif path.startswith("/v1/"):  # OTLP/HTTP: an empty Export*ServiceResponse
            content_type, body = b"application/x-protobuf", b""
        elif path.startswith("/v0."):  # Datadog agent traces
            body = b'{"rate_by_service": {}}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def main() -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    # proto=IPPROTO_TCP, not socket.socket()'s 0: asyncio sets TCP_NODELAY only on sockets whose proto is TCP, and
    # without it every answer waits ~40 ms (Nagle holds the body behind the headers until the client's delayed ACK)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by the accepted sockets
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)  # before the line below: a client may connect as soon as it reads it
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
