"""``sqreen-mw import`` stopping early: every row not stored is named, against the real collector on loopback."""

from __future__ import annotations

import argparse
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqreen_mw._scrub import Scrubber
from sqreen_mw.importer._command import _import, add_arguments
from sqreen_mw.importer._events import EventMaker
from sqreen_mw.importer._session import Session
from sqreen_mw.importer._source import open_source

from .support import API_KEY, Collector, start_collector
from .test_import import write_jsonl

pytestmark = pytest.mark.e2e


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    with start_collector(tmp_path / "events.db") as running:
        yield running


def _args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["unused", *extra])


class _InterruptAt(EventMaker):
    """Ctrl-C arrives while row ``at`` (1-based) is being turned into an event."""

    def __init__(self, at: int) -> None:
        super().__init__(Scrubber(), "default")
        self._at, self._seen = at, 0

    def make(self, row: dict[str, Any]) -> bytes:
        self._seen += 1
        if self._seen == self._at:
            raise KeyboardInterrupt
        return super().make(row)


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
