"""``sqreen-mw serve`` answers at once on a kept-alive connection (no delayed-ACK stall)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import httpx
import pytest

from tests.support import API_KEY, start_collector

pytestmark = pytest.mark.e2e


def test_keep_alive_answers_do_not_wait_for_the_delayed_ack(tmp_path: Path) -> None:
    # uvicorn writes a response's headers and body separately: on a socket without TCP_NODELAY the body waits for
    # the client's delayed ACK, >= 40 ms per answer on Linux, which is most of an agent's or importer's batch time.
    with start_collector(tmp_path / "events.db") as collector, httpx.Client(timeout=5) as http:
        url = collector.url
        assert http.get(f"{url}/healthz").status_code == 200  # the connection, reused below
        times: dict[str, list[float]] = {"healthz": [], "login": []}
        for _ in range(15):
            for what, call in (
                ("healthz", lambda: http.get(f"{url}/healthz")),
                ("login", lambda: http.post(f"{url}/api/v1/agent/login", headers={"X-Api-Key": API_KEY}, json={})),
            ):
                t0 = time.perf_counter()
                assert call().status_code == 200
                times[what].append(time.perf_counter() - t0)
    for what, seconds in times.items():
        assert statistics.median(seconds) < 0.02, (what, seconds)
