"""Cross-replica wake-ups: a thread per replica that ``LISTEN``s on the actions channel and reports each new version.

A block made or lifted through one replica bumps the version and sends ``NOTIFY`` in its transaction; every
replica's listener hears it at commit and calls back, and the callback wakes the long-polls its agents hold. After a
(re)connection the listener reads the version once, since notifications sent while it was away are lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from . import StorageUnavailable
from ._automation import CHANNEL

__all__ = ["VersionListener"]

logger = logging.getLogger("sqreen_mw.collector")
_POLL_SECONDS = 1.0  # how often the thread looks at its stop flag
_RETRY_SECONDS = 1.0  # between reconnection attempts while the database is down


class VersionListener(threading.Thread):
    """Calls ``on_version(version, False)`` for each notification, and ``on_version(current(), True)`` after each
    (re)connection."""

    def __init__(self, url: str, where: str, on_version: Callable[[int, bool], None],
                 current: Callable[[], int]) -> None:
        super().__init__(name="sqreen_mw-pg-listen", daemon=True)
        self._url = url
        self._where = where
        self._on_version = on_version
        self._current = current
        self._stopping = threading.Event()
        self.connected = threading.Event()  # set while listening (tests wait on it)
        self.reconnections = 0

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5,
                                     application_name="sqreen-mw listener") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    self._on_version(self._current(), True)
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=_POLL_SECONDS):
                            if note.payload.isdigit():
                                self._on_version(int(note.payload), False)
            except (psycopg.Error, StorageUnavailable) as exc:
                was_connected = self.connected.is_set()
                self.connected.clear()
                if self._stopping.is_set():
                    return
                self.reconnections += 1
                log = logger.warning if self.reconnections == 1 or was_connected else logger.debug
                log("actions listener on %s lost its connection (%s); reconnecting", self._where,
                               str(exc).strip()[:200])
                self._stopping.wait(_RETRY_SECONDS)
            except Exception:  # a bug in the callback must not end cross-replica wake-ups for good
                logger.exception("actions listener on %s failed; restarting it", self._where)
                self._stopping.wait(_RETRY_SECONDS)

    def stop(self) -> None:
        self._stopping.set()
        self.join(_POLL_SECONDS + 5)
