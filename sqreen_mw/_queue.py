"""The bounded in-memory event queue between ``track()`` and the flusher.

``put()`` never blocks on I/O and never raises: the lock is only held for a few list operations. When the queue is
over its bounds (events or bytes) the oldest events are dropped and counted under ``queue_full``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from ._native import speedups

logger = logging.getLogger("sqreen_mw")

#: Queued record layout (a tuple keeps it small): see ``_client.Client.track``.
Record = tuple[Any, ...]
TRACKED_AT = 0  # index of the track() wall clock in nanoseconds
SEQ = 1  # index of the sequence number (increasing in queue order)
NAME = 2  # index of the event name
SIZE = 8  # index of the byte estimate


#: The queue's lock: the compiled one when built (track()'s compiled put takes it without a method call), else
#: threading's. Both re-entrant.
_rlock: Any = threading.RLock if speedups is None else speedups.RLock


class EventQueue:
    """A deque bounded by count and by estimated bytes, with drop counters by reason.

    The bounds (``max_events``, ``max_bytes``, ``wake_count``, ``wake_bytes``) are fixed when the queue is made: the
    compiled ``track()`` (``_speedups.c``) reads them once, so a queue with other bounds is a new queue.
    """

    if speedups is None:
        __slots__ = ("__dict__", "_bytes", "_items", "_lock", "tracked")
    else:
        # The compiled put reads the lock and the deque at their slots' offsets, and keeps its two counters on the
        # compiled lock (plain C integers: no int object made per event); here they read as attributes.
        __slots__ = ("__dict__", "_items", "_lock")

        @property
        def _bytes(self) -> int:
            return self._lock.bytes  # type: ignore[no-any-return]

        @_bytes.setter
        def _bytes(self, value: int) -> None:
            self._lock.bytes = value

        @property
        def tracked(self) -> int:
            return self._lock.tracked  # type: ignore[no-any-return]

        @tracked.setter
        def tracked(self, value: int) -> None:
            self._lock.tracked = value

    def __init__(self, max_events: int, max_bytes: int, batch_size: int | None = None) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        # Send early when a batch is full, or well before either bound would shed events.
        self.wake_count = max(1, min(batch_size or max_events, max_events // 2))
        self.wake_bytes = max(1, max_bytes // 2)
        self._items: deque[Record] = deque()
        self._lock = _rlock()  # re-entered by a logging handler that tracks the drop warning
        self._bytes = 0
        self.tracked = 0
        self.dropped: dict[str, int] = {}
        self._warned: set[str] = set()
        self.inflight_first: int | None = None  # first sequence number of the batch being sent
        self.drop_ops = 0  # drop operations so far; with _drop_marks, tells flush() what a drop took
        self._drop_marks: deque[tuple[int, int]] = deque(maxlen=256)

    def __len__(self) -> int:
        return len(self._items)

    def put(self, record: Record) -> bool:
        """Append ``record``; return True when the flusher should be woken to send early."""
        lock = self._lock
        lock.acquire()  # cheaper than `with` on this hot path
        try:
            items = self._items
            items.append(record)
            self._bytes += record[SIZE]
            self.tracked += 1
            n = len(items)
            size = self._bytes
            if n > self.max_events or size > self.max_bytes:
                self._shed()
        finally:
            lock.release()
        return n == self.wake_count or size - record[SIZE] < self.wake_bytes <= size

    def holds_any(self, names: frozenset[str]) -> bool:
        """Whether some queued event has one of ``names``."""
        return bool(names) and any(item[NAME] in names for item in self._items)

    def wants_send(self) -> bool:
        """Enough is queued to send without waiting for the heartbeat."""
        return len(self._items) >= self.wake_count or self._bytes >= self.wake_bytes

    def _shed(self) -> None:
        items = self._items
        dropped = 0
        first = items[0][SEQ] if items else 0
        while items and (len(items) > self.max_events or self._bytes > self.max_bytes):
            self._bytes -= items.popleft()[SIZE]
            dropped += 1
        self._count_drop("queue_full", dropped, first)

    def _count_drop(self, reason: str, n: int, first_seq: int) -> None:
        if not n:
            return
        self.dropped[reason] = self.dropped.get(reason, 0) + n
        self.drop_ops += 1
        self._drop_marks.append((self.drop_ops, first_seq))
        if reason not in self._warned:
            self._warned.add(reason)
            logger.warning("sqreen_mw dropped %d event(s): %s (further drops are counted, not logged)", n, reason)

    def drop(self, reason: str, n: int, first_seq: int) -> None:
        """Count ``n`` events dropped outside the queue (by the flusher), the oldest numbered ``first_seq``."""
        with self._lock:
            self._count_drop(reason, n, first_seq)

    def dropped_since(self, drop_ops: int, through_seq: float) -> bool:
        """Whether a drop after the ``drop_ops``-th one took a record numbered ``through_seq`` or less."""
        with self._lock:
            if self.drop_ops == drop_ops:
                return False
            marks = self._drop_marks
            if marks[0][0] > drop_ops + 1:  # older marks forgotten: assume the worst
                return True
            return any(first <= through_seq for op, first in marks if op > drop_ops)

    def take(self, n: int) -> list[Record]:
        """Remove and return up to ``n`` of the oldest records; they are in flight until :meth:`done`."""
        with self._lock:
            items = self._items
            batch = [items.popleft() for _ in range(min(n, len(items)))]
            self._bytes -= sum(r[SIZE] for r in batch)
            if batch:
                self.inflight_first = batch[0][SEQ]
        return batch

    def done(self) -> None:
        """The batch in flight was delivered or dropped."""
        with self._lock:
            self.inflight_first = None

    def settled_through(self) -> float:
        """Every record with a sequence number up to this has been delivered or dropped."""
        with self._lock:
            ends = [self._items[0][SEQ] - 1] if self._items else []
            if self.inflight_first is not None:
                ends.append(self.inflight_first - 1)
            return min(ends) if ends else float("inf")

    def give_back(self, batch: list[Record]) -> None:
        """Put a batch that could not be delivered back at the front, still within the bounds."""
        with self._lock:
            self.inflight_first = None
            self._items.extendleft(reversed(batch))
            self._bytes += sum(r[SIZE] for r in batch)
            if len(self._items) > self.max_events or self._bytes > self.max_bytes:
                self._shed()

    def expire(self, tracked_before_ns: int) -> int:
        """Drop the records queued by ``track()`` before the given wall clock; return how many."""
        with self._lock:
            items = self._items
            n = 0
            first = items[0][SEQ] if items else 0
            while items and items[0][TRACKED_AT] < tracked_before_ns:
                self._bytes -= items.popleft()[SIZE]
                n += 1
            self._count_drop("expired", n, first)
        return n

    def clear(self) -> None:
        """Forget everything (a forked child starts empty: its parent delivers what it tracked)."""
        self._lock = _rlock()  # re-entered by a logging handler that tracks the drop warning
        self._items = deque()
        self._bytes = 0
        self.tracked = 0
        self.dropped = {}
        self._warned = set()
        self.inflight_first = None
        self.drop_ops = 0
        self._drop_marks = deque(maxlen=256)

    def statistics(self) -> dict[str, Any]:
        with self._lock:
            return {
                "queued": len(self._items),
                "queued_bytes": self._bytes,
                "tracked": self.tracked,
                "dropped": dict(self.dropped),
            }
