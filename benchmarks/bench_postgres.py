"""sqreen_mw collector ingest into PostgreSQL: events/s with two replicas sharing one database.

Run ``python benchmarks/bench_postgres.py`` (about a minute; ``--quick`` about 20 s). Without ``--url`` it starts a
throwaway local PostgreSQL server (Debian's ``postgresql`` package; as root it runs as the ``postgres`` user) with
PostgreSQL's default durability (``fsync`` and ``synchronous_commit`` on) unless ``--no-fsync``.
See ``docs/deployment.md`` ("Sizing") for the figures measured and what they mean.

1. **storage**: two ``PostgresStorage`` instances (two replicas' pools) on one database, ``--threads`` writer
   threads each, inserting 1,000-event batches of realistic events (those of ``bench_collector.py``); events/s from
   the first batch to the last commit and a fold of the rollup counts left. No HTTP, no JSON parsing: the database
   path alone.
2. **end to end**: two ``sqreen-mw serve --db postgresql://...`` processes, ``--agents`` agent threads split across
   them posting gzip batches of 1,000 events (compressed before the clock starts); events/s from the first request
   to the last answer. The load generator, both replicas and PostgreSQL share the machine's CPUs.

With ``--cpu`` (the throwaway server only), the storage run also reports the CPU time per stored event of the
PostgreSQL server (every process of it: the backends, and the WAL writer, checkpointer and autovacuum workers, read
from ``/proc``) and of this process (the two replicas' pools), in µs: figures that drift less than the wall time on a
shared machine. ``--repeat N`` runs the storage benchmark N times, each into a new database.

3. **listings** (``--listings N``, e.g. 1000000): N events loaded, then the admin API's event listings (newest,
   by name, IP, user, a time range; 101 rows each) and a 50-page cursor walk, median and max of 7 runs, in ms.

The budget of issue 9: ≥ 50,000 events/s into a local PostgreSQL with two replicas.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_collector import API_KEY, BATCH, _records, _start_server, _stop, make_events  # noqa: E402

from sqreen_mw.collector.postgres.storage import PostgresStorage  # noqa: E402

BUDGET = 50_000.0  # events/s, issue 9


def _new_database(base_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, _ = base_url.rpartition("/")
    return f"{head}/{name}"


_TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(data_dir: Path) -> dict[str, float]:
    """Seconds of CPU spent so far by a PostgreSQL server, by kind of process: ``backend`` (the connections),
    ``walwriter``, ``checkpointer``, ``background writer``, ``autovacuum`` and ``other`` (postmaster, launchers),
    ``exited`` (the children reaped, autovacuum workers mostly)."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    ticks: dict[str, int] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:  # exited meanwhile
            continue
        if int(pid) == postmaster:
            ticks["other"] = ticks.get("other", 0) + int(fields[11]) + int(fields[12])
            ticks["exited"] = ticks.get("exited", 0) + int(fields[13]) + int(fields[14])
        elif int(fields[1]) == postmaster:
            kind = next((k for k in ("walwriter", "checkpointer", "background writer", "autovacuum worker")
                         if title.startswith(f"postgres: {k}")), "other" if "launcher" in title else "backend")
            kind = kind.replace(" worker", "")
            ticks[kind] = ticks.get(kind, 0) + int(fields[11]) + int(fields[12])
    return {kind: n / _TICK for kind, n in ticks.items()}


