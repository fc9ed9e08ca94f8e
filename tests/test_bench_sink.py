"""The benchmarks' loopback sink (``benchmarks/_sink.py``): it must answer at once, or the peers' flushes measure it."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import _peers

pytestmark = pytest.mark.e2e


def test_sink_answers_keep_alive_posts_without_the_delayed_ack_stall() -> None:
    # A response written as two segments (headers, body) on a socket without TCP_NODELAY waits for the client's
    # delayed ACK: >= 40 ms per request on Linux. The sink's answers must not: the median stays far below that.
    body = b"x" * 400
    with _peers.sink() as url, httpx.Client(timeout=5) as http:
        http.post(f"{url}/api/1/envelope/", content=body)  # the connection, reused below
        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            r = http.post(f"{url}/api/1/envelope/", content=body)
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200
        stats = _peers.sink_stats(url)
    assert statistics.median(times) < 0.02, times
    assert stats["requests"] == 16
    assert stats["bytes"] == 16 * len(body)
    assert stats["paths"] == {"/api/1/envelope/": 16}
