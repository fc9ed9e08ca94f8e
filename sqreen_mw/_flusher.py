"""The background flusher: one daemon thread running an anyio loop that delivers the queue to the collector.

It wakes on the heartbeat (``heartbeat_interval``), when a batch fills, when ``flush()`` asks, and at shutdown.
Failed sends are retried with jittered exponential backoff (1 s doubling to 60 s) or the collector's ``Retry-After``;
events older than ``max_event_age`` (from ``track()``) are dropped and counted. The thread is started lazily, so a
process that forks before tracking anything never forks a running flusher; a child that forks after it started gets
a fresh queue and its own flusher.

A process may fork while its flusher runs (gunicorn ``--preload`` with an app that tracks at import time). A thread
caught by ``fork()`` mid-import leaves the child a half-initialised module, or a module lock no thread of the child
will ever release (its flusher then hangs on its first import). Two defences: everything the loop imports lazily (the
anyio backend, httpcore, sniffio, h11, certifi, the IDNA codec...) is imported by :func:`preload` in the calling
thread before the flusher thread starts, and an at-fork hook (:meth:`Flusher.quiesce`) waits, within a bound, for
the loop to be idle (waiting for work, holding no lock) before the process forks: httpcore tries ``import sniffio``
on every request, which takes a module lock even when sniffio is not installed. Should the loop still die of an
unexpected error, it is restarted with backoff (1 s doubling to 60 s), logged and counted (``flusher_restarts``,
reported in the heartbeat).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from ._queue import SEQ, EventQueue, Record
from ._transport import AUTH, DROP, OK, RETRY, SPLIT, Outcome, Transport

logger = logging.getLogger("sqreen_mw")

_preloaded = False


def preload() -> None:
    """Import what the flusher loop would otherwise import in its own thread, where a fork could catch it."""
    global _preloaded
    if _preloaded:
        return
    import encodings.idna  # noqa: F401 - httpx encodes host names with it
    import gzip  # noqa: F401
    import ssl  # noqa: F401
    import warnings  # noqa: F401

    import anyio._backends._asyncio  # noqa: F401 - anyio.run imports its backend lazily
    import certifi  # noqa: F401 - httpx's SSL context
    import h11  # noqa: F401
    import httpcore  # httpx imports it lazily, in its transport
    import httpx._transports.default  # noqa: F401

    try:
        importlib.import_module("sniffio")  # httpcore imports it on each request
    except ImportError:
        # A declared dependency, so only a broken install gets here. httpcore copes, but every request then fails
        # an import while holding that module's import lock: a child forked meanwhile hangs on its first request.
        logger.warning("sqreen_mw: the sniffio package is missing; reinstall sqreen_mw (forked children may hang)")

    httpcore.AsyncConnectionPool  # noqa: B018
    _preloaded = True


_RESTART_MAX_DELAY = 60.0


class Flusher:
    def __init__(
        self,
        queue: EventQueue,
        make_transport: Callable[[], Transport],
        serialize: Callable[[list[Record]], tuple[bytes | None, list[Record]]],
        *,
        heartbeat_interval: float,
        batch_size: int,
        max_event_age: float,
        follow_collector_heartbeat: bool = False,
        on_actions: Callable[[Mapping[str, Any]], Any] | None = None,
        push_wait: float = 30.0,
        extra_statistics: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.queue = queue
        self._extra_statistics = extra_statistics  # reported in the heartbeat too (e.g. requests blocked)
        self._on_actions = on_actions  # takes each new actions payload; None: no push channel either
        # Seconds the collector may hold a long-poll: well under the idle timeouts of common proxies (60 s), and
        # a collector shutting down gracefully waits for open requests at most this long.
        self.push_wait = push_wait
        self._make_transport = make_transport
        self._serialize = serialize
        self.heartbeat_interval = heartbeat_interval
        self.batch_size = batch_size
        self.max_event_age = max_event_age
        self.follow_collector_heartbeat = follow_collector_heartbeat
        self._reset_state()

    def _reset_state(self) -> None:
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_event: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._progress = threading.Condition()
        self._start_lock = threading.Lock()
        self._busy = threading.Lock()  # held by the loop thread except while it waits for work (see quiesce)
        self._quiesced = False
        self._stopping = False
        self._deadline = 0.0
        self._forced = False
        self._hot = False  # a hot event (it feeds a playbook) waits: send a partial batch now
        self._login_lock: anyio.Lock | None = None
        self._relogged = False
        self._batch_limit = self.batch_size
        self._backoff = 0.0
        self._retry_at = 0.0  # monotonic time before which no send is tried (backoff)
        self._retry_after_until = 0.0  # the collector's Retry-After: even flush() waits for it
        self._retry_pending = False
        self.sent = 0
        self.retries = 0
        self.restarts = 0
        self.last_error = ""
        self._url_refused = False  # a 404 on login was reported

    def after_fork(self) -> None:
        self._reset_state()

    # --- called from application threads -------------------------------------------------------------------

    def ensure_started(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid != os.getpid():
                self._reset_state()
            if self._thread is None and not self._stopping:
                preload()
                self._thread = threading.Thread(target=self._run, name="sqreen_mw-flusher", daemon=True)
                self._thread.start()

    def quiesce(self, timeout: float = 2.0) -> None:
        """Before ``fork()``: wait up to ``timeout`` seconds for the loop to be idle, and keep it so until
        :meth:`resume` (the child must not inherit a lock or an import the loop was in the middle of)."""
        thread = self._thread
        if thread is None or self._pid != os.getpid() or not thread.is_alive() or thread is threading.current_thread():
            return
        self._quiesced = self._busy.acquire(timeout=timeout)

    def resume(self) -> None:
        """After ``fork()``, in the parent: let the loop go on."""
        if self._quiesced:
            self._quiesced = False
            self._busy.release()

    def wake(self, force: bool = False, hot: bool = False) -> bool:
        """Wake the loop; ``force`` also skips the current backoff once; ``hot`` sends a partial batch now.

        :return: False when the loop is not running yet.
        """
        if force:
            self._forced = True
        if hot:
            self._hot = True
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(self._set_wake)
        except RuntimeError:  # loop closed: nothing to wake
            return False
        return True

    @property
    def collector_down(self) -> bool:
        """The last attempt to reach the collector failed (and none succeeded since)."""
        return bool(self.last_error)

    def flush(self, target: float, timeout: float, since_drop_ops: int, *, give_up_when_down: bool = False) -> bool:
        """Wait until every record up to sequence ``target`` is settled.

        :param give_up_when_down: return at once when the collector is known to be down, or as soon as an attempt
            made during this flush fails (a lifespan shutdown must not wait ``shutdown_timeout`` on a dead collector;
            the exit hooks try again).
        :return: True when none of them was dropped after the ``since_drop_ops``-th drop.
        """
        if self.queue.settled_through() >= target:
            return not self.queue.dropped_since(since_drop_ops, target)
        if give_up_when_down and self.collector_down:
            return False
        retries = self.retries
        self.ensure_started()
        woken = self.wake(force=True)
        deadline = time.monotonic() + timeout
        with self._progress:
            while self.queue.settled_through() < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._thread is not None and not self._thread.is_alive()):
                    return False
                if give_up_when_down and self.retries != retries:
                    return False
                self._progress.wait(min(remaining, 0.05 if not woken else 1.0))
                if not woken:  # the loop was still starting: the first wake was lost
                    woken = self.wake(force=True)
        return not self.queue.dropped_since(since_drop_ops, target)

    def stop(self, timeout: float) -> None:
        """Deliver what is queued within ``timeout`` seconds, log out, and end the thread."""
        thread = self._thread
        self._deadline = time.monotonic() + timeout
        self._stopping = True
        if thread is None or self._pid != os.getpid() or not thread.is_alive():
            return
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._cancel_cycle)
            except RuntimeError:
                pass
        thread.join(timeout + 0.5)

    def _notify(self) -> None:
        with self._progress:
            self._progress.notify_all()

    # --- the loop thread ----------------------------------------------------------------------------------

    def _set_wake(self) -> None:
        if self._wake_event is not None:
            self._wake_event.set()

    def _cancel_cycle(self) -> None:
        self._set_wake()
        if self._scope is not None:
            self._scope.cancel()

    def _run(self) -> None:
        delay = 1.0
        while True:
            try:
                with self._busy:
                    anyio.run(self._main)
                return
            except Exception:  # never let delivery end: restart the loop after a pause
                self._loop = None
                self._notify()
                if self._stopping or self._pid != os.getpid():
                    logger.exception("sqreen_mw flusher stopped on an unexpected error")
                    return
                self.restarts += 1
                logger.exception("sqreen_mw flusher stopped on an unexpected error; restart %d in %.0f s",
                                 self.restarts, delay)
                # Sleep in steps so that stop() is not kept waiting for the whole pause.
                until = time.monotonic() + delay
                while time.monotonic() < until and not self._stopping:
                    time.sleep(min(0.05, max(0.0, until - time.monotonic())))
                delay = min(_RESTART_MAX_DELAY, delay * 2)
            finally:
                self._loop = None
                self._notify()

    async def _main(self) -> None:
        self._wake_event = anyio.Event()
        self._login_lock = anyio.Lock()
        self._loop = asyncio.get_running_loop()
        transport = self._make_transport()
        try:
            async with anyio.create_task_group() as tasks:
                with anyio.CancelScope() as self._scope:
                    await self._login(transport)  # early: the collector may set the heartbeat delay and actions
                self._scope = None
                if self._on_actions is not None and not self._stopping:
                    tasks.start_soon(self._hold_push_channel, transport)
                try:
                    await self._deliver_loop(transport)
                finally:
                    tasks.cancel_scope.cancel()  # the long-poll never delays the exit
        finally:
            with anyio.move_on_after(max(0.0, self._deadline - time.monotonic()), shield=True):
                try:
                    await self._deliver(transport, everything=True, final=True)
                    if transport.session is not None:
                        await self._heartbeat(transport)  # the final statistics, drops included
                    await transport.logout()
                except Exception as exc:
                    self._unexpected(exc)
            with anyio.move_on_after(0.2, shield=True):
                await transport.aclose()

    async def _deliver_loop(self, transport: Transport) -> None:
        assert self._wake_event is not None  # noqa: S101 - set by _main
        next_beat = time.monotonic() + self.heartbeat_interval
        while not self._stopping:
            now = time.monotonic()
            wait = next_beat - now
            if self.queue.wants_send() or (len(self.queue) and (self._retry_pending or self._hot)):
                wait = min(wait, max(self._retry_at, self._retry_after_until) - now)
            self._busy.release()  # idle: a fork may happen now (the push task's I/O is no concern of a child's)
            try:
                with anyio.move_on_after(max(0.0, wait)):
                    await self._wake_event.wait()
            finally:
                self._busy.acquire()
            self._wake_event = anyio.Event()
            if self._stopping:
                break
            beat = time.monotonic() >= next_beat
            if beat:
                next_beat = time.monotonic() + self.heartbeat_interval
            hot, self._hot = self._hot, False
            with anyio.CancelScope() as self._scope:
                try:
                    await self._deliver(transport, everything=beat or hot or self._forced or self._retry_pending)
                    if beat:
                        await self._heartbeat(transport)
                except Exception as exc:  # a bug must not end delivery for the rest of the process
                    self._unexpected(exc)
            self._scope = None

    async def _hold_push_channel(self, transport: Transport) -> None:
        """Keep one long-poll open (protocol: "Push channel"): new actions arrive within milliseconds of a change.

        After an error it reconnects with jittered backoff (0.5 s doubling to 30 s); the versions differ after a
        reconnect when actions changed meanwhile, so none is missed. Cancelled at shutdown.
        """
        backoff = 0.0
        lost = False
        while not self._stopping:
            began = time.monotonic()
            try:
                outcome = await transport.poll_actions(self.push_wait) if await self._login(transport) else None
            except Exception as exc:  # a bug here must not end the channel
                logger.error("sqreen_mw push channel error: %s: %s", type(exc).__name__, exc, exc_info=exc)
                outcome = Outcome(RETRY, f"{type(exc).__name__}: {exc}")
            if outcome is not None and outcome.kind == OK:
                if lost:
                    logger.info("sqreen_mw push channel reconnected")
                lost = False
                backoff = 0.0
                self._take_actions(transport, outcome.body)
                if (isinstance(outcome.body, dict) and outcome.body.get("changed") is False
                        and time.monotonic() - began < self.push_wait / 2):
                    # "Unchanged" without holding the request (a proxy, or a collector that does not wait):
                    # polling again at once would be a busy loop on both sides.
                    await anyio.sleep(min(1.0, self.push_wait) * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                continue
            if outcome is not None:
                if outcome.reason.startswith(("HTTP 404", "HTTP 405")):
                    logger.info("sqreen_mw: this collector has no push channel (%s); actions come with the "
                                "heartbeat", outcome.reason)
                    return
                if outcome.kind == AUTH:
                    transport.session = None
                if not lost:
                    logger.info("sqreen_mw push channel lost (%s); reconnecting", outcome.reason)
            lost = True
            backoff = min(30.0, max(0.5, backoff * 2))
            await anyio.sleep(backoff * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto

    def _take_actions(self, transport: Transport, body: Any) -> None:
        """Enforce the actions an answer carries (login always; others when our version was out of date)."""
        if self._on_actions is None or not isinstance(body, dict) or "actions" not in body:
            return
        version = body.get("actions_version")
        try:
            self._on_actions(body)
        except Exception as exc:  # a bad list must not stop delivery; the next change retries
            logger.error("sqreen_mw could not apply the collector's actions: %s: %s", type(exc).__name__, exc)
            return
        transport.actions_version = version if type(version) is int else -1

    def _unexpected(self, exc: Exception) -> None:
        logger.error("sqreen_mw flusher error (will retry): %s: %s", type(exc).__name__, exc, exc_info=exc)
        self._failed(Outcome(RETRY, f"{type(exc).__name__}: {exc}"), "flusher")

    async def _login(self, transport: Transport) -> bool:
        if transport.session is not None:
            return True
        if self._login_lock is not None:  # the delivery loop and the push channel may both need a session
            async with self._login_lock:
                return await self._login_once(transport)
        return await self._login_once(transport)

    async def _login_once(self, transport: Transport) -> bool:
        if transport.session is not None:
            return True
        outcome = await transport.login()
        if outcome.kind == OK:
            body = outcome.body or {}
            self._take_actions(transport, body)
            delay = body.get("heartbeat_delay")
            if self.follow_collector_heartbeat and isinstance(delay, int | float) and delay > 0:
                self.heartbeat_interval = float(delay)
            logger.info("sqreen_mw logged in to the collector as app %r", body.get("app"))
            hot = body.get("hot_events")
            if self._on_actions is not None and isinstance(hot, list) and len(self.queue):
                # Events tracked before this process knew which names are hot: those that feed a playbook are sent
                # now rather than at the next heartbeat (once per login); the others wait as usual.
                if self.queue.holds_any(frozenset(name for name in hot if isinstance(name, str))):
                    self._hot = True
            return True
        self._failed(outcome, "login", transport)
        return False

    def _failed(self, outcome: Outcome, what: str, transport: Transport | None = None) -> None:
        if what == "login" and outcome.reason.startswith("HTTP 404") and transport is not None:
            if not self._url_refused:  # a wrong URL is a configuration error, not an outage: say so once
                self._url_refused = True
                logger.error("sqreen_mw: collector URL %s answered 404 on /api/v1/agent/login: SQREEN_URL must be "
                             "the collector's base URL (e.g. http://127.0.0.1:8707); will keep retrying",
                             transport.url)
        elif outcome.reason != self.last_error:
            if outcome.kind == AUTH and what == "login":
                logger.warning("sqreen_mw: the collector refused the API key (%s): check SQREEN_TOKEN; events wait "
                               "up to max_event_age while it retries", outcome.reason)
            else:
                logger.warning("sqreen_mw could not reach the collector (%s): %s; will retry", what, outcome.reason)
        self.last_error = outcome.reason
        self.retries += 1
        self._retry_pending = True  # retry what this round meant to send, even if no batch is full
        now = time.monotonic()
        self._backoff = min(60.0, max(1.0, self._backoff * 2))
        delay = self._backoff * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
        if outcome.retry_after is not None:  # honoured, but never below the backoff (Retry-After: 0 loops)
            delay = max(delay, outcome.retry_after)
            self._retry_after_until = now + delay
        self._retry_at = now + delay

    def _succeeded(self) -> None:
        if self.last_error:
            logger.info("sqreen_mw reached the collector again")
        self.last_error = ""
        self._retry_pending = False
        self._backoff = 0.0
        self._retry_at = 0.0

    async def _deliver(self, transport: Transport, *, everything: bool, final: bool = False) -> None:
        """Send batches; ``everything`` sends a partial last batch too (heartbeat, flush, exit)."""
        forced, self._forced = self._forced, False
        self._relogged = False
        queue = self.queue
        while True:
            queue.expire(time.time_ns() - int(self.max_event_age * 1e9))
            self._notify()
            if not len(queue) or (not everything and not queue.wants_send()):
                return
            now = time.monotonic()
            if now < self._retry_after_until or (now < self._retry_at and not (forced or final)):
                return
            if not await self._login(transport):
                return
            batch = queue.take(self._batch_limit)
            if not batch:
                return
            try:
                payload, kept = self._serialize(batch)
                if len(kept) < len(batch):
                    bad = len(batch) - len(kept)
                    logger.error("sqreen_mw dropped %d event(s) that could not be encoded as JSON", bad)
                    queue.drop("unserializable", bad, batch[0][SEQ])
                    batch = kept
                if payload is None:
                    queue.done()
                    continue
                outcome = await transport.send_batch(payload)
            except BaseException:
                queue.give_back(batch)
                raise
            if not self._settle(transport, batch, outcome):
                return

    def _settle(self, transport: Transport, batch: list[Record], outcome: Outcome) -> bool:
        """Account for one batch's outcome; return False to stop sending for now."""
        try:
            if outcome.kind == OK:
                self._take_actions(transport, outcome.body)
                self.queue.done()
                self.sent += len(batch)
                self._batch_limit = min(self.batch_size, self._batch_limit * 2)
                self._succeeded()
                return True
            if outcome.kind == SPLIT and len(batch) > 1:
                self._batch_limit = max(1, len(batch) // 2)
                self.queue.give_back(batch)
                return True
            invalid = _invalid_indexes(outcome, len(batch))
            if invalid and len(invalid) < len(batch):
                # The collector stores a batch all or nothing: leave out the events it named, send the others.
                self.queue.drop("rejected", len(invalid), batch[min(invalid)][SEQ])
                logger.error("sqreen_mw collector refused %d event(s): %s", len(invalid), outcome.reason)
                self.queue.give_back([r for i, r in enumerate(batch) if i not in invalid])
                return True
            if outcome.kind in (SPLIT, DROP):
                reason = "too_large" if outcome.kind == SPLIT else "rejected"
                self.queue.done()
                self.queue.drop(reason, len(batch), batch[0][SEQ])
                logger.error("sqreen_mw collector refused %d event(s): %s", len(batch), outcome.reason)
                return True
            self.queue.give_back(batch)
            if outcome.kind == AUTH:
                transport.session = None  # log in again, once per round
                if not self._relogged:
                    self._relogged = True
                    return True
            self._failed(outcome, "batch")
            return False
        finally:
            self._notify()

    async def _heartbeat(self, transport: Transport) -> None:
        if time.monotonic() < self._retry_after_until or not await self._login(transport):
            return
        outcome = await transport.heartbeat(self.statistics())
        if outcome.kind == OK:
            self._take_actions(transport, outcome.body)
        elif outcome.kind == AUTH:
            transport.session = None

    def statistics(self) -> dict[str, Any]:
        stats = self.queue.statistics()
        stats["sent"] = self.sent
        stats["retries"] = self.retries
        stats["flusher_restarts"] = self.restarts
        if self._extra_statistics is not None:
            stats.update(self._extra_statistics())
        return stats


def _invalid_indexes(outcome: Outcome, size: int) -> set[int]:
    """The batch positions a 422 answer names as invalid (protocol v1 ``errors[].index``)."""
    if outcome.kind != DROP or not isinstance(outcome.body, dict):
        return set()
    errors = outcome.body.get("errors")
    if not isinstance(errors, list):
        return set()
    indexes = (e.get("index") for e in errors if isinstance(e, dict))
    return {i for i in indexes if type(i) is int and 0 <= i < size}
