"""Exit flush in real processes: normal exit (atexit), SIGTERM, collector down or hanging, and fork."""

from __future__ import annotations

import signal
import socket
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from .support import API_KEY, Collector, free_port, output_of, read_line_matching, spawn, stop_process

TRACKER = """
import os, sys, time, sqreen_mw
sqreen_mw.init(sys.argv[1], sys.argv[2], heartbeat_interval=60, shutdown_timeout=float(sys.argv[3]))
for n in range(20):
    sqreen_mw.track("exit.test", properties={"n": n, "pid": os.getpid()})
print("ready", flush=True)
if sys.argv[4] == "sleep":
    time.sleep(60)
"""


def run_tracker(url: str, timeout: float, mode: str) -> tuple[int, float, str]:
    proc = spawn([sys.executable, "-c", TRACKER, API_KEY, url, str(timeout), mode])
    try:
        read_line_matching(proc, r"ready", 30)
        started = time.monotonic()
        if mode == "sleep":
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        return code, time.monotonic() - started, output_of(proc)
    finally:
        stop_process(proc, signal.SIGKILL)


@pytest.fixture
def hanging_collector() -> Iterator[str]:
    """A socket that accepts connections (kernel backlog) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_normal_exit_delivers_queued_events(collector: Collector) -> None:
    code, _, output = run_tracker(collector.url, 5, "exit")
    assert code == 0, output
    assert sorted(e["properties"]["n"] for e in collector.events()) == list(range(20))
    (agent,) = collector.agents()  # the last heartbeat carries the final statistics, then the agent logs out
    assert agent["stats"]["sent"] == 20 and agent["stats"]["tracked"] == 20
    assert agent["logged_out_at"] is not None


def test_sigterm_delivers_then_dies_by_the_signal(collector: Collector) -> None:
    code, elapsed, output = run_tracker(collector.url, 5, "sleep")
    assert code == -signal.SIGTERM, output  # the default handler still ran after the flush
    assert elapsed < 10
    assert sorted(e["properties"]["n"] for e in collector.events()) == list(range(20))


@pytest.mark.parametrize("mode", ["exit", "sleep"])
def test_exit_with_collector_down_is_bounded_and_reported(mode: str) -> None:
    code, elapsed, output = run_tracker(f"http://127.0.0.1:{free_port()}", 1.0, mode)
    assert code == (0 if mode == "exit" else -signal.SIGTERM)
    assert elapsed < 6.0  # the 1 s budget (plus interpreter exit), far below the 10 s request timeout
    assert "20 of 20 queued event(s) undelivered" in output


@pytest.mark.parametrize("mode", ["exit", "sleep"])
def test_exit_with_collector_hanging_is_bounded(hanging_collector: str, mode: str) -> None:
    code, elapsed, output = run_tracker(hanging_collector, 1.0, mode)
    assert code == (0 if mode == "exit" else -signal.SIGTERM), output
    assert elapsed < 6.0
    assert "undelivered" in output


FORKER = """
import os, sys, sqreen_mw
sqreen_mw.init(sys.argv[1], sys.argv[2], heartbeat_interval=60, shutdown_timeout=10)
for n in range(10):
    sqreen_mw.track("fork", properties={"n": n, "who": "parent"})
assert sqreen_mw.flush(10)  # the parent's flusher thread is running when it forks
for n in range(10):
    sqreen_mw.track("fork", properties={"n": n, "who": "parent-late"})  # still queued at fork time
children = []
for k in range(2):
    pid = os.fork()
    if pid == 0:
        for n in range(10):
            sqreen_mw.track("fork", properties={"n": n, "who": f"child{k}"})
        sys.exit(0)
    children.append(pid)
for pid in children:
    assert os.waitpid(pid, 0)[1] == 0
"""


def test_forked_children_deliver_their_own_events_and_none_twice(collector: Collector) -> None:
    proc = spawn([sys.executable, "-c", textwrap.dedent(FORKER), API_KEY, collector.url])
    try:
        assert proc.wait(60) == 0, output_of(proc)
    finally:
        stop_process(proc, signal.SIGKILL)
    events = collector.events()
    assert len({e["id"] for e in events}) == len(events) == 40
    by_who: dict[str, list[int]] = {}
    for e in events:
        by_who.setdefault(e["properties"]["who"], []).append(e["properties"]["n"])
    assert {who: sorted(ns) for who, ns in by_who.items()} == {
        who: list(range(10)) for who in ("parent", "parent-late", "child0", "child1")
    }


IDLE_THEN_EXIT = """
import sys, time, sqreen_mw
sqreen_mw.init(sys.argv[1], sys.argv[2], heartbeat_interval=60)
sqreen_mw.track("idle.test", properties={"n": 0})
assert sqreen_mw.flush(10)
time.sleep(6)  # longer than httpx keeps an idle connection: the exit flush must open a new one (and resolve)
sqreen_mw.track("idle.test", properties={"n": 1})
"""


def test_exit_flush_reconnects_by_host_name(collector: Collector) -> None:
    url = collector.url.replace("127.0.0.1", "localhost")
    proc = spawn([sys.executable, "-c", IDLE_THEN_EXIT, API_KEY, url])
    try:
        assert proc.wait(40) == 0, output_of(proc)
    finally:
        stop_process(proc, signal.SIGKILL)
    assert sorted(e["properties"]["n"] for e in collector.events()) == [0, 1], output_of(proc)
