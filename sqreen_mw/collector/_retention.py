"""Retention (``sqreen-mw serve --retention 90d``): events older than the retention period are deleted, in small
transactions, at start and then every hour, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Retention"]

logger = logging.getLogger("sqreen_mw.collector")
_CHUNK = 10_000  # events per transaction: ingest waits for one chunk at most, never for the whole sweep


class _Deletes(Protocol):
    def delete_events_before(self, cutoff: float, limit: int = _CHUNK) -> int: ...


class Retention:
    """Deletes events whose timestamp is older than ``keep`` seconds, every ``every`` seconds, in a thread.

    With several replicas each one sweeps; the deletes are idempotent, so that only repeats a cheap query.
    """

    def __init__(self, storage: _Deletes, keep: float, *, every: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        if keep <= 0:
            raise ValueError("retention must be a positive duration")
        self.storage = storage
        self.keep = keep
        self.every = every
        self.clock = clock
        self.deleted = 0
        self.failures = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> int:
        """Delete everything older than the retention period now; return how many events (faults are logged)."""
        cutoff = self.clock() - self.keep
        total = 0
        try:
            while not self._stopping.is_set():
                n = self.storage.delete_events_before(cutoff, _CHUNK)
                total += n
                if n < _CHUNK:
                    break
        except Exception:  # the database may be away for a while: the next sweep catches up
            self.failures += 1
            logger.exception("retention: deleting events older than %s failed", time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(cutoff)))
        self.deleted += total
        if total:
            logger.info("retention: deleted %d events older than %.0f days", total, self.keep / 86400)
        return total

    def start(self) -> None:
        def run() -> None:
            while not self._stopping.is_set():
                self.sweep()
                self._stopping.wait(self.every)

        self._thread = threading.Thread(target=run, name="sqreen_mw-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)