def _wal_state(url: str) -> tuple[int, int]:
    """(WAL position in bytes, checkpoints so far) of the server."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn,"
                           " checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def bench_storage(url: str, n_batches: int, threads: int, data_dir: Path | None = None) -> float:
    rng = random.Random(7)
    batches = [_records(make_events(BATCH, b * BATCH, rng)) for b in range(n_batches)]
    replicas = [PostgresStorage(url, pool_size=threads + 1), PostgresStorage(url, pool_size=threads + 1)]
    try:
        writers = 2 * threads
        shares = [batches[i::writers] for i in range(writers)]
        stored = [0] * writers
        start = threading.Barrier(writers + 1)

        def write(i: int) -> None:
            store = replicas[i % 2]
            start.wait(timeout=30)
            for batch in shares[i]:
                stored[i] += store.insert_events(batch)[0]

        workers = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(writers)]
        for worker in workers:
            worker.start()
        gc.collect()
        cpu = (time.process_time(), server_cpu(data_dir)) if data_dir else (0.0, {})
        wal = _wal_state(url) if data_dir else (0, 0)
        t = time.perf_counter()
        start.wait(timeout=30)
        for worker in workers:
            worker.join(timeout=600)
        replicas[0].fold_rollups()  # the rollup counts the run left to fold are part of its work
        elapsed = time.perf_counter() - t
        assert sum(stored) == n_batches * BATCH, sum(stored)
        if data_dir:
            n = sum(stored)
            mine, now = time.process_time() - cpu[0], server_cpu(data_dir)
            kinds = {kind: now[kind] - cpu[1].get(kind, 0.0) for kind in now}
            server = sum(kinds.values())
            parts = ", ".join(f"{kind} {s / n * 1e6:.1f}" for kind, s in sorted(kinds.items(), key=lambda i: -i[1])
                              if s > 0)
            wal_now = _wal_state(url)
            print(f"   CPU per event: server {server / n * 1e6:.1f} us ({parts}), replicas {mine / n * 1e6:.1f} us"
                  f" (load average {os.getloadavg()[0]:.1f})")
            print(f"   WAL {(wal_now[0] - wal[0]) / n:,.0f} bytes per event, {wal_now[1] - wal[1]} checkpoints")
        return sum(stored) / elapsed
    finally:
        for store in replicas:
            store.close()


def bench_e2e(url: str, n_agents: int, n_batches: int, max_seconds: float) -> tuple[float, int]:
    rng = random.Random(13)
    bodies = [gzip.compress(json.dumps({"events": make_events(BATCH, b * BATCH, rng)}).encode())
              for b in range(n_batches)]
    shares = [bodies[i::n_agents] for i in range(n_agents)]
    accepted = [0] * n_agents
    failures: list[str] = []
    servers = [_start_server(url), _start_server(url)]
    try:
        clients = [httpx.Client(base_url=servers[i % 2][1], timeout=60) for i in range(n_agents)]
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
        for proc, _ in servers:
            _stop(proc)
    if failures:
        raise RuntimeError(f"batches refused: {failures[:3]}")
    return sum(accepted) / elapsed, sum(accepted)


def bench_listings(url: str, n: int) -> None:
    import statistics
    import uuid

    from sqreen_mw.collector._records import EventQuery

    store = PostgresStorage(url)
    try:
        rng = random.Random(3)
        template = [_records(make_events(BATCH, b * BATCH, rng)) for b in range(20)]

        def load(part: int) -> None:
            for b in range(part, n // BATCH, 4):
                store.insert_events([e._replace(id=str(uuid.uuid4()), ts=e.ts + (b // 20) * 20.0)
                                     for e in template[b % 20]])

        loaders = [threading.Thread(target=load, args=(i,)) for i in range(4)]
        t = time.perf_counter()
        for loader in loaders:
            loader.start()
        for loader in loaders:
            loader.join()
        print(f"3. listings: {n:,} events loaded in {time.perf_counter() - t:.0f} s")
        with store._tx() as conn:
            conn.execute("ANALYZE")
        newest = store.query_events(EventQuery(limit=200))
        user = next(u for e in newest for u in e.users)
        queries: dict[str, EventQuery | None] = {
            "newest": EventQuery(limit=101), "by name": EventQuery(name=newest[0].name, limit=101),
            "by ip": EventQuery(ip=newest[0].client_ip, limit=101), "by user": EventQuery(user=user, limit=101),
            "time range": EventQuery(since=newest[0].ts - 3600, until=newest[0].ts - 1800, limit=101),
            "50 pages (cursor)": None,
        }
        for label, query in queries.items():
            times = []
            for _ in range(7):
                t = time.perf_counter()
                if query is None:
                    after: tuple[float, int] | None = None
                    for _ in range(50):
                        rows = store.query_events(EventQuery(limit=101, after=after))
                        after = (rows[-1].ts, rows[-1].seq)
                else:
                    store.query_events(query)
                times.append((time.perf_counter() - t) * 1000)
            print(f"   {label:18} median {statistics.median(times):7.1f} ms   max {max(times):7.1f} ms")
    finally:
        store.close()


def _k(rate: float) -> str:
    return f"{rate / 1000:,.1f}k"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="an existing server's maintenance database, e.g. postgresql://me@host/postgres "
                                      "(databases bench_storage and bench_e2e are dropped and made there)")
    parser.add_argument("--no-fsync", action="store_true", help="throwaway server without durability")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="writer threads per replica, storage run")
    parser.add_argument("--agents", type=int, default=4, help="agent threads of the end-to-end run")
    parser.add_argument("--cpu", action="store_true", help="CPU per event of the server and the replicas")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="storage runs (each in a new database)")
    parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end run")
    parser.add_argument("--listings", type=int, default=0, metavar="N", help="also time listings on N events")
    args = parser.parse_args()
    n_batches = 60 if args.quick else 200
    server: Any = None
    if args.url:
        base = args.url
    else:
        from tests.postgres_server import PostgresServer, find_bin_dir

        bin_dir = find_bin_dir()
        if bin_dir is None:
            print("no PostgreSQL server binary: apt-get install postgresql, or pass --url", file=sys.stderr)
            return 2
        server = PostgresServer(bin_dir, durable=not args.no_fsync)
        server.start()
        base = server.url()
    try:
        print(f"PostgreSQL ingest, two replicas, batches of {BATCH} ({'throwaway server' if server else base}, "
              f"fsync {'off' if args.no_fsync else 'on'})")
        data_dir = server.data if server is not None and args.cpu else None
        for _ in range(args.repeat):
            rate = bench_storage(_new_database(base, "bench_storage"), n_batches, args.threads, data_dir)
            print(f"1. storage: {n_batches * BATCH:,} events, 2 replicas x {args.threads} threads: {_k(rate)} "
                  f"events/s ({rate / BUDGET:.2f}x the 50k budget)")
        if args.no_e2e:
            return 0
        rate, n = bench_e2e(_new_database(base, "bench_e2e"), args.agents, n_batches, 30.0 if args.quick else 60.0)
        print(f"2. end to end: 2 x sqreen-mw serve, {args.agents} agents: {n:,} events, {_k(rate)} events/s "
              f"({rate / BUDGET:.2f}x the 50k budget)")
        if args.listings:
            bench_listings(_new_database(base, "bench_listings"), args.listings)
    finally:
        if server is not None:
            server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
