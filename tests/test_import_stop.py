"""``sqreen-mw import`` stopping early: every row not stored is named, against the real collector on loopback."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqreen_mw._scrub import Scrubber
from sqreen_mw.importer import _command
from sqreen_mw.importer._command import _import, add_arguments, run
from sqreen_mw.importer._delivery import Sender
from sqreen_mw.importer._events import EventMaker
from sqreen_mw.importer._session import Session
from sqreen_mw.importer._source import open_source

from .support import API_KEY, ROOT, Collector, FaultyProxy, serve_in_thread, start_collector
from .test_import import import_args, run_import, summary, write_jsonl

pytestmark = pytest.mark.e2e


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    with start_collector(tmp_path / "events.db") as running:
        yield running


def _args(*extra: str, file: str = "unused") -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([file, *extra])


class _InterruptAt(EventMaker):
    """Ctrl-C arrives while row ``at`` (1-based) is being turned into an event."""

    def __init__(self, at: int) -> None:
        super().__init__(Scrubber(), "default")
        self._at, self._seen = at, 0

    def make(self, row: dict[str, Any]) -> bytes:
        self._seen += 1
        if self._seen == self._at:
            self._interrupt()
        return super().make(row)

    def _interrupt(self) -> None:
        raise KeyboardInterrupt


def _run(collector: Collector, path: Path, maker: EventMaker, *extra: str, url: str | None = None) -> int:
    session = Session(url or collector.url, API_KEY, None, 10.0)
    source = open_source(str(path))
    try:
        assert session.login().kind == "ok"
        return _import(_args("-q", *extra), source, session, maker, io.StringIO())
    finally:
        session.logout()
        session.close()
        source.close()


@pytest.mark.parametrize("at", [1, 7, 10, 11])
def test_interrupted_while_a_row_is_handled_the_stop_line_is_exact(
    collector: Collector, tmp_path: Path, capsys: pytest.CaptureFixture[str], at: int
) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", 30)
    assert _run(collector, path, _InterruptAt(at), "--batch-size", "10") == 1
    err = capsys.readouterr().err
    match = re.search(r"stopped after line (\d+): interrupted; later lines were not imported", err)
    assert match, err
    # Lines 1..N were stored, nothing after N was (the rows are in time order, line i at second i - 1).
    assert int(match.group(1)) == at - 1
    stored = sorted(e["timestamp"] for e in collector.events())
    assert len(stored) == at - 1
    assert all(ts.startswith(f"2024-05-01T00:00:{i:02d}") for i, ts in enumerate(stored))


def test_ctrl_c_while_the_collector_does_not_answer_stops_at_once_naming_the_rows(
    collector: Collector, tmp_path: Path
) -> None:
    proxy = FaultyProxy(collector.url, [(503, {})] * 10_000)
    path = write_jsonl(tmp_path / "events.jsonl", 45)
    with serve_in_thread(proxy.app) as url:
        proc = subprocess.Popen(
            import_args(url, str(path), "--batch-size", "10", "--in-flight", "2", "--retry-for", "120",
                        "--progress-every", "0.5"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert proc.stderr is not None
        seen: list[str] = []
        for _ in range(3):  # the retry line comes again at the progress interval
            line = proc.stderr.readline()
            seen.append(line)
            assert re.match(r"import: the collector is unreachable or busy \(HTTP 503.*\); retrying for 1\d\d s more",
                            line), seen
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - interrupted
    assert proc.returncode == 1, err
    assert took < 3.0, took
    counts = summary(subprocess.CompletedProcess(proc.args, 1, out, err))
    assert counts["stored"] == 0
    assert counts["undelivered"] == 45, err
    named = [
        n
        for ranges in re.findall(r"lines ([\d, -]+) not delivered: interrupted", err)
        for part in ranges.split(", ")
        for n in range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1)
    ]
    assert sorted(named) == list(range(1, 46)), err
    assert named == sorted(named), err  # named in file order


def _complete_lines(data: bytes) -> int:
    """Lines a gzip reader can give whole out of the (cut) compressed ``data``."""
    return zlib.decompressobj(wbits=31).decompress(data).count(b"\n")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_truncated_gzip_file_imports_its_complete_lines_and_says_where_it_stopped(
    collector: Collector, tmp_path: Path, fmt: str
) -> None:
    if fmt == "jsonl":
        plain = write_jsonl(tmp_path / "events.jsonl", 3000).read_bytes()
    else:
        plain = b"name,timestamp,prop.i:int\n" + b"".join(
            f"login.failed,2024-05-01T00:{i // 60 % 60:02d}:{i % 60:02d}.{i // 3600:03d}Z,{i}\n".encode()
            for i in range(3000)
        )
    packed = gzip.compress(plain)
    cut = packed[: len(packed) * 2 // 3]
    path = tmp_path / f"cut.{fmt}.gz"
    path.write_bytes(cut)
    whole = _complete_lines(cut)
    rows = whole - (fmt == "csv")  # the header
    result = run_import(collector, str(path), "--batch-size", "500")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{path}: gzip data ends early after line {whole}" in result.stderr, result.stderr
    assert summary(result)["stored"] == rows
    assert len(collector.events()) == rows
    corrupt = tmp_path / f"corrupt.{fmt}.gz"
    corrupt.write_bytes(packed[:2000] + bytes(b ^ 0x55 for b in packed[2000:4000]) + packed[4000:])
    result = run_import(collector, str(corrupt))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(rf"{re.escape(str(corrupt))}: gzip data is corrupt \(.*\) after line \d+", result.stderr)


@pytest.mark.parametrize("bad", [3, 20_002])
def test_invalid_utf8_in_a_csv_rejects_that_row_by_line_and_imports_the_rest(
    collector: Collector, tmp_path: Path, bad: int
) -> None:
    lines = [b"name,timestamp,prop.who"] + [
        f"login.failed,2024-05-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z,user{i}".encode()
        for i in range(2, bad + 3)
    ]
    lines[bad - 1] = lines[bad - 1].replace(b"user", b"caf\xe9")  # line number `bad` (1-based)
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = run_import(collector, str(path))
    assert result.returncode == 1, result.stderr
    assert f"line {bad}: line is not valid UTF-8 (byte 0xe9 in column 3)" in result.stderr, result.stderr
    assert "stopped after" not in result.stderr
    counts = summary(result)
    assert (counts["rejected"], counts["stored"]) == (1, len(lines) - 2)
    assert len(collector.events()) == len(lines) - 2


def test_a_byte_order_mark_at_the_start_of_a_jsonl_file_is_skipped(collector: Collector, tmp_path: Path) -> None:
    plain = write_jsonl(tmp_path / "plain.jsonl", 3)
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    result = run_import(collector, str(path))
    assert result.returncode == 0, result.stderr
    assert summary(result)["stored"] == 3
    packed = tmp_path / "bom.jsonl.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    again = run_import(collector, str(packed))
    assert again.returncode == 0, again.stderr
    assert summary(again)["duplicates"] == 3  # the same rows: the mark is not part of the first one
    assert len(collector.events()) == 3


def test_done_reading_only_when_the_whole_file_was_read_and_the_summary_names_the_app(
    collector: Collector, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(["{bad"] * 5 + [json.dumps({"name": "a.b", "timestamp": "2024-05-01T00:00:00Z"})]) + "\n")
    stopped = run_import(collector, str(path), "--max-errors", "2")
    assert stopped.returncode == 1
    assert re.search(r"^import: 3 rows, .*\(stopped reading\)$", stopped.stderr, re.M), stopped.stderr
    assert "(done reading)" not in stopped.stderr
    whole = run_import(collector, str(path), "--app", "shop")
    assert whole.returncode == 1
    assert re.search(r"^import: 6 rows, .*\(done reading\)$", whole.stderr, re.M), whole.stderr
    assert re.search(r" retries \(app shop\)$", whole.stdout, re.M), whole.stdout
    assert [e["app"] for e in collector.events()] == ["shop"]


def test_an_explicit_id_is_stored_once_across_apps_a_derived_one_per_app(collector: Collector, tmp_path: Path) -> None:
    # As docs/import.md says: the derived id hashes the app, an explicit id is the row's own.
    path = tmp_path / "events.jsonl"
    row = {"name": "a.b", "timestamp": "2024-05-01T00:00:00Z"}
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": "0190a1b2-0000-7000-8000-000000000001"}) + "\n")
    assert summary(run_import(collector, str(path), "--app", "one"))["stored"] == 2
    second = summary(run_import(collector, str(path), "--app", "two"))
    assert (second["stored"], second["duplicates"]) == (1, 1)
    assert sorted(e["app"] for e in collector.events()) == ["one", "one", "two"]


STOPPED = "stopped after line 0: interrupted; later lines were not imported"


def test_ctrl_c_during_start_up_prints_the_stopped_summary_not_a_traceback(tmp_path: Path) -> None:
    # A server that takes the connection and never answers: the importer is logging in when Ctrl-C comes.
    path = write_jsonl(tmp_path / "events.jsonl", 10)
    with socket.create_server(("127.0.0.1", 0)) as server:
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        proc = subprocess.Popen(import_args(url, str(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT)  # fmt: skip
        server.settimeout(60)
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)  # the login request
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert proc.returncode == 1, err  # as a Ctrl-C later on
    assert summary(subprocess.CompletedProcess(proc.args, 1, out, err))["rows"] == 0
    assert f"sqreen-mw import: {STOPPED}" in err


class _SlowLogout(FaultyProxy):
    """The collector behind a hop whose logout does not answer until :attr:`released` is set (at most 120 s): set it
    before the hop stops, which otherwise waits for that request."""

    def __init__(self, upstream: str, batch_faults: Any) -> None:
        super().__init__(upstream, batch_faults)
        self.released = threading.Event()

    async def _handle(self, request: Any) -> Any:
        if request.url.path.endswith("/logout"):
            for _ in range(2400):
                if self.released.is_set():
                    break
                await asyncio.sleep(0.05)
        return await super()._handle(request)


def test_ctrl_c_while_logging_out_after_the_summary_keeps_the_import_s_exit_code(
    collector: Collector, tmp_path: Path
) -> None:
    proxy = _SlowLogout(collector.url, [])
    path = write_jsonl(tmp_path / "events.jsonl", 10)
    with serve_in_thread(proxy.app) as url:
        proc = subprocess.Popen(import_args(url, str(path)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT)  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the summary: the rows are stored, logging out has begun
        proc.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        out, err = proc.communicate(timeout=60)
        waited = time.monotonic() - signalled
        proxy.released.set()
    assert "Traceback" not in err, err
    assert waited < 5, waited  # not the logout's 10 s timeout: the Ctrl-C cut it short
    assert proc.returncode == 0, err
    assert summary(subprocess.CompletedProcess(proc.args, 0, line + out, err))["stored"] == 10
    assert "interrupted" not in err
    assert len(collector.events()) == 10


class _CtrlCInAFinalizerAt(_InterruptAt):
    """Ctrl-C arrives while a weakref callback runs, as row ``at`` (1-based) is turned into an event."""

    def _interrupt(self) -> None:
        class Doomed:
            pass

        doomed = Doomed()
        keep = weakref.ref(doomed, lambda _: signal.raise_signal(signal.SIGINT))
        del doomed  # the KeyboardInterrupt is raised in the callback, where Python prints it and goes on
        assert keep() is None


def test_a_ctrl_c_swallowed_by_a_finalizer_still_stops_the_import_at_the_next_batch(
    collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    monkeypatch.setattr(_command, "EventMaker", lambda scrubber, app: _CtrlCInAFinalizerAt(3))
    path = write_jsonl(tmp_path / "events.jsonl", 30)
    out = io.StringIO()
    code = run(_args("--batch-size", "10", "--url", collector.url, "--token", API_KEY, file=str(path)), out)
    err = capsys.readouterr().err
    assert [type(u.exc_value) for u in unraisable] == [KeyboardInterrupt]  # where it landed: lost, before
    assert code == 1, err
    assert "stopped after line 10: interrupted; later lines were not imported" in err
    counts = summary(subprocess.CompletedProcess([], 1, out.getvalue(), err))
    assert counts["rows"] == 10 and counts["sent"] + counts["undelivered"] == 10, counts
    assert len(collector.events()) == counts["stored"] <= 10


def _import_with_a_hung_logout(
    collector: Collector, tmp_path: Path, capsys: pytest.CaptureFixture[str], release: threading.Event
) -> tuple[int, float, str, str]:
    """Import 5 rows in this process while the (patched) logout waits for ``release``, set once the import returns:
    its exit code, the seconds it took, stdout and stderr."""
    path = write_jsonl(tmp_path / "events.jsonl", 5)
    out = io.StringIO()
    started = time.monotonic()
    try:
        code = run(_args("--url", collector.url, "--token", API_KEY, file=str(path)), out)
    finally:
        release.set()
    return code, time.monotonic() - started, out.getvalue(), capsys.readouterr().err


def test_ctrl_c_landing_in_a_finalizer_while_logging_out_still_cuts_the_wait_short(
    collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The signal handler runs wherever the main thread is; during a request that is often a weakref callback,
    # where a KeyboardInterrupt is printed ("Exception ignored in") and dropped: the wait for a logout that never
    # answers went on, and the traceback reached the user.
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    release = threading.Event()

    class Doomed:
        pass

    def logout(self: Session) -> None:
        doomed = Doomed()
        keep = weakref.ref(doomed, lambda _: signal.raise_signal(signal.SIGINT))
        del doomed  # the callback, and so the Ctrl-C, runs in this thread, in the middle of the logout
        assert keep() is None
        release.wait(30)  # a collector that does not answer

    monkeypatch.setattr(Session, "logout", logout)
    code, elapsed, out, err = _import_with_a_hung_logout(collector, tmp_path, capsys, release)
    assert unraisable == [], [u.exc_value for u in unraisable]
    assert code == 0, err
    assert elapsed < 15, elapsed
    assert summary(subprocess.CompletedProcess([], 0, out, err))["stored"] == 5
    assert "interrupted" not in err


def test_ctrl_c_while_the_summary_is_printed_cuts_the_logout_short(
    collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The summary is printed with Ctrl-C held off (it would lose the account); one pressed then was dropped, and
    # the logout that followed waited for its collector as if nobody had asked to stop.
    release = threading.Event()
    monkeypatch.setattr(Session, "logout", lambda self: release.wait(30))
    summarize = _command._summary

    def summary_then_ctrl_c(*args: Any, **kwargs: Any) -> int:
        code = summarize(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return code

    monkeypatch.setattr(_command, "_summary", summary_then_ctrl_c)
    code, elapsed, out, err = _import_with_a_hung_logout(collector, tmp_path, capsys, release)
    assert code == 0, err
    assert elapsed < 15, elapsed
    assert summary(subprocess.CompletedProcess([], 0, out, err))["stored"] == 5


def test_ctrl_c_between_a_batch_s_hand_off_and_the_next_batch_sends_it_once(
    collector: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The race of a Ctrl-C that lands once a batch is queued, before the reader starts the next one: the batch
    # was then also the "leftover" that a stop sends, so it went twice (counted sent twice, once as duplicates).
    put = Sender.put

    def put_then_ctrl_c(self: Sender, *args: Any, **kwargs: Any) -> Any:
        handed = put(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler before os.kill returns
        return handed

    monkeypatch.setattr(Sender, "put", put_then_ctrl_c)
    path = write_jsonl(tmp_path / "events.jsonl", 30)
    out = io.StringIO()
    code = run(_args("--batch-size", "10", "--url", collector.url, "--token", API_KEY, file=str(path)), out)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "stopped after line 10: interrupted; later lines were not imported" in err
    counts = summary(subprocess.CompletedProcess([], 1, out.getvalue(), err))
    assert counts["rows"] == 10
    assert counts["sent"] + counts["undelivered"] == 10, counts  # each row once: sent, or named not delivered
    assert counts["duplicates"] == 0, counts
    assert counts["stored"] == counts["sent"]
    assert len(collector.events()) == 10
