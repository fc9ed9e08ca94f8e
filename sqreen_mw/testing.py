"""Helpers for your own tests: see the events your code tracks, as they would be sent, without a collector.

::

    from sqreen_mw.testing import capture_events

    def test_reset_is_tracked(client):
        with capture_events() as events:
            client.post("/password/reset", data={"email": "a@example.com"})
        assert [e["name"] for e in events] == ["password.reset"]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ._client import Client
from ._lifecycle import get_client
from ._schema import WireEvent

__all__ = ["capture_events"]


@contextmanager
def capture_events(client: Client | None = None) -> Iterator[list[WireEvent]]:
    """Collect the events tracked inside the block, scrubbed and shaped as sent, instead of queueing them.

    Works with or without a token.

    :param client: the client to capture from; default the one ``sqreen_mw.init()`` made.
    :return: a list that fills as events are tracked.
    """
    target = client or get_client()
    events: list[WireEvent] = []
    previous, target._capture = target._capture, events
    try:
        yield events
    finally:
        target._capture = previous
