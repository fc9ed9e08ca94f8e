"""Backtest on 1,000,000 stored events: time and peak memory of ``POST /api/v1/playbooks/backtest``'s work.

Run ``python benchmarks/bench_backtest.py [--events N]`` (default 1,000,000; loading them takes a minute or two).
The events are those of ``bench_collector.py`` (five names, 12,550 client IPs, 500 users), one a millisecond; the
playbook watches one name (a fifth of them) by IP with a threshold of 20 in 5 minutes. Reported: seconds, events
scanned per second, firings, and the peak of Python allocations during the backtest (``tracemalloc``), which stays
bounded by the actor cap and the scan's chunk, not by the number of events.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(__file__))

from bench_collector import BATCH, _records, make_events

from sqreen_mw.collector._sqlite import SQLiteStorage
from sqreen_mw.collector.automation import Automation

PLAYBOOK = {"name": "stuffing", "event": "login.failed", "actor": "ip", "threshold": 20, "window": "5m",
            "response": [{"action": "block_ip", "duration": "15m"}]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = random.Random(5)
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        storage = SQLiteStorage(os.path.join(tmp, "b.db"))
        t = time.perf_counter()
        for start in range(0, args.events, BATCH):
            storage.store_events(_records(make_events(min(BATCH, args.events - start), start, rng)))
        print(f"loaded {args.events:,} events in {time.perf_counter() - t:.1f} s")
        automation = Automation(storage)
        tracemalloc.start()
        t = time.perf_counter()
        result = automation.backtest(PLAYBOOK, 0.0, time.time())
        elapsed = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"backtest: {elapsed:.2f} s, {result['events_scanned']:,} events scanned "
              f"({result['events_scanned'] / elapsed:,.0f}/s), {result['firings_total']} firings, "
              f"truncated={result['truncated']}, peak Python allocations {peak / 2**20:.1f} MiB")
        automation.close()
        storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
