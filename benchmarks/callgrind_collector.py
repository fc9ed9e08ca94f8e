"""Instructions per event of the collector's ingest steps, counted by callgrind (independent of the machine's load).

Run ``python benchmarks/callgrind_collector.py [STEP ...]`` (valgrind must be installed; a few minutes). Each step
runs twice under ``valgrind --tool=callgrind``, once with 0 and once with K batches of 1,000 events
(``bench_collector.make_events``); the difference divided by the events is one event's cost, interpreter start and
set-up excluded. Steps: ``parse`` (``parse_batch`` on a gzip batch), ``decode`` (``decode_json`` alone), ``row``
(``_row``: column encoding and IP key), ``store`` (``insert_events`` into a database holding 20,000 events),
``bare`` (a bare ``executemany`` of the same rows, encoded beforehand, into a table with no index).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

STEPS = {"parse": 3, "decode": 3, "row": 3, "store": 5, "bare": 5}
PREFILL = 20  # batches stored before the counted ones (store, bare)


def run_step(step: str, k: int) -> None:
    """The work counted: set-up, then ``k`` repetitions of ``step``."""
    from bench_collector import _BARE_SCHEMA, _records, make_events

    from sqreen_mw.collector import _wire
    from sqreen_mw.collector._sqlite import _PAGE_SIZE, SQLiteStorage, _row

    rng = random.Random(5)
    if step in ("parse", "decode", "row"):
        events = make_events(1000, 0, rng)
        body = gzip.compress(json.dumps({"events": events}).encode())
        records = _records(events)
        for _ in range(k):
            if step == "parse":
                _wire.parse_batch(body, "gzip", app="a", received_at=time.time(), max_bytes=10 * 2**20,
                                  max_events=10_000)  # fmt: skip
            elif step == "decode":
                _wire.decode_json(body, "gzip", 10 * 2**20)
            else:
                [_row(e) for e in records]
        return
    # The same events are made whatever k (making them is not the cost counted); only the first PREFILL + k stored.
    made = [_records(make_events(1000, b * 1000, rng)) for b in range(PREFILL + STEPS[step])]
    batches = made[: PREFILL + k]
    with tempfile.TemporaryDirectory(prefix="callgrind-collector-") as directory:
        if step == "store":
            storage = SQLiteStorage(os.path.join(directory, "ours.db"))
            for batch in batches:
                storage.insert_events(batch)
            storage.close()
            return
        # Encoded beforehand, as in bench_collector: the bare insert is SQLite's work alone.
        rows = [[_row(e) for e in batch] for batch in made][: PREFILL + k]
        conn = sqlite3.connect(os.path.join(directory, "bare.db"), isolation_level=None)
        for pragma in (f"page_size={_PAGE_SIZE}", "cache_size=-65536", "journal_mode=WAL", "synchronous=NORMAL"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute(_BARE_SCHEMA)
        for batch_rows in rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch_rows)
            conn.execute("COMMIT")
        conn.close()


def _instructions(step: str, k: int) -> int:
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__, "--run"]
    done = subprocess.run([*cmd, step, str(k)], capture_output=True, text=True, timeout=1800, check=True)  # noqa: S603
    match = re.search(r"Collected : (\d+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no callgrind total for {step}: {done.stderr[-500:]}")
    return int(match.group(1))


def main() -> int:
    if sys.argv[1:2] == ["--run"]:
        run_step(sys.argv[2], int(sys.argv[3]))
        return 0
    steps = sys.argv[1:] or list(STEPS)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        print(f"unknown step(s) {unknown}: choose from {', '.join(STEPS)}", file=sys.stderr)
        return 2
    print(f"sqreen_mw collector ingest, instructions per event (callgrind) — Python {sys.version.split()[0]}, "
          f"SQLite {sqlite3.sqlite_version}")  # fmt: skip
    for step in steps:
        k = STEPS[step]
        per_event = (_instructions(step, k) - _instructions(step, 0)) / (k * 1000)
        print(f"   {step:8} {per_event:>10,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
