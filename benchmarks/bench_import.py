"""``sqreen-mw import`` benchmark: events/s from a JSON Lines file into the embedded collector, and peak memory.

Run ``python benchmarks/bench_import.py`` (1,000,000 rows, a few minutes) or ``--quick`` (100,000 rows).

1. **importer alone**: the importer's own work in this process (read, validate, scrub, derive ids, encode, gzip)
   with nothing sent: the most the importer can feed a collector on one core.
2. **end to end**: a fresh ``sqreen-mw serve`` on loopback and a real ``sqreen-mw import FILE -q`` subprocess;
   events/s from start to exit (login, every batch stored, logout), the importer's peak RSS (``wait4``), and the CPU
   seconds each process used per event, which shows which side is the limit.
3. **memory**: the same import of a file a tenth the size: peak RSS must not grow with the file.
4. ``--callgrind``: instructions per row of step 1 (valgrind's callgrind, 0 and 20,000 rows of the same file, the
   difference divided by the rows), independent of the machine's load.

Budget (issue 8): ≥ 20,000 events/s end to end. The table is the output; the exit code is 0 whatever the verdict.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET = 20_000.0
API_KEY = "bench-key"
_NAMES = ("sq.auth_track", "login.failed", "order.placed", "password.reset", "search")
_PATHS = ("/login", "/cart", "/checkout", "/search", "/api/items")
_AGENTS = ("Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0", "curl/8.5.0", "python-httpx/0.27")


def write_rows(path: Path, n: int, offset: int = 0) -> None:
    """``n`` realistic rows: 3 properties, user identifiers on half, a request block, 1 ms apart in May 2024."""
    t0 = 1_714_557_600  # 2024-05-01T10:00:00Z
    with path.open("w") as out:
        for i in range(offset, offset + n):
            ms = t0 * 1000 + i
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
            row: dict[str, object] = {
                "name": _NAMES[i % 5],
                "timestamp": stamp,
                "properties": {"attempt": i % 7, "reason": "bad password", "success": i % 3 == 0},
                "request": {"client_ip": f"203.0.{i % 200}.{i % 250}", "user_agent": _AGENTS[i % 3],
                            "path": _PATHS[i % 5], "verb": "POST", "params": {"next": "/home"}},
            }  # fmt: skip
            if i % 2:
                row["user_identifiers"] = {"email": f"user{i % 5000}@example.com"}
            out.write(json.dumps(row) + "\n")


def importer_alone(path: Path, batch: int = 2000, limit: int | None = None) -> tuple[float, int]:
    """(seconds, rows) of reading, validating, scrubbing, id derivation, encoding and gzip, nothing sent."""
    from sqreen_mw._scrub import Scrubber
    from sqreen_mw.importer._events import EventMaker, encode_items
    from sqreen_mw.importer._source import open_source

    source = open_source(str(path))
    maker = EventMaker(Scrubber(), "default")
    items: list[str] = []
    rows = 0
    started = time.perf_counter()
    for _, row in source.rows():
        if rows == limit:
            break
        assert isinstance(row, dict)
        items.append(maker.make(row))
        rows += 1
        if len(items) == batch:
            gzip.compress(encode_items(items), compresslevel=1)
            items = []
    if items:
        gzip.compress(encode_items(items), compresslevel=1)
    elapsed = time.perf_counter() - started
    source.close()
    return elapsed, rows


def callgrind_per_row(path: Path, rows: int = 20_000) -> float:
    """Instructions per row of :func:`importer_alone` (callgrind, ``rows`` rows minus none)."""
    counts = []
    for n in (0, rows):
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
               "--run-rows", str(n), str(path)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)  # noqa: S603
        match = re.search(r"Collected : (\d+)", done.stderr)
        if match is None:
            raise SystemExit(f"no callgrind total: {done.stderr[-500:]}")
        counts.append(int(match.group(1)))
    return (counts[1] - counts[0]) / rows


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def end_to_end(path: Path, workdir: Path, extra: list[str]) -> dict[str, float]:
    """One import into a fresh collector: wall seconds, importer peak RSS and CPU, collector CPU."""
    db = workdir / f"bench-{time.monotonic_ns()}.db"
    server = subprocess.Popen(  # noqa: S603 -- our own commands
        [sys.executable, "-m", "sqreen_mw.collector.cli", "serve", "--db", str(db), "--api-key", API_KEY,
         "--admin-token", "bench-admin", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        match = None
        for line in server.stdout:  # bounded: the server prints its address, or exits
            match = re.search(r"listening on (http://[\d.]+:\d+)", line)
            if match:
                break
        if not match:
            raise SystemExit("the collector did not start")
        cpu_before = _cpu_seconds(server.pid)
        started = time.perf_counter()
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "sqreen_mw.collector.cli", "import", str(path), "--url", match.group(1),
             "--token", API_KEY, "-q", *extra],
        )  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        collector_cpu = _cpu_seconds(server.pid) - cpu_before
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"the import failed (exit {os.waitstatus_to_exitcode(status)})")
    finally:
        server.terminate()
        server.wait(30)
        if server.stdout:
            server.stdout.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    return {"wall": wall, "rss_kib": usage.ru_maxrss, "importer_cpu": usage.ru_utime + usage.ru_stime,
            "collector_cpu": collector_cpu}  # fmt: skip


def main() -> None:
    if sys.argv[1:2] == ["--run-rows"]:  # the work counted by callgrind_per_row
        importer_alone(Path(sys.argv[3]), limit=int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 rows instead of 1,000,000")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--batch-size", help="passed to sqreen-mw import (default: its own)")
    parser.add_argument("--in-flight", help="passed to sqreen-mw import (default: its own)")
    parser.add_argument("--callgrind", action="store_true", help="also count the importer's instructions per row")
    args = parser.parse_args()
    n = args.rows or (100_000 if args.quick else 1_000_000)
    extra = [flag for name in ("batch_size", "in_flight") if getattr(args, name)
             for flag in (f"--{name.replace('_', '-')}", getattr(args, name))]
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        workdir = Path(tmp)
        big, small = workdir / "big.jsonl", workdir / "small.jsonl"
        write_rows(big, n)
        write_rows(small, n // 10, offset=n)
        size_mb = big.stat().st_size / 1e6
        print(f"{n} rows, {size_mb:.0f} MB of JSON Lines; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
        alone, rows = importer_alone(big)
        print(f"importer alone (nothing sent)   {rows / alone:>9,.0f} events/s  {alone / rows * 1e6:6.1f} µs/event")
        if args.callgrind:
            print(f"  instructions per row (callgrind) {callgrind_per_row(big):,.0f}")
        run = end_to_end(big, workdir, extra)
        rate = n / run["wall"]
        verdict = "ok" if rate >= BUDGET else "BELOW BUDGET"
        print(f"end to end                      {rate:>9,.0f} events/s  (budget {BUDGET:,.0f}: {verdict}), "
              f"{run['wall']:.1f} s")
        print(f"  importer CPU                  {run['importer_cpu'] / n * 1e6:6.1f} µs/event, "
              f"peak RSS {run['rss_kib'] / 1024:.1f} MiB")
        print(f"  collector CPU                 {run['collector_cpu'] / n * 1e6:6.1f} µs/event "
              f"(the collector alone could ingest at most {n / max(run['collector_cpu'], 1e-9):,.0f} events/s)")
        tenth = end_to_end(small, workdir, extra)
        print(f"memory: peak RSS {tenth['rss_kib'] / 1024:.1f} MiB for {n // 10} rows, "
              f"{run['rss_kib'] / 1024:.1f} MiB for {n} rows")
        print(f"load after the run {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
