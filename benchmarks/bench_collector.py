"""sqreen_mw collector ingest benchmark: events/s into SQLite, storage alone and end to end over HTTP.

Run ``python benchmarks/bench_collector.py`` (about 60 s) or ``python benchmarks/bench_collector.py --quick``
(about 20 s). See ``benchmarks/README.md`` ("Collector ingest") for what each row means.

1. **storage**: ``SQLiteStorage.insert_events`` with realistic events (3 properties, a request block, user
   identifiers on half of them, time-ordered UUIDs) in 1,000-event batches into a fresh temporary database;
   events/s, median of the rounds. Interleaved round by round with a **baseline**: a bare ``executemany`` INSERT of
   the same rows (already JSON-encoded) into a table with no index and no UNIQUE constraint, one transaction per
   batch, same pragmas. The ratio is the cost of dedup, the admin indexes, the user rows and the JSON encoding.
   The budget of DESIGN §9 (collector ingest ≥ 50,000 events/s into SQLite) applies to this row.
2. **end to end**: the real ``sqreen-mw serve`` in a subprocess (loopback, ``--port 0``), N agent threads with
   ``httpx`` posting gzip batches of 1,000 events (compressed before the clock starts); events/s from the first
   request to the last answer. The load generator shares the machine's CPUs with the server.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

import httpx

from sqreen_mw.collector._sqlite import _PAGE_SIZE, SQLiteStorage, _row
from sqreen_mw.collector._wire import parse_batch

BUDGET = 50_000.0  # events/s, DESIGN §9
BATCH = 1000
API_KEY = "bench-key"
_T0 = 1_714_557_600.0  # 2024-05-01T10:00:00Z
_NAMES = ("login.failed", "login.succeeded", "order.placed", "cart.updated", "search")
_PATHS = ("/login", "/cart", "/checkout", "/search", "/api/items")
_AGENTS = ("Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0", "curl/8.5.0", "python-httpx/0.27")


def _uuid7(ms: int, rng: random.Random) -> str:
    """A time-ordered (version 7) UUID for the millisecond ``ms``."""
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64 | 0b10 << 62 | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def make_events(n: int, start: int, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` wire events (``docs/protocol.md``), the ``start``-th to the ``start + n - 1``-th, 1 ms apart."""
    out: list[dict[str, Any]] = []
    for i in range(start, start + n):
        ts = _T0 + i / 1000
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{i % 1000:03d}000Z"
        out.append(
            {
                "id": _uuid7(int(ts * 1000), rng),
                "name": _NAMES[i % len(_NAMES)],
                "timestamp": stamp,
                "properties": {"item": f"sku-{i % 97}", "quantity": i % 7, "gift": i % 3 == 0},
                "user_identifiers": {"email": f"user{i % 500}@example.com", "id": i % 500} if i % 2 else None,
                "request": {
                    "client_ip": f"203.0.{i % 50}.{i % 251}",
                    "user_agent": _AGENTS[i % len(_AGENTS)],
                    "path": _PATHS[i % len(_PATHS)],
                    "verb": "POST" if i % 4 == 0 else "GET",
                    "params": {"next": "/home", "page": str(i % 10)},
                },
                "body": None,
            }
        )
    return out


def _records(events: list[dict[str, Any]]) -> list[Any]:
    return parse_batch(
        json.dumps({"events": events}).encode(),
        None,
        app="bench",
        received_at=time.time(),
        max_bytes=10 * 2**20,
        max_events=10_000,
    )


# --------------------------------------------------------------------------------------------------------------------
# 1. storage


_BARE_SCHEMA = """
CREATE TABLE events (id TEXT, name TEXT, ts REAL, received_at REAL, app TEXT, client_ip TEXT, properties TEXT,
                     user_identifiers TEXT, request TEXT, body TEXT, ip_key BLOB)
"""


