"""Delivering batches of imported events to the collector: back-pressure, retries, splits, nothing dropped.

Batches go through a bounded queue to ``in_flight`` sender threads, so the next batch is read and encoded while
the collector stores the previous ones, and reading waits when the collector is slower (back-pressure). Per batch:

* gzip unless the collector is on loopback (there CPU, not bytes, is what limits an import);
* the body goes in pieces of about 32 KiB with its ``Content-Length`` (no chunked encoding), never one block;
* ``200``: counted as stored / duplicates (the collector deduplicates by id, so a resent batch is harmless);
* ``429``, ``408``, ``5xx``, network errors: retried with jittered exponential backoff honouring ``Retry-After``,
  for as long as ``retry_for`` seconds without a success; then the batch is reported as not delivered and the
  import stops;
* ``401``: log in again (a restarted collector forgets sessions), then resend;
* ``413``: split in two and resend the halves (a single event too large is reported);
* ``422``: the events the collector names are reported as rejected with their line numbers, the rest resent.
"""

from __future__ import annotations

import queue
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._transport import AUTH, OK, RETRY, SPLIT, Outcome
from ._events import encode_pieces
from ._session import Session

_MAX_RELOGINS = 3


class Fatal(Exception):
    """The collector refuses to go on (API key refused, protocol error): the import stops."""


@dataclass
class Batch:
    """Events (JSON from :meth:`EventMaker.make`) with the input line number of each."""

    events: list[bytes]
    lines: list[int]


