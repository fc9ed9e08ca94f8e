"""sqreen_mw Event Explorer benchmark: its views on 1,000,000 stored events, and ingest with the rollups on.

Run ``python benchmarks/bench_explorer.py`` (a few minutes: it loads the events twice) or with ``--events 200000``;
``--postgres`` runs the same on PostgreSQL (a throwaway local server, Debian's ``postgresql`` package, durability off:
the figures are the queries', not the disk's), ``--db postgresql://...`` on an existing server's maintenance database
(it replaces two databases there: bench_explorer and bench_explorer_baseline).

1. **ingest**: the same events (30 days of traffic: 12 names, 20,000 IPs, 5,000 users, a third of them
   ``sq.auth_track`` logins, skewed so a few actors do most) go through ``SQLiteStorage.insert_events``
   (``PostgresStorage.store_events`` on PostgreSQL) in 1,000-event batches into two fresh databases, interleaved
   batch group by batch group: one with the explorer's rollups maintained at ingest, one with the rollup maintenance
   switched off (the baseline). events/s of each, and the ratio. Goal: ≥ 50,000 events/s with the rollups on
   (DESIGN §9; on PostgreSQL one thread of one replica: ``bench_postgres.py`` measures two replicas).
2. **views**: each storage query behind an explorer page, on the database with rollups, median of 5 runs (first run
   discarded): overview for 1 h / 24 h / 7 d / 30 d, breakdowns, an actor timeline, filtered event pages. Budget:
   ≤ 200 ms each (DESIGN §9). On a local PostgreSQL server, also the CPU its backends spent per call (read from
   ``/proc``: the server's work, apart from the machine's load).
3. **retention**: the oldest tenth of the events deleted as ``--retention`` does; events/s.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqreen_mw.collector import _sqlite
from sqreen_mw.collector._records import EventRecord
from sqreen_mw.collector._sqlite import SQLiteStorage
from sqreen_mw.collector._sqlite_explorer import ExplorerFilter

BUDGET_MS = 200.0
INGEST_GOAL = 50_000.0
BATCH = 1000
DAY = 86_400.0
_NAMES = (
    "sq.auth_track", "sq.auth_track", "sq.auth_track", "order.placed", "cart.updated", "search", "sq.signup_track",
    "password.reset", "coupon.applied", "profile.updated", "api.key.created", "export.requested",
)  # fmt: skip
_AGENTS = ("Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0", "curl/8.5.0", "python-httpx/0.27")


def _skewed(rng: random.Random, n: int) -> int:
    # A few actors do most of the traffic, as in real attacks and real shops.
    return min(int(rng.paretovariate(1.2)) - 1, n - 1)


def make_records(n: int, now: float, seed: int = 7) -> list[EventRecord]:
    """``n`` events spread over the 30 days before ``now``, oldest first."""
    rng = random.Random(seed)
    start = now - 30 * DAY
    step = 30 * DAY / n
    out: list[EventRecord] = []
    for i in range(n):
        ts = start + i * step
        name = _NAMES[rng.randrange(len(_NAMES))]
        ip = str(ipaddress.IPv4Address(0xCB007100 + _skewed(rng, 20_000) * 7919 % 2**24))
        user = _skewed(rng, 5_000)
        identifiers: dict[str, str | int] | None = {"email": f"user{user}@example.com"} if i % 2 else None
        props: dict[str, Any] = {"reason": rng.choice(("bad password", "unknown user", "ok")), "attempt": i % 5}
        if name == "sq.auth_track":
            props = {"success": rng.random() < 0.3}
        request = {"client_ip": ip, "user_agent": rng.choice(_AGENTS), "path": "/login", "verb": "POST", "params": {}}
        out.append(
            EventRecord(
                str(uuid.UUID(int=rng.getrandbits(128))), name, ts, ts + 0.5, f"shop-{i % 3}", ip, props,
                identifiers, request, None, tuple(str(v) for v in identifiers.values()) if identifiers else (),
            )
        )  # fmt: skip
    return out


def ingest(records: list[EventRecord], where: str) -> tuple[Any, float, float]:
    """Load ``records`` into two databases, with and without rollups; (storage with rollups, both rates).

    ``where``: a directory for two SQLite files, or a PostgreSQL server's maintenance database URL."""
    module: Any = _sqlite
    if where.startswith("postgresql://"):
        from sqreen_mw.collector.postgres import storage as module

        with_rollups = module.PostgresStorage(_new_database(where, "bench_explorer"))
        without = module.PostgresStorage(_new_database(where, "bench_explorer_baseline"))
    else:
        with_rollups = SQLiteStorage(os.path.join(where, "explorer.db"))
        without = SQLiteStorage(os.path.join(where, "baseline.db"))
    # The baseline swaps the rollup step for a no-op: the same insert path minus the rollups. On SQLite that is a
    # module-level hook; on PostgreSQL the counting is part of the batch's statement, whose rollup upserts are given
    # a condition that is never true (the statement keeps its parameters, and counts nothing).
    hook = "_STORE_BATCH" if where.startswith("postgresql://") else "update_rollups"
    real = getattr(module, hook)
    if hook == "_STORE_BATCH":
        off: Any = real.replace("FROM fresh GROUP BY 1, 2", "FROM fresh WHERE false GROUP BY 1, 2").replace(
            ") AS k GROUP BY 1, 2, 3", ") AS k WHERE false GROUP BY 1, 2, 3")
        assert off.count("WHERE false") == 2, "the PostgreSQL batch statement changed: update the baseline"
    else:
        off = lambda db, fresh: None  # noqa: E731
    spent = {"on": 0.0, "off": 0.0}
    group = 50 * BATCH
    for lo in range(0, len(records), group):
        chunk = records[lo : lo + group]
        for label, storage in (("on", with_rollups), ("off", without)):
            setattr(module, hook, real if label == "on" else off)
            t0 = time.perf_counter()
            for b in range(0, len(chunk), BATCH):
                storage.insert_events(chunk[b : b + BATCH])
            spent[label] += time.perf_counter() - t0
        print(f"  loaded {lo + len(chunk):>9,} events", end="\r", file=sys.stderr)
    setattr(module, hook, real)
    print(file=sys.stderr)
    without.close()
    return with_rollups, len(records) / spent["on"], len(records) / spent["off"]


