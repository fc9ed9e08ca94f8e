"""Shared fixtures: clients that are always shut down, a real collector on loopback, SDK errors as test failures."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import sqreen_mw
from sqreen_mw import _lifecycle

from .support import Collector, start_collector


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
    errors = [r for r in caplog.get_records("call") if r.name == "sqreen_mw" and r.levelno >= logging.ERROR]
    assert not errors, f"sqreen_mw logged errors: {[r.getMessage() for r in errors]}"


@pytest.fixture
def make_client() -> Iterator[Callable[..., sqreen_mw.Client]]:
    """Build clients (installed as the global one) and shut them all down at the end of the test."""
    made: list[sqreen_mw.Client] = []

    def make(*args: Any, **kwargs: Any) -> sqreen_mw.Client:
        kwargs.setdefault("install_signal_handler", False)
        client = _lifecycle.set_client(sqreen_mw.Client(*args, **kwargs))
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown(timeout=1.0)
    _lifecycle._current = None


@pytest.fixture
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """A real collector (``sqreen-mw serve``) on a free loopback port, with a fresh database."""
    db = tmp_path_factory.mktemp("collector") / "events.db"
    with start_collector(db) as running:
        yield running
