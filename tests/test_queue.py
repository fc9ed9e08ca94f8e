"""The bounded queue: drop-oldest by count and by bytes, counters, in-flight accounting, expiry."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from sqreen_mw._queue import EventQueue


def rec(seq: int, size: int = 100, tracked_ns: int | None = None) -> tuple[object, ...]:
    return (tracked_ns if tracked_ns is not None else time.time_ns(), seq, "e", None, None, None, None, None, size)


def test_count_bound_drops_the_oldest_and_counts() -> None:
    q = EventQueue(max_events=3, max_bytes=10**9)
    for i in range(1, 6):
        q.put(rec(i))
    assert [r[1] for r in q.take(10)] == [3, 4, 5]
    assert q.statistics()["dropped"] == {"queue_full": 2}
    assert q.statistics()["tracked"] == 5


def test_byte_bound_drops_the_oldest() -> None:
    q = EventQueue(max_events=100, max_bytes=250)
    for i in range(1, 5):
        q.put(rec(i, size=100))
    stats = q.statistics()
    assert stats["queued"] == 2 and stats["queued_bytes"] == 200
    assert stats["dropped"] == {"queue_full": 2}


def test_given_back_batch_goes_first_and_in_flight_is_not_settled() -> None:
    q = EventQueue(max_events=10, max_bytes=10**9)
    for i in range(1, 5):
        q.put(rec(i))
    batch = q.take(2)
    assert q.settled_through() == 0  # 1 and 2 are in flight
    q.give_back(batch)
    assert q.settled_through() == 0
    assert [r[1] for r in q.take(10)] == [1, 2, 3, 4]
    q.done()
    assert q.settled_through() == float("inf")


def test_give_back_over_the_bound_sheds_the_oldest() -> None:
    q = EventQueue(max_events=3, max_bytes=10**9)
    for i in range(1, 4):
        q.put(rec(i))
    batch = q.take(3)
    for i in range(4, 6):
        q.put(rec(i))
    q.give_back(batch)
    assert [r[1] for r in q.take(10)] == [3, 4, 5]
    assert q.dropped == {"queue_full": 2}


def test_expire_drops_by_track_time_only() -> None:
    q = EventQueue(max_events=10, max_bytes=10**9)
    now = time.time_ns()
    q.put(rec(1, tracked_ns=now - 10 * 10**9))
    q.put(rec(2, tracked_ns=now))
    assert q.expire(now - 5 * 10**9) == 1
    assert [r[1] for r in q.take(10)] == [2]
    assert q.dropped == {"expired": 1}


def test_concurrent_producers_lose_nothing_uncounted() -> None:
    q = EventQueue(max_events=1000, max_bytes=10**9)

    def produce(base: int) -> None:
        for i in range(5000):
            q.put(rec(base + i, size=1))

    threads = [threading.Thread(target=produce, args=(n * 10_000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = q.statistics()
    assert stats["tracked"] == 20_000
    assert stats["queued"] + stats["dropped"]["queue_full"] == 20_000
    assert stats["queued"] == 1000 and stats["queued_bytes"] == 1000


def test_dropped_since_tells_whether_a_drop_took_an_old_enough_record() -> None:
    q = EventQueue(max_events=2, max_bytes=10**9)
    q.put(rec(1))
    mark = q.drop_ops
    assert not q.dropped_since(mark, 1)
    q.put(rec(2))
    q.put(rec(3))  # sheds record 1
    assert q.dropped_since(mark, 1)
    mark = q.drop_ops
    q.put(rec(4))  # sheds record 2
    assert q.dropped_since(mark, 2) and not q.dropped_since(mark, 1)
    q.drop("rejected", 1, first_seq=9)
    assert not q.dropped_since(q.drop_ops - 1, 8)


_TRACKING_HANDLER = """
import logging, os, sys, threading
import sqreen_mw

class Tracking(logging.Handler):  # an app's handler that records its own warnings as events
    def emit(self, record):
        sqreen_mw.track("log.warning", properties={"logger": record.name})

logging.getLogger("sqreen_mw").addHandler(Tracking())
threading.Timer(20, lambda: (print("deadlock", flush=True), os._exit(3))).start()
client = sqreen_mw.init(token="t", url="http://127.0.0.1:9", max_queue_events=3, heartbeat_interval=3600,
                        install_signal_handler=False)
client._started_pid = os.getpid()  # no flusher: the queue fills and sheds
for i in range(6):
    sqreen_mw.track("e")
print("ok", client.queue.statistics()["dropped"], flush=True)
os._exit(0)
"""


@pytest.mark.parametrize("pure", ["0", "1"], ids=["compiled", "pure-python"])
def test_a_logging_handler_that_tracks_does_not_deadlock_the_queue(pure: str) -> None:
    # The drop warning is logged while the queue's lock is held: a handler calling track() re-enters put().
    env = {**os.environ, "SQREEN_MW_PURE_PYTHON": pure}
    out = subprocess.run([sys.executable, "-c", _TRACKING_HANDLER], env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0 and out.stdout.startswith("ok {'queue_full': "), (out.stdout, out.stderr[-2000:])