@dataclass
class Tally:
    """What happened to the rows, shared by the reader and the senders (guarded by ``lock``)."""

    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    retries: int = 0
    rejected: int = 0
    undelivered: list[tuple[list[int], str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _ranges(lines: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    parts: list[str] = []
    start = prev = lines[0]
    for line in [*lines[1:], None]:
        if line is not None and line == prev + 1:
            prev = line
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if line is not None:
            start = prev = line
    return ", ".join(parts)


def describe_lines(lines: list[int]) -> str:
    """Line numbers as compact ranges, the way the summary names them."""
    return _ranges(sorted(lines)) if lines else ""


class Sender:
    """Sender threads fed by a bounded queue.

    :param session: a logged-in session.
    :param tally: where outcomes are counted.
    :param on_reject: called with (line, reason) for each row the collector refused.
    :param in_flight: batches being sent at once (each by its own thread).
    :param retry_for: seconds of failures after which a batch is given up.
    """

    def __init__(
        self,
        session: Session,
        tally: Tally,
        on_reject: Callable[[int, str], None],
        *,
        in_flight: int = 4,
        retry_for: float = 300.0,
        on_retry: Callable[[str, float], None] | None = None,
    ) -> None:
        self._session = session
        self._tally = tally
        self._on_reject = on_reject
        self._on_retry = on_retry
        self._retry_for = retry_for
        self._busy: dict[int, tuple[Batch, list[Batch]]] = {}  # thread id -> the batch it sends, and parts to send
        self._abandoned = False  # stop() gave up on the threads: their late answers are not counted
        self._waiting: set[int] = set()  # threads waiting to retry a batch
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=in_flight)
        self.failure: str | None = None  # set when a batch was given up: the reader stops
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"sqreen-mw-import-{i}", daemon=True) for i in range(in_flight)
        ]
        for thread in self._threads:
            thread.start()

    def put(self, batch: Batch, abandon: Callable[[], bool] | None = None) -> bool:
        """Queue a batch; blocks while ``in_flight`` batches wait (back-pressure).

        :param abandon: polled while waiting (every 0.1 s): when it returns true, ``batch`` is left to the caller.
        :return: True when the batch is handed over: queued, or given up (named) because the import stopped;
            False when ``abandon`` said so before it could be queued.
        """
        while not self._stop.is_set():
            if abandon is not None and abandon():
                return False
            try:
                self._queue.put(batch, timeout=0.5 if abandon is None else 0.1)
                return True
            except queue.Full:
                continue
        self._give_up(batch, self.failure or "import stopped")
        return True

    def close(self) -> None:
        """Send what is queued, then stop the threads."""
        for _ in self._threads:
            while True:
                try:
                    self._queue.put(None, timeout=0.5)
                    break
                except queue.Full:
                    if not any(t.is_alive() for t in self._threads):
                        break
        for thread in self._threads:
            thread.join()

    def stop(self, reason: str, grace: float = 1.0, leftover: Batch | None = None) -> None:
        """Stop within about ``grace`` + 1 s (Ctrl-C): what is not delivered by then is named, with ``reason``.

        ``leftover`` (the batch being filled) is queued if there is room within ``grace``. Batches still queued
        or being retried are given up; a request still waiting for its answer after that is given up too
        (the collector may have stored it: a rerun stores nothing twice).
        """
        # No grace while a sender waits to retry: the collector is not answering.
        deadline = time.monotonic() + (0.0 if self._waiting else grace)
        while leftover is not None and leftover.lines and not self._stop.is_set():  # sent if the collector keeps up
            try:
                self._queue.put(leftover, timeout=0.1)
                leftover = None
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        if leftover is not None and leftover.lines:
            self._give_up(leftover, reason)
        while any(t.is_alive() for t in self._threads) and time.monotonic() < deadline:
            try:
                self._queue.put(None, timeout=0.1)
            except queue.Full:
                continue
        self._fail(reason)
        while True:  # drain: the threads see _stop and give these up too, but may be stuck in a request
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                break
            if batch is not None:
                self._give_up(batch, reason)
        for thread in self._threads:
            thread.join(max(0.0, deadline + 1.0 - time.monotonic()))
        with self._tally.lock:
            self._abandoned = True
            for thread in self._threads:
                current = self._busy.get(thread.ident or 0) if thread.is_alive() else None
                if current is not None:
                    lines = [line for part in (current[0], *current[1]) for line in part.lines]
                    self._tally.undelivered.append((lines, f"{reason} while being sent (it may have been stored)"))

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._stop.is_set():
                self._give_up(batch, self.failure or "import stopped")
                continue
            self._deliver(batch)

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self._stop.set()

    def _give_up(self, batch: Batch, reason: str) -> None:
        if batch.lines:
            with self._tally.lock:
                if not self._abandoned:
                    self._tally.undelivered.append((batch.lines, reason))

    def _deliver(self, first: Batch) -> None:
        pending = [first]
        ident = threading.get_ident()
        while pending:
            batch = pending.pop()
            if self._stop.is_set():
                self._give_up(batch, self.failure or "import stopped")
                continue
            self._busy[ident] = (batch, pending)
            try:
                self._settle(batch, pending)
            except Exception as exc:  # Fatal, or a bug: either way no row may go unaccounted for
                self._fail(str(exc) if isinstance(exc, Fatal) else f"{type(exc).__name__}: {exc}")
                self._give_up(batch, self.failure or str(exc))
        self._busy.pop(ident, None)

    def _settle(self, batch: Batch, pending: list[Batch]) -> None:
        """Send one batch and account for the answer; parts still to send go on ``pending``."""
        outcome = self._send(batch)
        if outcome is None:  # given up
            return
        if outcome.kind == OK:
            body = outcome.body if isinstance(outcome.body, dict) else {}
            with self._tally.lock:
                if self._abandoned:
                    return
                self._tally.sent += len(batch.events)
                self._tally.stored += int(body.get("accepted", 0))
                self._tally.duplicates += int(body.get("duplicates", 0))
        elif outcome.kind == SPLIT:
            if len(batch.events) == 1:
                self._reject(batch, {0: f"the collector refused the event: {outcome.reason}"})
            else:
                half = len(batch.events) // 2
                pending.append(Batch(batch.events[half:], batch.lines[half:]))
                pending.append(Batch(batch.events[:half], batch.lines[:half]))
        else:
            named = _named_errors(outcome.body, len(batch.events))
            if not named:  # a refusal that names no event: the collector and this tool disagree
                raise Fatal(f"the collector refused a batch: {outcome.reason}")
            self._reject(batch, named)
            keep = [i for i in range(len(batch.events)) if i not in named]
            if keep:
                pending.append(Batch([batch.events[i] for i in keep], [batch.lines[i] for i in keep]))

    def _reject(self, batch: Batch, named: dict[int, str]) -> None:
        with self._tally.lock:
            if self._abandoned:
                return
            self._tally.rejected += len(named)
        for index in sorted(named):
            self._on_reject(batch.lines[index], named[index])

    def _send(self, batch: Batch) -> Outcome | None:
        """Send until the collector answers something other than "retry"; None when given up."""
        payload = encode_pieces(batch.events)  # a list: every retry sends the same bytes again
        if self._session.compress:
            payload = _gzip_pieces(payload)
        delay, relogins = 0.2, 0
        give_up_at: float | None = None
        while True:
            outcome, key = self._session.send(payload)
            if outcome.kind == AUTH:
                relogins += 1
                if relogins > _MAX_RELOGINS:
                    raise Fatal(f"the collector keeps refusing the session: {outcome.reason}")
                outcome = self._session.login(stale=key)
                if outcome.kind == OK:
                    continue
                if outcome.kind == AUTH:
                    raise Fatal(f"the collector refused the API key: {outcome.reason}")
            if outcome.kind != RETRY:
                return outcome
            now = time.monotonic()
            give_up_at = give_up_at or now + self._retry_for
            if now >= give_up_at or self._stop.is_set():
                self._fail(f"the collector did not accept a batch for {self._retry_for:g} s: {outcome.reason}")
                self._give_up(batch, self.failure or outcome.reason)
                return None
            with self._tally.lock:
                self._tally.retries += 1
            wait = max(outcome.retry_after or 0.0, delay * random.uniform(0.5, 1.0))  # noqa: S311 -- jitter
            self._wait(min(wait, max(0.0, give_up_at - now)), give_up_at, outcome.reason)
            delay = min(delay * 2, 30.0)

    def _wait(self, seconds: float, give_up_at: float, reason: str) -> None:
        """Sleep before a retry, waking at once on :meth:`stop`, and saying each second that it keeps retrying."""
        end = time.monotonic() + seconds
        ident = threading.get_ident()
        self._waiting.add(ident)
        try:
            while True:
                now = time.monotonic()
                if self._on_retry is not None:
                    self._on_retry(reason, give_up_at - now)
                if now >= end or self._stop.wait(min(end - now, 1.0)):
                    return
        finally:
            self._waiting.discard(ident)


def _gzip_pieces(pieces: list[bytes]) -> list[bytes]:
    """The gzip stream (level 1) of the concatenated ``pieces``, itself in pieces no larger than theirs."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    packed = [part for piece in pieces if (part := packer.compress(piece))]
    packed.append(packer.flush())
    return packed


def _named_errors(body: Any, size: int) -> dict[int, str]:
    """``{index: message}`` of the events a 422 answer names (protocol v1 ``errors[]``)."""
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return {}
    named: dict[int, str] = {}
    for error in body["errors"]:
        if isinstance(error, dict) and type(error.get("index")) is int and 0 <= error["index"] < size:
            named[error["index"]] = f"refused by the collector: {error.get('message') or error.get('field')}"
    return named
