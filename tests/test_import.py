"""``sqreen-mw import``: real ``sqreen-mw import`` processes against the real collector on loopback."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sqreen_mw._schema import REDACTED
from sqreen_mw._scrub import Scrubber
from sqreen_mw.importer._command import add_arguments
from sqreen_mw.importer._events import EventMaker

from .support import API_KEY, ROOT, Collector, FaultyProxy, free_port, serve_in_thread, start_collector

pytestmark = pytest.mark.e2e
TIMEOUT = 240.0
SUMMARY = re.compile(
    r"(\d+) rows read in [\d.]+ s \(\d+ rows/s\): (\d+) sent, (\d+) stored, (\d+) duplicates, (\d+) rejected, "
    r"(\d+) not delivered, (\d+) retries"
)


def _row(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": "login.failed",
        "timestamp": f"2024-05-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
        "properties": {"attempt": i % 7, "reason": "bad password"},
        "user_identifiers": {"email": f"user{i % 100}@example.com"},
        "request": {"client_ip": f"203.0.113.{i % 250}", "user_agent": "curl/8.5", "path": "/login", "verb": "POST",
                    "params": {"next": "/home"}},
        **extra,
    }  # fmt: skip


def write_jsonl(path: Path, n: int, start: int = 0) -> Path:
    with path.open("w") as out:
        for i in range(start, start + n):
            out.write(json.dumps(_row(i)) + "\n")
    return path


def import_args(collector: Collector | str, *args: str) -> list[str]:
    url = collector if isinstance(collector, str) else collector.url
    return [sys.executable, "-m", "sqreen_mw.collector.cli", "import", *args, "--url", url, "--token", API_KEY]


def run_import(collector: Collector | str, *args: str, stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
        return subprocess.run(
            import_args(collector, *args), stdin=source, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT,
            check=False,
        )  # fmt: skip


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    match = SUMMARY.search(result.stdout)
    assert match, f"no summary in stdout={result.stdout!r} stderr={result.stderr[-3000:]!r}"
    keys = ("rows", "sent", "stored", "duplicates", "rejected", "undelivered", "retries")
    return dict(zip(keys, map(int, match.groups()), strict=True))


def count(collector: Collector, **filters: Any) -> int:
    return len(collector.events(**filters))


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    with start_collector(tmp_path / "events.db") as running:
        yield running


def test_jsonl_good_rows_stored_bad_rows_reported_by_line(collector: Collector, tmp_path: Path) -> None:
    lines = [
        json.dumps(_row(1)),
        "{not json",
        json.dumps(_row(2, properties={"password": "hunter2", "card": "4111 1111 1111 1111", "n": 1})),
        json.dumps({**_row(3), "timestamp": "yesterday"}),
        "",
        json.dumps({**_row(4), "nmae": "typo"}),
        json.dumps({**_row(5), "timestamp": "2999-01-01T00:00:00Z"}),
        json.dumps({**_row(6), "properties": {f"k{i}": i for i in range(17)}}),
        json.dumps({"name": "sq.auth_track", "timestamp": "2024-05-01T10:00:00+02:00", "properties": {"success": False},
                    "user_identifiers": {"email": "ann@example.com"}}),
        "[1, 2]",
        json.dumps({**_row(7), "id": "not-a-uuid"}),
        json.dumps({**_row(8), "id": "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B"}),
        json.dumps({**_row(9), "request": {"client_ip": 12}}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = run_import(collector, str(path))
    assert result.returncode == 1, result.stderr
    err = result.stderr
    assert "line 2: invalid JSON" in err
    assert "line 4: timestamp must be ISO 8601, got 'yesterday'" in err
    assert "line 6: unknown field 'nmae'" in err
    assert re.search(r"line 7: timestamp must not be more than 3600 s in the future", err)
    assert "line 8: properties may have at most 16 entries" in err
    assert "line 10: row must be a JSON object, got list" in err
    assert "line 11: id must be a UUID in canonical 8-4-4-4-12 hex form, got 'not-a-uuid'" in err
    assert "line 13: request.client_ip must be a str or null, got int 12" in err
    assert "line 1:" not in err and "line 3:" not in err and "line 5:" not in err and "line 9:" not in err
    assert summary(result) == {"rows": 12, "sent": 4, "stored": 4, "duplicates": 0, "rejected": 8,
                               "undelivered": 0, "retries": 0}  # fmt: skip
    events = {e["name"] + e["timestamp"]: e for e in collector.events()}
    assert len(events) == 4
    scrubbed = events["login.failed2024-05-01T00:00:02.002000Z"]["properties"]
    assert scrubbed == {"password": REDACTED, "card": REDACTED, "n": 1}
    auth = events["sq.auth_track2024-05-01T08:00:00.000000Z"]  # offsets normalised to UTC
    assert auth["user_identifiers"] == {"email": "ann@example.com"}
    assert auth["request"] is None
    assert "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b" in {e["id"] for e in events.values()}


def test_csv_columns_types_and_bad_rows(collector: Collector, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "name,timestamp,user.email,prop.attempt:int,prop.ratio:float,prop.success:bool,prop.reason,ip,user_agent,"
        "path,verb,param.next\n"
        "login.failed,2024-05-01T10:00:00Z,ann@example.com,2,0.5,false,\"bad, password\",203.0.113.7,curl/8.5,"
        "/login,POST,/home\n"
        "login.failed,2024-05-01T10:00:01Z,bob@example.com,two,,,,,,,,\n"
        "signup,2024-05-01T10:00:02Z,,,,,,,,,,\n"
        "signup,2024-05-01T10:00:03Z,cy@example.com\n"
        ",2024-05-01T10:00:04Z,,,,,,,,,,\n"
    )
    result = run_import(collector, str(path))
    assert result.returncode == 1, result.stderr
    assert "line 3: column 'prop.attempt:int' must be an int, got 'two'" in result.stderr
    assert "line 5: row has 3 cells, the header has 12 columns" in result.stderr
    assert "line 6: name is missing: every event needs a name, such as 'login.failed'" in result.stderr
    assert summary(result)["stored"] == 2
    stored = {e["name"]: e for e in collector.events()}
    login = stored["login.failed"]
    assert login["properties"] == {"attempt": 2, "ratio": 0.5, "success": False, "reason": "bad, password"}
    assert login["user_identifiers"] == {"email": "ann@example.com"}
    assert login["request"] == {"client_ip": "203.0.113.7", "user_agent": "curl/8.5", "path": "/login",
                                "verb": "POST", "params": {"next": "/home"}}  # fmt: skip
    assert stored["signup"]["properties"] == {}
    assert stored["signup"]["user_identifiers"] is None
    assert stored["signup"]["request"] is None


def test_example_files_import_cleanly(collector: Collector) -> None:
    for name in ("events.jsonl", "events.csv"):
        result = run_import(collector, str(ROOT / "examples" / "import" / name))
        assert result.returncode == 0, result.stdout + result.stderr
        assert summary(result)["rejected"] == 0


def test_unknown_csv_column_is_a_usage_error(collector: Collector, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("name,timestamp,props.attempt\nx,2024-05-01T10:00:00Z,1\n")
    result = run_import(collector, str(path))
    assert result.returncode == 2
    assert "unknown CSV column 'props.attempt'" in result.stderr
    path.write_text("name,user.email\nx,ann@example.com\n")
    result = run_import(collector, str(path))
    assert result.returncode == 2
    assert "the CSV header has no timestamp column" in result.stderr
    path.write_text("login.failed,2026-12-01T10:00:00Z,203.0.113.5\nlogin.failed,2026-12-01T10:00:01Z,203.0.113.5\n")
    result = run_import(collector, str(path))  # no header line at all: said so, not "unknown column 'login.failed'"
    assert result.returncode == 2
    assert "names none ('login.failed', '2026-12-01T10:00:00Z', '203.0.113.5'): add a header line" in result.stderr
    assert count(collector) == 0


@pytest.mark.parametrize("how", ["guessed", "stdin", "--format jsonl"])
def test_a_csv_file_read_as_json_lines_says_to_use_format_csv(collector: Collector, tmp_path: Path, how: str) -> None:
    path = tmp_path / "logins.txt"  # not *.csv: read as JSON Lines unless told
    path.write_bytes((ROOT / "examples" / "import" / "events.csv").read_bytes())
    if how == "stdin":
        result = run_import(collector, "-", stdin=path)
    else:
        result = run_import(collector, str(path), *(["--format", "jsonl"] if how == "--format jsonl" else []))
    assert result.returncode == 2, result.stderr
    assert "line 1 is not JSON but a CSV header (name, timestamp, " in result.stderr, result.stderr
    assert "looks like CSV: use --format csv" in result.stderr
    assert "invalid JSON" not in result.stderr  # one line, not one error per row
    assert (count(collector), collector.agents()) == (0, [])  # stopped before logging in
    again = run_import(collector, str(path), "--format", "csv")
    assert again.returncode == 0, again.stderr


def test_a_broken_first_json_line_is_not_taken_for_csv(collector: Collector, tmp_path: Path) -> None:
    # A file cut at a byte offset (split -b) starts inside an object: that line is a bad row, the rest imported.
    path = tmp_path / "part2.jsonl"
    path.write_text('stamp": "2024-05-01T00:00:00Z", "name": "a.b"}\n' + json.dumps(_row(1)) + "\n")
    result = run_import(collector, str(path))
    assert result.returncode == 1, result.stderr
    assert "line 1: invalid JSON" in result.stderr
    assert "CSV" not in result.stderr
    assert summary(result)["stored"] == 1


_NO_ROWS = [
    ("empty.jsonl", b"", "is empty"),
    ("blank.jsonl", b"\n  \n\n", "has only blank lines"),
    ("empty.jsonl.gz", gzip.compress(b"", mtime=0), "is empty"),
    ("empty.csv", b"", "is empty"),
    ("blank.csv", b"\r\n\r\n", "has only blank lines"),
    ("header.csv", b"name,timestamp,prop.attempt:int\n\n", "has a CSV header and no rows"),
    ("header.csv.gz", gzip.compress(b"\xef\xbb\xbfname,timestamp\r\n", mtime=0), "has a CSV header and no rows"),
]


@pytest.mark.parametrize(("name", "content", "what"), _NO_ROWS, ids=[name for name, _, _ in _NO_ROWS])
def test_an_input_without_rows_says_so_and_is_a_usage_error(
    collector: Collector, tmp_path: Path, name: str, content: bytes, what: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = run_import(collector, str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"sqreen-mw import: error: {path} {what}: nothing to import\n"
    assert result.stdout == ""
    assert collector.agents() == []  # decided before logging in
    piped = run_import(collector, "-", "--format", "csv" if ".csv" in name else "jsonl", stdin=path)
    assert piped.returncode == 2
    assert piped.stderr == f"sqreen-mw import: error: stdin {what}: nothing to import\n"


def test_usage_errors(collector: Collector, tmp_path: Path) -> None:
    result = run_import(collector, str(tmp_path / "missing.jsonl"))
    assert (result.returncode, "cannot open") == (2, "cannot open")
    assert "missing.jsonl" in result.stderr
    refused = subprocess.run(
        [sys.executable, "-m", "sqreen_mw.collector.cli", "import", str(write_jsonl(tmp_path / "a.jsonl", 1)),
         "--url", collector.url, "--token", "wrong-key"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "refused the API key" in refused.stderr
    nobody = run_import(f"http://127.0.0.1:{free_port()}", str(tmp_path / "a.jsonl"), "--retry-for", "1")
    assert nobody.returncode == 2
    assert "cannot log in" in nobody.stderr


def _import_with_env(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_")}
    return subprocess.run(
        [sys.executable, "-m", "sqreen_mw.collector.cli", "import", *args], capture_output=True, text=True,
        timeout=TIMEOUT, cwd=ROOT, check=False, env={**environ, **env},
    )  # fmt: skip


def test_a_bad_or_unreachable_url_is_named_with_where_it_came_from(tmp_path: Path) -> None:
    path = str(write_jsonl(tmp_path / "a.jsonl", 1))
    nobody = f"http://127.0.0.1:{free_port()}"
    given = _import_with_env(path, "--url", nobody, "--token", API_KEY)
    assert given.returncode == 2
    assert f"cannot log in to the collector at {nobody} (from --url): ConnectError" in given.stderr, given.stderr
    from_env = _import_with_env(path, SQREEN_URL=nobody, SQREEN_TOKEN=API_KEY)
    assert from_env.returncode == 2
    assert f"cannot log in to the collector at {nobody} (from SQREEN_URL): ConnectError" in from_env.stderr
    assert "Traceback" not in given.stderr + from_env.stderr
    bad = _import_with_env(path, "--url", "ftp://example.com", "--token", API_KEY)
    assert bad.returncode == 2
    assert "--url must be an http:// or https:// URL, got 'ftp://example.com'" in bad.stderr, bad.stderr
    bad_env = _import_with_env(path, SQREEN_URL="127.0.0.1:8707", SQREEN_TOKEN=API_KEY)
    assert bad_env.returncode == 2
    assert "SQREEN_URL must be an http:// or https:// URL, got '127.0.0.1:8707'" in bad_env.stderr, bad_env.stderr


def test_the_default_url_says_it_is_the_default(tmp_path: Path) -> None:
    # Nothing set: http://127.0.0.1:8707, which a test cannot count on being free, so it is only checked that the
    # message names it and where it came from (or that a collector running there took the row).
    result = _import_with_env(str(write_jsonl(tmp_path / "a.jsonl", 1)), SQREEN_TOKEN="no-such-key")
    assert result.returncode == 2
    assert re.search(r"the collector at http://127\.0\.0\.1:8707 \(the default: pass --url or set SQREEN_URL\)",
                     result.stderr), result.stderr


def test_same_file_twice_stores_nothing_twice_whatever_the_packaging(collector: Collector, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", 3000)
    first = run_import(collector, str(path))
    assert first.returncode == 0, first.stderr
    assert summary(first)["stored"] == 3000
    second = run_import(collector, str(path))
    assert second.returncode == 0, second.stderr
    assert (summary(second)["stored"], summary(second)["duplicates"]) == (0, 3000)
    gz = tmp_path / "events.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    for again in (run_import(collector, str(gz), "--gzip", "always"), run_import(collector, "-", stdin=gz)):
        assert again.returncode == 0, again.stderr
        assert (summary(again)["stored"], summary(again)["duplicates"]) == (0, 3000)
    assert count(collector) == 3000


def test_content_id_is_stable_canonical_and_a_uuid8() -> None:
    maker = EventMaker(Scrubber(), "shop")
    row = _row(1)
    same = {**row, "properties": dict(reversed(list(row["properties"].items()))),
            "timestamp": "2024-05-01T02:00:01.001+02:00"}  # fmt: skip
    a, b = maker.event(row), maker.event(same)
    assert a["id"] == b["id"]
    parsed = uuid.UUID(a["id"])
    assert (parsed.version, parsed.variant) == (8, uuid.RFC_4122)
    assert maker.event({**row, "name": "other"})["id"] != a["id"]
    assert EventMaker(Scrubber(), "blog").event(row)["id"] != a["id"]
    # Derived after scrubbing: two rows differing only in a secret get the same id, so ids reveal nothing of it.
    secret = {**row, "properties": {"password": "hunter2"}}
    assert maker.event(secret)["id"] == maker.event({**secret, "properties": {"password": "letmein"}})["id"]


def test_collector_refusals_named_by_line_and_the_rest_stored(collector: Collector, tmp_path: Path) -> None:
    # The importer validates what the collector does; a refusal it cannot foresee (a newer collector's rule) is
    # a 422 naming the batch positions: the importer names those rows by line and resends the others.
    path = tmp_path / "events.jsonl"
    rows = [json.dumps(_row(i)) for i in range(10)]
    rows[7] = json.dumps({**_row(7), "name": "bad\ud800"})  # refused locally, before sending
    path.write_text("\n".join(rows) + "\n")
    refusal = {"error": "1 invalid event", "errors": [{"index": 4, "id": None, "field": "properties",
                                                       "message": "properties.attempt is not allowed here"}]}
    proxy = FaultyProxy(collector.url, [(422, {}, refusal)])
    with serve_in_thread(proxy.app) as url:
        result = run_import(url, str(path), "--in-flight", "1")
    assert result.returncode == 1
    assert re.search(r"line 8: event_name must be valid Unicode", result.stderr)
    assert re.search(r"line 5: refused by the collector: properties.attempt is not allowed here", result.stderr)
    assert summary(result)["stored"] == 8
    assert count(collector) == 8


def test_back_pressure_retries_relogin_and_split(collector: Collector, tmp_path: Path) -> None:
    proxy = FaultyProxy(collector.url, [(503, {}), (429, {"Retry-After": "1"}), (401, {}), (413, {})])
    path = write_jsonl(tmp_path / "events.jsonl", 500)
    with serve_in_thread(proxy.app) as url:
        started = time.monotonic()
        result = run_import(url, str(path), "--batch-size", "500", "--in-flight", "1")
    assert result.returncode == 0, result.stderr
    assert summary(result)["stored"] == 500
    assert summary(result)["retries"] == 2
    assert time.monotonic() - started >= 1.0  # Retry-After honoured
    statuses = [status for _, path_, status in proxy.log if path_.endswith("/batch")]
    assert statuses == [503, 429, 401, 413, 200, 200]  # the refused batch went again in two halves
    assert [path_ for _, path_, _ in proxy.log].count("/api/v1/agent/login") == 2  # logged in again after the 401
    assert count(collector) == 500


def test_gives_up_naming_the_rows_not_delivered(collector: Collector, tmp_path: Path) -> None:
    proxy = FaultyProxy(collector.url, [(503, {})] * 1000)
    path = write_jsonl(tmp_path / "events.jsonl", 25)
    with serve_in_thread(proxy.app) as url:
        result = run_import(url, str(path), "--batch-size", "10", "--in-flight", "1", "--retry-for", "1")
    assert result.returncode == 1
    assert re.search(r"lines 1-10 not delivered: the collector did not accept a batch for 1 s: HTTP 503", result.stderr)
    assert "lines 11-20 not delivered" in result.stderr
    assert "lines 21-25 not delivered" in result.stderr
    assert summary(result)["undelivered"] == 25


def test_max_errors_stops_early(collector: Collector, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(["{bad"] * 5 + [json.dumps(_row(i)) for i in range(5)]) + "\n")
    result = run_import(collector, str(path), "--max-errors", "2")
    assert result.returncode == 1
    assert "stopped after line 3: more than 2 rejected rows (--max-errors)" in result.stderr
    assert "line 4:" not in result.stderr
    assert count(collector) == 0


def test_collector_restarted_mid_import_nothing_lost_nothing_twice(tmp_path: Path) -> None:
    n = 40_000
    path = write_jsonl(tmp_path / "events.jsonl", n)
    db, port = tmp_path / "events.db", free_port()
    with start_collector(db, port) as first:
        proc = subprocess.Popen(
            import_args(first, str(path), "--batch-size", "500", "--in-flight", "2"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not first._get("/api/v1/events", {"limit": 1})["events"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the import ended before the collector could be stopped"
        assert first.process is not None
        first.process.kill()  # no graceful shutdown: answers are lost mid-flight
        first.process.wait(10)
    time.sleep(1.0)
    with start_collector(db, port) as second:
        out, err = proc.communicate(timeout=TIMEOUT)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert result.returncode == 0, err[-3000:]
        counts = summary(result)
        assert counts["retries"] > 0
        assert counts["sent"] == n
        assert counts["stored"] + counts["duplicates"] == n
        events = second.events()
    assert len(events) == n
    assert len({e["id"] for e in events}) == n


def _peak_rss_kib(args: Sequence[str]) -> tuple[int, str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    assert proc.stdout is not None
    with proc.stdout:
        output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, output[-3000:]
    return usage.ru_maxrss, output


@pytest.mark.parametrize("batch", [2000, 10_000])
def test_memory_stays_flat_with_file_size(collector: Collector, tmp_path: Path, batch: int) -> None:
    # The smaller file fills the pipeline too (a batch being read, two queued, two being sent).
    n_small = max(20_000, 6 * batch)
    small = write_jsonl(tmp_path / "small.jsonl", n_small)
    large = write_jsonl(tmp_path / "large.jsonl", 200_000, start=n_small)
    args = ("-q", "--batch-size", str(batch), "--in-flight", "2")
    rss_small, _ = _peak_rss_kib(import_args(collector, str(small), *args))
    rss_large, _ = _peak_rss_kib(import_args(collector, str(large), *args))
    assert large.stat().st_size > 3 * small.stat().st_size
    print(f"peak RSS: {rss_small} KiB for {n_small} rows, {rss_large} KiB for 200k rows")
    # KiB. Loading the 60 MB file would add hundreds of MiB; streaming leaves only the batches in flight, whose peak
    # count depends on how far the collector lags (measured here: +0 to +12 MiB on a loaded 2-CPU machine). Sent
    # bodies kept alive by httpx's reference cycles added +40 MiB or more at 10,000 events a batch.
    assert rss_large - rss_small < 20 * 1024, (rss_small, rss_large)


def test_four_batches_are_in_flight_unless_told() -> None:
    # Batches that queue while the collector's transaction runs are committed with it: four in flight make fewer,
    # larger transactions than two (bench_import.py).
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["events.jsonl"]).in_flight == 4
    assert parser.parse_args(["events.jsonl", "--in-flight", "2"]).in_flight == 2


def test_progress_on_a_pipe_is_plain_periodic_lines(collector: Collector, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", 20_000)
    result = run_import(collector, str(path), "--progress-every", "0.05", "--batch-size", "500")
    assert result.returncode == 0, result.stderr
    progress = re.findall(r"^import: \d+ rows, \d+ rows/s, \d+% ETA \d+:\d\d:\d\d, 0 rejected", result.stderr, re.M)
    assert len(progress) >= 2, result.stderr
    assert "\r" not in result.stderr
    quiet = run_import(collector, str(path), "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_quiet_silences_progress_not_problems(collector: Collector, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("{bad\n" + "".join(json.dumps(_row(i)) + "\n" for i in range(3)))
    result = run_import(collector, str(path), "-q")
    assert result.returncode == 1
    assert "line 1: invalid JSON" in result.stderr
    assert "sqreen-mw import: 1 rejected rows (listed above by line) were not imported" in result.stderr
    assert summary(result) == {"rows": 4, "sent": 3, "stored": 3, "duplicates": 0, "rejected": 1,
                               "undelivered": 0, "retries": 0}  # fmt: skip
    assert not re.search(r"^import: ", result.stderr, re.M)  # no progress line
    proxy = FaultyProxy(collector.url, [(503, {})] * 1000)
    with serve_in_thread(proxy.app) as url:
        given_up = run_import(url, str(write_jsonl(tmp_path / "more.jsonl", 5)), "-q", "--retry-for", "1")
    assert given_up.returncode == 1
    assert "lines 1-5 not delivered" in given_up.stderr
    assert summary(given_up)["undelivered"] == 5


@pytest.mark.parametrize("stdin", [False, True])
def test_progress_on_a_terminal_is_a_bar(collector: Collector, tmp_path: Path, stdin: bool) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("{bad\n" + "".join(json.dumps(_row(i)) + "\n" for i in range(20_000)))
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    with path.open("rb") if stdin else open(terminal, closefd=False) as source:
        proc = subprocess.Popen(
            import_args(collector, "-" if stdin else str(path), "--batch-size", "500"), stdin=source,
            stdout=terminal, stderr=terminal, cwd=ROOT, close_fds=True,
        )  # fmt: skip
    os.close(terminal)
    chunks: list[bytes] = []
    with contextlib.suppress(OSError):  # EIO once the child closed the terminal
        while chunk := os.read(controller, 65536):
            chunks.append(chunk)
    os.close(controller)
    assert proc.wait(TIMEOUT) == 1
    screen = b"".join(chunks).decode(errors="replace")
    assert "\r" in screen  # redrawn in place
    # Rows (not bytes) with thousands separators, then the times, the rate and the rejections in one bracket.
    if stdin:  # no size: no bar, no ETA
        assert re.search(r"\r20,001 rows \[\d\d:\d\d, [\d,]+ rows/s, rejected 1\]", screen), screen[-2000:]
    else:
        assert re.search(r"\r100%\|[^|]*\| 20,001 rows \[\d\d:\d\d<\d\d:\d\d, [\d,]+ rows/s, rejected 1\]", screen), (
            screen[-2000:]
        )
    assert not re.search(r"\] ,|\d[kMG]?B?/[\d.]+[kMG]|\d+\.\d\d [\[]", screen), screen[-2000:]
    assert "line 1: invalid JSON" in screen
    assert SUMMARY.search(screen)