def _new_database(base_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url.rpartition('/')[0]}/{name}"


@contextmanager
def _place(args: argparse.Namespace) -> Iterator[str]:
    """Where the databases go: a temporary directory, or a PostgreSQL server's maintenance database URL."""
    if args.db:
        yield args.db
        return
    if not args.postgres:
        with tempfile.TemporaryDirectory(prefix="bench-explorer-") as directory:
            yield directory
        return
    from tests.postgres_server import PostgresServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL server binary: apt-get install postgresql, or pass --db")
    server = PostgresServer(bin_dir)
    server.start()
    try:
        yield server.url()
    finally:
        server.cleanup()


def timed(fn: Callable[[], Any], runs: int = 5) -> float:
    """Median milliseconds of ``runs`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _server_cpu(storage: Any) -> Callable[[], float] | None:
    """For a PostgreSQL server on this machine: a function giving the CPU seconds its backends on the storage's
    database have used so far (``/proc``), so a view's server work is measured apart from the machine's load.
    None on SQLite (the work is all in this process) or when the backends' ``/proc`` is not readable."""
    if not hasattr(storage, "_tx"):
        return None
    tick = os.sysconf("SC_CLK_TCK")

    def used() -> float:
        with storage._tx() as conn:
            pids = [r[0] for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()").fetchall()]
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    try:
        used()
    except OSError:
        return None
    return used


def run_views(storage: Any, now: float) -> None:
    """Time each view on ``storage`` (events of :func:`make_records` up to ``now``) and print a line per view."""
    top_ip = storage.overview(now - 30 * DAY, now, DAY).ips[0][0]
    user = "user0@example.com"
    views: list[tuple[str, Callable[[], Any]]] = [
        ("overview 1h (1 min buckets)", lambda: storage.overview(now - 3600, now, 60)),
        ("overview 24h (15 min buckets)", lambda: storage.overview(now - DAY, now, 900)),
        ("overview 7d (1 h buckets)", lambda: storage.overview(now - 7 * DAY, now, 3600)),
        ("overview 30d (6 h buckets)", lambda: storage.overview(now - 30 * DAY, now, 6 * 3600)),
    ]
    for span, label in ((DAY, "24h"), (7 * DAY, "7d"), (30 * DAY, "30d")):
        f = ExplorerFilter(since=now - span, until=now)
        for group in ("name", "ip", "property:reason"):
            views.append((f"breakdown {label} by {group}", lambda f=f, g=group: storage.breakdown(f, g)))  # type: ignore[misc]
    by_ip = ExplorerFilter(network=ipaddress.ip_network(top_ip))
    by_user = ExplorerFilter(user=user)
    views += [
        (f"timeline of top IP {top_ip}", lambda: (storage.actor_summary(by_ip), storage.search_events(by_ip, 50))),
        (f"timeline of {user}", lambda: (storage.actor_summary(by_user), storage.search_events(by_user, 50))),
        ("events page, name filter", lambda: storage.search_events(ExplorerFilter(name="password.reset"), 50)),
        ("events page, /16 CIDR", lambda: storage.search_events(
            ExplorerFilter(network=ipaddress.ip_network("203.1.0.0/16")), 50)),
        ("events page, property", lambda: storage.search_events(ExplorerFilter(prop=("success", "true")), 50)),
    ]  # fmt: skip
    cpu = _server_cpu(storage)
    # server CPU: mean CPU milliseconds of PostgreSQL's backends per call (10 ms ticks, over the timed runs).
    print(f"{'view':<44} {'ms':>8}  budget {BUDGET_MS:.0f} ms" + ("   server CPU ms" if cpu else ""))
    for label, fn in views:
        before = cpu() if cpu else 0.0
        ms = timed(fn)
        spent = f"   {(cpu() - before) * 1000 / 6:>8.1f}" if cpu else ""
        print(f"{label:<44} {ms:>8.1f}  {'ok' if ms <= BUDGET_MS else 'OVER':<10}{spent}".rstrip())


def retention(storage: Any, now: float) -> None:
    """Delete the oldest 3 of the 30 days as ``--retention`` does (10,000 events per transaction); print the rate."""
    t0, c0 = time.perf_counter(), time.process_time()
    deleted = chunks = 0
    while True:
        n = storage.delete_events_before(now - 27 * DAY, 10_000)
        deleted, chunks = deleted + n, chunks + 1
        if n < 10_000:
            break
    spent = time.perf_counter() - t0
    print(f"retention: {deleted:,} oldest events deleted in {chunks} transactions, {spent:.1f} s "
          f"({deleted / spent:,.0f} events/s; collector CPU {time.process_time() - c0:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--postgres", action="store_true", help="on a throwaway local PostgreSQL server")
    parser.add_argument("--db", help="on an existing PostgreSQL server: its maintenance database's URL")
    args = parser.parse_args()
    now = time.time()
    print(f"generating {args.events:,} events", file=sys.stderr)
    records = make_records(args.events, now)
    with _place(args) as where:
        storage, rate_on, rate_off = ingest(records, where)
        del records
        print(f"ingest with rollups    {rate_on:>10,.0f} events/s (goal >= {INGEST_GOAL:,.0f})")
        print(f"ingest without rollups {rate_off:>10,.0f} events/s (same run: ratio {rate_on / rate_off:.2f})")
        run_views(storage, now)
        retention(storage, now)
        storage.close()


if __name__ == "__main__":
    main()
