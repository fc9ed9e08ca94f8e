"""Fixtures of the explorer tests: a real headless Chromium (Debian's, driven by Playwright) and a real collector.

The browser tests skip, saying why, when no Chromium is installed; ``.ci/run`` sets ``CI_REQUIRE_BROWSER=1`` so that
a missing browser fails the run instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.postgres_server import postgres_server, postgres_url, server  # noqa: F401 - fixtures
from tests.support import Collector, start_collector

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Read at import: the suite's autouse fixtures clean the environment of each test, not of collection.
REQUIRE_BROWSER = os.environ.get("CI_REQUIRE_BROWSER") == "1"
ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-gpu", "--disable-dev-shm-usage",
]  # fmt: skip


def _missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser_context() -> Iterator[Any]:
    """A headless Chromium with a fresh profile, per test module.

    Not per session: sync Playwright keeps an asyncio loop running on this thread while it is open, and the anyio
    tests of other modules could not start theirs.
    """
    reason = _missing_browser()
    if reason is not None:
        if REQUIRE_BROWSER:
            pytest.fail(f"browser tests required (CI_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="explorer-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=ARGS, viewport={"width": 1280, "height": 900},
                timezone_id="Asia/Tokyo",  # not UTC: local times must differ from the UTC shown on hover
            )  # fmt: skip
            context.set_default_timeout(20_000)
            yield context
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    """A new tab with no cookies; fails the test on any JavaScript error or dialog."""
    browser_context.clear_cookies()
    tab = browser_context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    tab.problems = problems
    yield tab
    tab.close()
    assert not problems, problems


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def collector(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """A real collector on loopback, one per test module and store (a SQLite file, then a PostgreSQL database)."""
    db: Path | str = tmp_path_factory.mktemp("explorer") / "events.db"
    if request.param == "postgres":
        db = server().new_database()
    with start_collector(db) as running:  # type: ignore[arg-type] - the command line takes a path or a URL
        yield running
