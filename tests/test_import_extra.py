"""``pip install 'sqreen_mw[import]'`` alone: ``sqreen-mw import`` works without the collector extra's packages."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import API_KEY, ROOT, Collector, start_collector
from .test_import import summary

pytestmark = pytest.mark.e2e

# The collector extra's packages made unimportable, then the command line run as the `sqreen-mw` script runs it.
_WITHOUT_COLLECTOR_EXTRA = (
    "import sys\n"
    "for name in ('jinja2', 'uvicorn', 'multipart', 'python_multipart'):\n"
    "    sys.modules[name] = None\n"
    "from sqreen_mw.collector.cli import main\n"
    "sys.argv[0] = 'sqreen-mw'\n"
    "sys.exit(main())\n"
)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    with start_collector(tmp_path / "events.db") as running:
        yield running


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_COLLECTOR_EXTRA, *args], capture_output=True, text=True, timeout=120,
        cwd=ROOT, check=False,
    )  # fmt: skip


def test_import_runs_without_the_collector_extra(collector: Collector) -> None:
    help_ = _run("import", "--help")
    assert help_.returncode == 0, help_.stderr
    assert "--retry-for" in help_.stdout
    result = _run("import", str(ROOT / "examples/import/events.jsonl"), "--url", collector.url, "--token", API_KEY)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    counts = summary(result)
    assert counts["stored"] == counts["rows"] > 0
    assert len(collector.events()) == counts["rows"]