def _storage_round(batches: list[list[Any]], directory: str) -> tuple[float, float]:
    """(events/s over the round, events/s over its last fifth: the database at its largest)."""
    storage = SQLiteStorage(os.path.join(directory, "ours.db"))
    tail_from = len(batches) - max(1, len(batches) // 5)
    try:
        gc.collect()
        t = time.perf_counter()
        for i, records in enumerate(batches):
            if i == tail_from:
                tail_t = time.perf_counter()
            accepted, _ = storage.insert_events(records)
            assert accepted == len(records)
        end = time.perf_counter()
    finally:
        storage.close()
    return sum(map(len, batches)) / (end - t), sum(map(len, batches[tail_from:])) / (end - tail_t)


def _bare_round(rows: list[list[tuple[Any, ...]]], directory: str) -> float:
    conn = sqlite3.connect(os.path.join(directory, "bare.db"), isolation_level=None)
    try:
        for pragma in (f"page_size={_PAGE_SIZE}", "cache_size=-65536", "journal_mode=WAL", "synchronous=NORMAL"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute(_BARE_SCHEMA)
        gc.collect()
        t = time.perf_counter()
        for batch in rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - t
    finally:
        conn.close()
    return sum(map(len, rows)) / elapsed


def bench_storage(n_batches: int, rounds: int) -> tuple[list[float], list[float], list[float]]:
    rng = random.Random(7)
    ours: list[float] = []
    tail: list[float] = []
    bare: list[float] = []
    for r in range(rounds):
        # Fresh events (ids) and a fresh database every round.
        batches = [_records(make_events(BATCH, (r * n_batches + b) * BATCH, rng)) for b in range(n_batches)]
        rows = [[_row(e) for e in batch] for batch in batches]
        with tempfile.TemporaryDirectory(prefix="bench-collector-") as directory:
            if r % 2:
                bare.append(_bare_round(rows, directory))
            whole, last = _storage_round(batches, directory)
            ours.append(whole)
            tail.append(last)
            if not r % 2:
                bare.append(_bare_round(rows, directory))
    return ours, tail, bare


def bench_parse(n_batches: int) -> float:
    """``parse_batch`` alone (gunzip, JSON, validation) on gzip batches: events/s, informational."""
    rng = random.Random(11)
    bodies = [
        gzip.compress(json.dumps({"events": make_events(BATCH, b * BATCH, rng)}).encode()) for b in range(n_batches)
    ]
    gc.collect()
    t = time.perf_counter()
    for body in bodies:
        parse_batch(body, "gzip", app="bench", received_at=time.time(), max_bytes=10 * 2**20, max_events=10_000)
    return n_batches * BATCH / (time.perf_counter() - t)


def bench_growth(total: int, slices: int, directory: str | None) -> list[tuple[int, float]]:
    """``insert_events`` into one database growing to ``total`` events: (events stored at the end of each slice,
    events/s over that slice). Only the inserts are timed (each batch is made and parsed before its clock starts)."""
    rng = random.Random(17)
    per_slice = max(1, total // BATCH // slices)
    out: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-collector-grow-", dir=directory) as tmp:
        storage = SQLiteStorage(os.path.join(tmp, "grow.db"))
        try:
            done = 0
            for _ in range(slices):
                elapsed = 0.0
                for _ in range(per_slice):
                    records = _records(make_events(BATCH, done, rng))
                    t = time.perf_counter()
                    accepted, _ = storage.insert_events(records)
                    elapsed += time.perf_counter() - t
                    assert accepted == BATCH
                    done += BATCH
                out.append((done, per_slice * BATCH / elapsed))
        finally:
            storage.close()
    return out


# --------------------------------------------------------------------------------------------------------------------
# 2. end to end


def _start_server(db: str) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "sqreen_mw.collector.cli", "serve", "--port", "0", "--host", "127.0.0.1"]
    cmd += ["--db", db, "--api-key", API_KEY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"listening on (http://\S+)", line)
            if match and not found:
                found.append(match.group(1))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 20
    while not found and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    if not found:
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise RuntimeError(f"sqreen-mw serve did not start: {err.strip()[-500:]}")
    return proc, found[0]


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def bench_e2e(n_agents: int, n_batches: int, max_seconds: float) -> tuple[float, int]:
    """Events/s through ``sqreen-mw serve``; returns (rate, events accepted)."""
    rng = random.Random(13)
    bodies = [
        gzip.compress(json.dumps({"events": make_events(BATCH, b * BATCH, rng)}).encode()) for b in range(n_batches)
    ]
    shares = [bodies[i::n_agents] for i in range(n_agents)]
    accepted = [0] * n_agents
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-collector-e2e-") as directory:
        proc, url = _start_server(os.path.join(directory, "e2e.db"))
        try:
            clients = [httpx.Client(base_url=url, timeout=60) for _ in range(n_agents)]
            sessions = []
            for client in clients:
                answer = client.post("/api/v1/agent/login", headers={"X-Api-Key": API_KEY}, json={"app_name": "b"})
                answer.raise_for_status()
                sessions.append(answer.json()["session_id"])
            start = threading.Barrier(n_agents + 1)
            deadline = [0.0]

            def agent(i: int) -> None:
                headers = {"X-Session-Key": sessions[i], "Content-Encoding": "gzip", "Content-Type": "application/json"}
                start.wait(timeout=30)
                for body in shares[i]:
                    if time.perf_counter() > deadline[0]:
                        return
                    answer = clients[i].post("/api/v1/agent/batch", headers=headers, content=body)
                    if answer.status_code != 200:
                        failures.append(f"{answer.status_code} {answer.text[:200]}")
                        return
                    accepted[i] += answer.json()["accepted"]

            threads = [threading.Thread(target=agent, args=(i,), daemon=True) for i in range(n_agents)]
            for thread in threads:
                thread.start()
            gc.collect()
            t = time.perf_counter()
            deadline[0] = t + max_seconds
            start.wait(timeout=30)
            for thread in threads:
                thread.join(timeout=max_seconds + 60)
            elapsed = time.perf_counter() - t
            for client in clients:
                client.close()
        finally:
            _stop(proc)
    if failures:
        raise RuntimeError(f"batches refused: {failures[:3]}")
    return sum(accepted) / elapsed, sum(accepted)


# --------------------------------------------------------------------------------------------------------------------


def _k(rate: float) -> str:
    return f"{rate / 1000:,.1f}k/s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and batches (about 20 s)")
    parser.add_argument("--agents", type=int, default=4, help="agent threads of the end-to-end run (default 4)")
    parser.add_argument("--rounds", type=int, default=None, help="storage rounds (default 7, quick 3)")
    parser.add_argument("--grow", type=int, default=0, metavar="N",
                        help="only: insert N events into one growing database, events/s per tenth")  # fmt: skip
    parser.add_argument("--dir", default=None, help="directory of the --grow database (default: the temp dir)")
    args = parser.parse_args()
    if args.grow:
        print(f"sqreen_mw collector ingest vs database size — SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs")
        for stored, rate in bench_growth(args.grow, 10, args.dir):
            print(f"   {stored:>12,} events stored   {_k(rate):>10}")
        return 0
    rounds = args.rounds or (3 if args.quick else 5)
    n_batches = 30 if args.quick else 100
    e2e_batches, e2e_seconds = (24, 10.0) if args.quick else (80, 30.0)

    print(f"sqreen_mw collector ingest — Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
          f"{os.cpu_count()} CPUs; batches of {BATCH} events")  # fmt: skip
    ours, tail, bare = bench_storage(n_batches, rounds)
    median, base = statistics.median(ours), statistics.median(bare)
    verdict = "PASS" if median >= BUDGET else "OVER"
    print(f"\n1. storage: {rounds} rounds x {n_batches * BATCH:,} events into a fresh DB (median, spread min..max)")
    print(f"   insert_events      {_k(median):>10}   ({_k(min(ours))}..{_k(max(ours))})")
    print(f"   ... last fifth     {_k(statistics.median(tail)):>10}   ({_k(min(tail))}..{_k(max(tail))})"
          f"   the database at {n_batches * 4 // 5}k..{n_batches}k events")  # fmt: skip
    print(f"   bare executemany   {_k(base):>10}   ({_k(min(bare))}..{_k(max(bare))})   no index, no dedup")
    print(f"   ratio ours/bare    {median / base:>10.2f}")
    print(f"   budget ≥ {_k(BUDGET)}: {verdict}")
    print(f"   (informational) parse_batch, gzip + JSON + validation: {_k(bench_parse(max(3, n_batches // 2)))}")

    rate, count = bench_e2e(args.agents, e2e_batches, e2e_seconds)
    print(f"\n2. end to end: sqreen-mw serve, {args.agents} agents, gzip batches of {BATCH}")
    print(f"   {count:,} events accepted, {_k(rate)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
