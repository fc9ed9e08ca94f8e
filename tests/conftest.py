"""Shared fixtures: clients that are always shut down, a real collector on loopback, SDK errors as test failures."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import sqreen_mw
from sqreen_mw import _lifecycle

from .support import Collector, start_collector

# No deadline (a loaded CI machine is slow, not wrong) and no example database written into the work tree.
settings.register_profile("tests", deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("tests")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Slow scenarios (marker ``slow``) run only when asked: ``-m slow`` or ``RUN_SLOW=1``."""
    if item.get_closest_marker("slow") is None:
        return
    asked = "slow" in (item.config.getoption("markexpr") or "") or os.environ.get("RUN_SLOW") == "1"
    if not asked:
        pytest.skip("slow scenario: run with -m slow or RUN_SLOW=1")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests (and the servers they spawn) see no SQREEN_* or Django settings from the shell that runs them."""
    for name in list(os.environ):
        if name.startswith("SQREEN_") or name == "DJANGO_SETTINGS_MODULE":
            monkeypatch.delenv(name)
    yield
    client, _lifecycle._current = _lifecycle._current, None
    if client is not None:
        client.shutdown(timeout=1.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _sdk_errors_fail_tests(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """An error the SDK logged (and swallowed) fails the test, unless the test says it expects SDK errors."""
    caplog.set_level(logging.INFO, logger="sqreen_mw")
    yield
    if request.node.get_closest_marker("sdk_errors_expected"):
        return
    records = caplog.get_records("call") + caplog.get_records("teardown")
    errors = [r for r in records if r.name == "sqreen_mw" and r.levelno >= logging.ERROR]
    assert not errors, f"sqreen_mw logged errors: {[r.getMessage() for r in errors]}"


@pytest.fixture
def started() -> Iterator[sqreen_mw.Client]:
    """The global client, marked started (no flusher thread, nothing listening at its URL): the compiled
    middlewares serve a started client's requests, the Python methods a first request's."""
    client = _lifecycle.set_client(sqreen_mw.Client(token="t", url="http://127.0.0.1:9", install_signal_handler=False))
    client._started_pid = os.getpid()
    yield client
    _lifecycle._current = None
    client._closed, client._accepting = True, False


@pytest.fixture
def make_client() -> Iterator[Callable[..., sqreen_mw.Client]]:
    """Build clients (installed as the global one) and shut them all down at the end of the test."""
    made: list[sqreen_mw.Client] = []

    def make(*args: Any, **kwargs: Any) -> sqreen_mw.Client:
        kwargs.setdefault("install_signal_handler", False)
        client = _lifecycle.set_client(sqreen_mw.Client(*args, **kwargs))
        made.append(client)
        return client

    try:
        yield make
    finally:
        _lifecycle._current = None
        for client in made:
            try:
                client.shutdown(timeout=1.0)
            except Exception as exc:  # the others must still be shut down
                logging.getLogger(__name__).error("shutdown failed: %s", exc)


@pytest.fixture
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """A real collector (``sqreen-mw serve``) on a free loopback port, with a fresh database."""
    db = tmp_path_factory.mktemp("collector") / "events.db"
    with start_collector(db) as running:
        yield running
