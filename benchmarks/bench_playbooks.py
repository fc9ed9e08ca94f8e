"""Playbooks on the ingest path: events/s stored with 0 and with 10 enabled playbooks, in one run.

Run ``python benchmarks/bench_playbooks.py`` (about 30 s; ``--quick`` about 10 s). Each round stores the same kind
of realistic events (those of ``bench_collector.py``, stamped now so that every playbook's window holds them) in
1,000-event batches into a fresh SQLite database, the way ingest does: ``store_events`` then
``Automation.observe``. Rounds alternate between no playbook and 10 playbooks (thresholds, distinct counts,
``where`` conditions with equality, ``in``, numeric bounds and a regex, actors by IP, /24 network, user and
property), so both see the same machine. DESIGN §9 / issue budget: ingest stays ≥ 50,000 events/s with 10
playbooks enabled; the ratio shows what the playbooks cost.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

from bench_collector import BATCH, _records, make_events

from sqreen_mw._schema import format_timestamp
from sqreen_mw.collector._sqlite import SQLiteStorage
from sqreen_mw.collector.automation import Automation, parse_playbook

BUDGET = 50_000.0

PLAYBOOKS: list[dict[str, Any]] = [
    {"name": "stuffing", "event": "login.failed", "actor": "ip", "threshold": 50, "window": "5m"},
    {"name": "spray", "event": "login.failed", "actor": "ip", "distinct": "user", "threshold": 20, "window": "10m"},
    {"name": "distributed", "event": "login.failed", "actor": "user", "distinct": "ip", "threshold": 30,
     "window": "1h", "response": [{"action": "block_user", "duration": "1h"}]},
    {"name": "subnet", "event": ["login.failed", "search"], "actor": "ip", "prefix": 24, "threshold": 500,
     "window": "1m"},
    {"name": "scraper", "event": "search", "actor": "ip", "threshold": 200, "window": "1m",
     "where": {"request.verb": "GET", "request.path": {"regex": "/search.*"}}},
    {"name": "big-orders", "event": "order.placed", "actor": "user", "threshold": 20, "window": "1h",
     "where": {"quantity": {"gte": 5}}, "response": [{"action": "block_user", "duration": "1h"}]},
    {"name": "gift-abuse", "event": "order.placed", "actor": "property:item", "threshold": 400, "window": "1h",
     "where": {"gift": True}, "response": [{"action": "log"}]},
    {"name": "carts", "event": "cart.updated", "actor": "ip", "threshold": 300, "window": "5m",
     "where": {"item": {"in": ["sku-1", "sku-2", "sku-3", "sku-4", "sku-5"]}}},
    {"name": "logins", "event": "login.succeeded", "actor": "user", "distinct": "ip", "threshold": 10,
     "window": "1d", "response": [{"action": "log"}]},
    {"name": "agents", "event": ["login.failed", "login.succeeded"], "actor": "ip", "threshold": 100,
     "window": "10m", "where": {"request.user_agent": {"ne": "curl/8.5.0"}}, "dry_run": True},
]


def playbooks() -> list[Any]:
    out = []
    for spec in PLAYBOOKS:
        spec = {"response": [{"action": "block_ip", "duration": "15m"}], **spec}
        out.append(parse_playbook(spec))
    return out


def fresh_batches(n_batches: int, round_no: int, rng: random.Random) -> list[list[Any]]:
    batches = []
    now = time.time()
    for b in range(n_batches):
        events = make_events(BATCH, (round_no * n_batches + b) * BATCH, rng)
        for i, event in enumerate(events):  # stamped within the last minute: every window holds them
            event["timestamp"] = format_timestamp(now - 60 + (b * BATCH + i) * 60 / (n_batches * BATCH))
        batches.append(_records(events))
    return batches


def one_round(batches: list[list[Any]], with_playbooks: bool, directory: str) -> tuple[float, int]:
    storage = SQLiteStorage(os.path.join(directory, f"r{with_playbooks}.db"))
    automation = Automation(storage, playbooks=playbooks() if with_playbooks else ())
    firings = 0
    try:
        gc.collect()
        t = time.perf_counter()
        for records in batches:
            firings += automation.observe(storage.store_events(records))
        elapsed = time.perf_counter() - t
    finally:
        automation.close()
        storage.close()
    return sum(map(len, batches)) / elapsed, firings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and batches (about 10 s)")
    args = parser.parse_args()
    n_batches, rounds = (20, 4) if args.quick else (60, 6)
    rng = random.Random(11)
    bare: list[float] = []
    ours: list[float] = []
    fired = 0
    for r in range(rounds):
        batches = fresh_batches(n_batches, r, rng)
        with tempfile.TemporaryDirectory(prefix="bench-playbooks-") as directory:
            order = (False, True) if r % 2 else (True, False)
            for with_playbooks in order:
                rate, firings = one_round(batches, with_playbooks, directory)
                (ours if with_playbooks else bare).append(rate)
                fired = max(fired, firings)
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"ingest, {n_batches * BATCH:,} events per round, {rounds} rounds, medians:")
    print(f"  no playbook      {b:>10,.0f} events/s")
    print(f"  10 playbooks     {o:>10,.0f} events/s  ({o / b:.2f} of no playbook; {fired} firings per round)")
    print(f"  playbooks cost   {(1 / o - 1 / b) * 1e6:>10.2f} µs per event")
    print(f"  budget: ≥ {BUDGET:,.0f} events/s with 10 playbooks: {'met' if o >= BUDGET else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
