"""The client: validates calls, fills in the request's default properties, queues events for the flusher."""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from ._block_response import BlockResponse
from ._blocking import Actions
from ._body import jsonable
from ._config import resolve
from ._context import (
    Capture,
    RequestContext,
    _body_params,
    _EnvironHeaders,
    asgi_wanted,
    capture_size,
    context_for,
    current_context,
    environ_key,
    parse_query,
    request_info,
    request_key,
)
from ._enforce import Enforcer
from ._exceptions import InvalidEvent, UserBlocked
from ._flusher import Flusher
from ._ip import ClientIPResolver
from ._native import speedups
from ._queue import EventQueue, Record
from ._schema import (
    _KNOWN_KEYS,
    UserIdentifiers,
    WireEvent,
    _common_user,
    _show,
    check_name,
    check_properties,
    check_timestamp,
    check_user_identifiers,
    format_timestamp,
)
from ._scrub import Scrubber
from ._transport import Transport, encode_batch

logger = logging.getLogger("sqreen_mw")

_OPTION_KEYS = frozenset({"properties", "user_identifiers", "timestamp", "collect_body", "request"})
_MASK_74 = (1 << 74) - 1
_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()
_INFO_CACHE_SIZE = 1024
_WIRE_CHUNK = 100  # records made in one compiled call (a few hundred µs at most while the GIL is held)
_EVENTS_HEAD = len(b'{"events":[')
_time_ns = time.time_ns
_getpid = os.getpid


_SECOND_TEXT: dict[int, str] = {}  # a whole second's ISO text ("2026-12-03T06:24:09"): a batch's events share a few


def _tracked_timestamp(ns: int) -> str:
    """``format_timestamp`` of a ``time.time_ns()`` value, to the microsecond below it, from its second's text."""
    second, rest = divmod(ns, 1_000_000_000)
    text = _SECOND_TEXT.get(second)
    if text is None:
        if len(_SECOND_TEXT) >= 256:
            _SECOND_TEXT.clear()
        text = _SECOND_TEXT[second] = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")[:19]
    return f"{text}.{rest // 1000:06d}Z"


def _unreadable(exc: BaseException) -> None:
    # A request that cannot be read (client gone, odd server) is no app error: the event is kept without it.
    logger.warning("sqreen_mw could not read the request: %s: %s", type(exc).__name__, exc)


def _uuid7(ms: int, rand: int) -> str:
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Client:
    """An sqreen_mw client. Most apps use the module-level functions, which use the client made by ``init()``.

    :param token: the app's API key on the collector (env ``SQREEN_TOKEN``). Without one, calls are still validated
        but nothing is sent (one warning is logged).
    :param url: the collector's base URL (env ``SQREEN_URL``, default ``http://127.0.0.1:8707``).
    :param app_name: the name the collector shows for this app (env ``SQREEN_APP_NAME``).
    :param options: the other options of the README's configuration table.
    :raises ConfigurationError: an option is unknown or has an unusable value.
    """

    # The switches the compiled track() reads on every call are slots (read at their offsets); the rest is __dict__.
    __slots__ = ("__dict__", "__weakref__", "_accepting", "_capture", "_started_pid", "_track", "enforcer")

    def __init__(self, token: str | None = None, url: str | None = None, *, app_name: str | None = None,
                 **options: Any) -> None:
        settings = resolve({"token": token, "url": url, "app_name": app_name, **options})
        self.settings = settings
        self.enabled = settings["token"] is not None
        self.resolver = ClientIPResolver(settings["trusted_proxies"], settings["ip_header"])
        self._ip_key = environ_key(self.resolver.ip_header)
        self._asgi_wanted = asgi_wanted(self.resolver.ip_header)
        self.scrubber = Scrubber(
            enabled=settings["strip_sensitive_data"],
            sensitive_keys=settings["sensitive_keys"],
            sensitive_values=settings["sensitive_values"],
        )
        self.max_body_bytes: int = settings["max_body_bytes"]
        self.queue = EventQueue(settings["max_queue_events"], settings["max_queue_bytes"], settings["batch_size"])
        self.enforcer = Enforcer(
            self.resolver,
            BlockResponse(settings["block_status"], settings["block_body"], settings["block_content_type"]),
            self._report,
        )
        # Sent at login: the collector refuses to block the app's own proxies.
        proxies = ["*"] if self.resolver.trust_all else list(self.resolver.networks)
        self.flusher = Flusher(
            self.queue,
            lambda: Transport(settings["url"], settings["token"], settings["app_name"], settings["request_timeout"],
                              trusted_proxies=proxies),
            self._serialize,
            heartbeat_interval=settings["heartbeat_interval"],
            batch_size=settings["batch_size"],
            max_event_age=settings["max_event_age"],
            follow_collector_heartbeat="heartbeat_interval" not in settings["explicit"],
            on_actions=self.enforcer.set_actions,
            extra_statistics=self.enforcer.statistics,
        )
        self._seq = itertools.count(1)
        self._names: set[str] = set()  # event names already validated
        self._id_base = secrets.randbits(74)
        self._capture: list[WireEvent] | None = None
        self._info_cache: dict[tuple[Any, ...], Any] = {}  # request_key -> scrubbed request_info (flusher only)
        self._wire_cache: dict[tuple[Any, ...], Any] = {}  # the same for the compiled serializer, under its own keys
        self._accepting = self.enabled
        self._started_pid: int | None = None  # the process whose flusher runs; another pid = a fork we missed
        self._start_lock = threading.Lock()
        self._flush_mark = 0  # queue.drop_ops when the last flush() returned
        self._closed = False
        # The common track() call compiled (_speedups.Tracker), handing every other call to _track_py.
        self._track: Callable[..., bool] = self._track_py if speedups is None else speedups.Tracker(
            self, self._track_py, self._names, _KNOWN_KEYS, self._seq, self.queue, current_context, RequestContext,
            self._ip_key, self._asgi_wanted, _unreadable)
        if not self.enabled:
            logger.warning("sqreen_mw has no token (SQREEN_TOKEN): calls are validated but no event is sent")
        _live_clients.add(self)

    # --- public API -------------------------------------------------------------------------------------

    def track(
        self,
        event_name: str,
        options: Mapping[str, Any] | None = None,
        /,
        *,
        properties: Mapping[str, Any] | None = None,
        user_identifiers: Mapping[str, str | int] | None = None,
        timestamp: Any = None,
        collect_body: bool = False,
        request: Any = None,
    ) -> bool:
        """Record a custom event; see :func:`sqreen_mw.track`."""
        return self._track(event_name, options, properties, user_identifiers, timestamp, collect_body, request)

    def _track_py(self, event_name: str, options: Mapping[str, Any] | None, properties: Mapping[str, Any] | None,
                  user_identifiers: Mapping[str, str | int] | None, timestamp: Any, collect_body: bool,
                  request: Any) -> bool:
        if options is not None:
            return self._track_options(event_name, options, properties, user_identifiers, timestamp, collect_body,
                                       request)
        try:
            known = event_name in self._names  # an app tracks a handful of names: check each once
        except TypeError:  # unhashable: check_name says what is wrong
            known = False
        if not known:
            event_name = check_name(event_name)
            if len(self._names) < 1024:
                self._names.add(event_name)
        if user_identifiers is not None or timestamp is not None or collect_body or request is not None:
            return self._record(event_name, properties, user_identifiers, timestamp, collect_body, request)
        # The common call (a name and properties, in the current request or outside any): _record's steps for
        # it, inline. This is most of what an application pays per event.
        if properties:
            props, size = check_properties(properties)
        elif properties is None or isinstance(properties, Mapping):
            props, size = None, 0
        else:
            props, size = check_properties(properties)
        ctx = current_context.get()
        record: Record
        if ctx is None:
            record = (_time_ns(), next(self._seq), event_name, props, None, None, None, None, size + 200, False)
            same_request = False
        else:
            captured = ctx._capture
            same_request = captured is not None
            if captured is None:
                try:
                    captured = ctx.capture(self._ip_key, self._asgi_wanted)
                except Exception as exc:
                    _unreadable(exc)
                size += capture_size(captured)  # counted once, with the request's first event
            record = (_time_ns(), next(self._seq), event_name, props, ctx.user, None, captured, None, size + 200,
                      ctx.blocked is not None)
        if self._capture is not None or not self._accepting:
            return self._enqueue_slow(record)
        if self._started_pid is None or (not same_request and self._started_pid != _getpid()):
            self._start()
        if self.queue.put(record):
            self.flusher.wake()
        elif event_name in self.enforcer.actions.hot_events:  # feeds a playbook: send now, not at the heartbeat
            self.flusher.wake(hot=True)
        return True

    def _enqueue_slow(self, record: Record) -> bool:
        # Captured by testing.capture_events(), or not accepting (no token, or shut down).
        if self._capture is not None:
            self._capture.append(self._wire(record, {}))
            return True
        if self._closed:
            self.queue.drop("after_shutdown", 1, record[1])
        return False

    def _track_options(self, name: str, options: Mapping[str, Any], *args: Any) -> bool:
        if not isinstance(options, Mapping):
            raise InvalidEvent(f"options must be a mapping, got {type(options).__name__}")
        unknown = set(options) - _OPTION_KEYS
        if unknown:
            raise InvalidEvent(f"options has unknown keys {sorted(map(str, unknown))}; known: {sorted(_OPTION_KEYS)}")
        keywords = dict(zip(("properties", "user_identifiers", "timestamp", "collect_body", "request"), args,
                            strict=True))
        for key, value in options.items():
            if keywords[key] not in (None, False):
                raise InvalidEvent(f"{key} was given both in options and as a keyword")
            keywords[key] = value
        return self.track(name, **keywords)

    def _record(self, name: str, properties: Any, user_identifiers: Any, timestamp: Any, collect_body: Any,
                request: Any) -> bool:
        if properties:
            props, size = check_properties(properties)
        elif properties is None or isinstance(properties, Mapping):
            props, size = None, 0
        else:
            props, size = check_properties(properties)
        ctx = current_context.get() if request is None else context_for(request)
        user: UserIdentifiers | None = None
        if user_identifiers is not None:
            user = check_user_identifiers(user_identifiers, repair=True)
        elif ctx is not None:
            user = ctx.user
        when = None if timestamp is None else check_timestamp(timestamp)
        if collect_body and collect_body is not True:
            raise InvalidEvent(f"collect_body must be a bool, got {type(collect_body).__name__} {collect_body!r}")
        captured = body = None
        same_request = False  # an event of a request that already had one (in this process: no fork check)
        blocked = False
        if ctx is not None:
            captured = ctx._capture
            same_request = captured is not None
            if captured is None or collect_body:
                try:
                    if captured is None:  # the request's first event: its raw parts, by reference
                        captured = ctx.capture(self._ip_key, self._asgi_wanted)
                        size += capture_size(captured)
                    if collect_body:
                        body = ctx.body(self.max_body_bytes)
                        size += len(repr(body))
                except Exception as exc:
                    _unreadable(exc)
            blocked = ctx.blocked is not None  # sent as "blocked": never feeds a playbook
        record = (_time_ns(), next(self._seq), name, props, user, when, captured, body, size + 200, blocked)
        if self._capture is not None or not self._accepting:
            return self._enqueue_slow(record)
        if self._started_pid is None or (not same_request and self._started_pid != _getpid()):
            self._start()
        if self.queue.put(record):
            self.flusher.wake()
        elif name in self.enforcer.actions.hot_events:  # feeds a playbook: send now, not at the heartbeat
            self.flusher.wake(hot=True)
        return True

    def start(self) -> None:
        """Start delivering now: log in, fetch the actions to enforce and hold the push channel.

        ``init()`` calls it (with a token), and the middleware on a process's first request, so blocks are enforced
        from the start; otherwise the first ``track()`` does. Idempotent; a forked child starts its own.
        """
        if self.enabled and self._accepting and self._started_pid != os.getpid():
            self._start()

    def _start(self) -> None:
        # The first event of this process, or of a child forked where os.register_at_fork does not run (a fork
        # from C, as uWSGI does without py-call-osafterfork): such a child starts afresh like any other.
        # Threads making their first track() together all get here: only the first starts, and only a pid that
        # changed since is a fork (an unlocked check took the second thread for a fork and cleared the queue).
        with self._start_lock:
            pid = os.getpid()
            if self._started_pid == pid:
                return
            if self._started_pid is not None:
                self._after_fork()
            self.flusher.ensure_started()
            self._started_pid = pid

    def identify(self, user_identifiers: Mapping[str, str | int], traits: Mapping[str, Any] | None = None) -> None:
        """Name the user of the current request; later ``track()`` calls of the request inherit them.

        :raises UserBlocked: the user is blocked (see :func:`sqreen_mw.identify`).
        """
        user = None if traits is not None else _common_user(user_identifiers)  # the common call, its checks compiled
        if user is None:
            user = check_user_identifiers(user_identifiers, repair=True)
        trait_map = None if traits is None else check_properties(traits, "traits")[0]
        ctx = current_context.get()  # _identify_checked, inline
        if ctx is not None:
            ctx.user = user
            ctx.traits = trait_map
        if self.enforcer.actions.has_user_blocks:
            block = self.enforcer.user_block(user)
            if block is not None:
                self.enforcer.refuse_user(block, user, ctx)
                raise UserBlocked(user, block.id)

    def _identify_checked(self, user: UserIdentifiers, traits: dict[str, Any] | None = None) -> None:
        ctx = current_context.get()
        if ctx is not None:
            ctx.user = user
            ctx.traits = traits
        block = self.enforcer.user_block(user)
        if block is not None:
            self.enforcer.refuse_user(block, user, ctx)
            raise UserBlocked(user, block.id)

    def auth_track(self, success: bool, **user_identifiers: str | int) -> None:
        """Record a login attempt as ``sq.auth_track``; a successful one also identifies the user.

        Identifiers usually come from the login form: one longer than ``MAX_STRING_LENGTH`` is truncated with a
        marker rather than refused (an attacker must not turn the login page into an error).
        """
        if not isinstance(success, bool):
            raise InvalidEvent(f"success must be a bool, got {type(success).__name__} {_show(success)}")
        user = check_user_identifiers(user_identifiers, "auth_track user identifiers", repair=True, truncate=True)
        if success:
            self._flag_if_blocked(user)
        self._record("sq.auth_track", {"success": success}, user, None, False, None)
        if success:
            self._identify_checked(user)

    def signup_track(self, **user_identifiers: str | int) -> None:
        """Record a signup as ``sq.signup_track`` and identify the new user (long identifiers truncated, as above)."""
        user = check_user_identifiers(user_identifiers, "signup_track user identifiers", repair=True, truncate=True)
        self._flag_if_blocked(user)
        self._record("sq.signup_track", None, user, None, False, None)
        self._identify_checked(user)

    def _flag_if_blocked(self, user: UserIdentifiers) -> None:
        # Flag the request before the event that names a blocked user is recorded, so that event is sent marked
        # "blocked" too (it must not feed a playbook); identify() then refuses the user.
        if (block := self.enforcer.user_block(user)) is not None and (ctx := current_context.get()) is not None:
            ctx.blocked = block

    def flush(self, timeout: float = 5.0) -> bool:
        """Deliver everything queued so far.

        :return: True when every event tracked since the previous ``flush()`` (or since the start) was delivered
            to the collector within ``timeout`` seconds: none still queued, none dropped. False without a token
            (nothing is ever delivered then).
        """
        return self._flush(timeout, give_up_when_down=False)

    def _flush(self, timeout: float, *, give_up_when_down: bool) -> bool:
        target = next(self._seq) - 1
        if not self.enabled:
            ok = False
        elif self._started_pid is None:
            ok = not len(self.queue) and not self.queue.dropped_since(self._flush_mark, target)
        else:
            ok = self.flusher.flush(target, timeout, self._flush_mark, give_up_when_down=give_up_when_down)
        self._flush_mark = self.queue.drop_ops
        return ok

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush within ``timeout`` (default ``shutdown_timeout``) and stop; later events are not queued."""
        if self._closed:
            return
        self._closed = True
        self._accepting = False
        budget = self.settings["shutdown_timeout"] if timeout is None else timeout
        queued = len(self.queue)
        self.flusher.stop(budget)
        if len(self.queue):
            logger.warning("sqreen_mw exited with %d of %d queued event(s) undelivered", len(self.queue), queued)

    def statistics(self) -> dict[str, Any]:
        """Delivery counters: queued, queued_bytes, tracked, sent, dropped (by reason), retries, flusher_restarts,
        last_error, enabled; and enforcement: blocked (requests refused, by "ip" / "user"), block_reports_suppressed
        (enforcement events left out by the once-per-actor-per-minute limit), actions_version (held)."""
        stats = self.flusher.statistics()  # the enforcer's counters included
        stats["last_error"] = self.flusher.last_error
        stats["enabled"] = self.enabled
        return stats

    @property
    def actions(self) -> Actions:
        """The blocks enforced now (an immutable snapshot, replaced whenever the collector sends new actions)."""
        return self.enforcer.actions

    def set_actions(self, payload: Mapping[str, Any]) -> Actions:
        """Enforce the actions of a protocol payload (``actions_version``, ``actions``, ``hot_events``) now.

        The flusher calls it with each new list from the collector; tests and collector-less setups may too.
        """
        return self.enforcer.set_actions(payload)

    def _report(self, name: str, properties: dict[str, str], user: Mapping[str, Any] | None,
                ctx: RequestContext | None) -> None:
        # An enforcement event (sq.action.*): the SDK's own name, already valid; never raises into the request.
        self._record(name, properties, user, None, False, ctx)

    # --- serialization (flusher thread) -------------------------------------------------------------------

    def _wire(self, record: Record, scrubbed: dict[int, Any], shared: bool = False) -> WireEvent:
        tracked_ns, seq, name, props, user, when, captured, body, _, blocked = record
        if type(props) is tuple:
            props = expand_properties(props)
        scrub = self.scrubber.scrub
        request = None
        if captured is not None:  # one request's capture is shared by its events: made and scrubbed once per batch
            request = scrubbed.get(id(captured))
            if request is None:
                request = scrubbed[id(captured)] = self._request_info(captured, shared)
        event: WireEvent = {
            "id": _uuid7(tracked_ns // 1_000_000, (self._id_base + seq) & _MASK_74),
            "name": name,
            "timestamp": _tracked_timestamp(tracked_ns) if when is None else format_timestamp(when),
            "properties": scrub(props) if props else {},
            "user_identifiers": user,
            "request": request,
            "body": None if body is None else scrub(body),
        }
        if blocked:  # tracked in a request the SDK refused: stored, never counted toward a playbook
            cast(dict[str, Any], event)["blocked"] = True
        return event

    def _wire_all(self, batch: list[Record], scrubbed: dict[int, Any]) -> list[WireEvent]:
        # [self._wire(record, scrubbed, True) for record in batch], compiled: the same events from the same caches
        # (the scrubber's, and the request's scrubbed properties under a key of the capture's raw parts); what the
        # caches cannot answer is asked of the Python methods, and a record of another shape is made by _wire.
        parts = None if speedups is None else self.scrubber.compiled_parts()
        if parts is not None:
            header = self.resolver.ip_header
            try:
                extra = None if header is None else header.encode("latin-1")
            except UnicodeEncodeError:  # request_key cannot use that name either: nothing is keyed
                parts = None
        if parts is None:
            return [self._wire(record, scrubbed, True) for record in batch]
        client_parts = (self._wire, self._request_info, request_info, self.resolver, self._wire_cache, _SECOND_TEXT,
                        _tracked_timestamp, format_timestamp, parse_query, self.resolver.resolve_cached,
                        _EnvironHeaders, _body_params)
        if len(batch) <= _WIRE_CHUNK:
            return speedups.wire_batch(batch, scrubbed, self._id_base, extra, client_parts, parts)
        # In chunks: one compiled call holds the GIL throughout, and the app's threads wait for it (a request
        # arriving meanwhile would wait for a whole batch); between calls the interpreter can hand it over.
        events: list[WireEvent] = []
        for start in range(0, len(batch), _WIRE_CHUNK):
            events += speedups.wire_batch(batch[start:start + _WIRE_CHUNK], scrubbed, self._id_base, extra,
                                          client_parts, parts)
        return events

    def _request_info(self, captured: Capture, shared: bool = False) -> Any:
        # The default properties of a captured request, scrubbed. Request data is attacker-controlled: whatever it
        # holds, the event is still sent (without its request properties when they cannot be made).
        # ``shared`` (the flusher, whose events are encoded and dropped): an equal request seen before gives the
        # same object, made and scrubbed once (the same client hitting the same URL: a login page under attack).
        key = info = None
        if shared:
            try:
                key = request_key(captured, self.resolver.ip_header)
                info = None if key is None else self._info_cache.get(key)
            except Exception:  # an odd server's scope or environ (no path, values that do not hash): not cached
                key = None
            if info is not None:
                return info
        try:
            info = self.scrubber.scrub(request_info(captured, self.resolver))
            if key is not None:
                if len(self._info_cache) >= _INFO_CACHE_SIZE:
                    self._info_cache.clear()
                self._info_cache[key] = info
            return info
        except Exception as exc:
            logger.warning("sqreen_mw could not read the request: %s: %s", type(exc).__name__, exc)
            return None

    def _encode_in_chunks(self, batch: list[Record], scrubbed: dict[int, Any]) -> bytes:
        # encode_batch(self._wire_all(batch, scrubbed)), a chunk at a time: each chunk's wire events are encoded and
        # dropped before the next are made, so a batch's events (some 5,000 objects for 1,000) never live at once.
        # Made all at once, they set off the garbage collector's young collections (which count allocations less
        # frees) several times a batch, and each promoted whatever the app's requests held at that moment.
        if len(batch) <= _WIRE_CHUNK:
            return encode_batch(self._wire_all(batch, scrubbed))
        parts = [encode_batch(self._wire_all(batch[start:start + _WIRE_CHUNK], scrubbed))
                 for start in range(0, len(batch), _WIRE_CHUNK)]
        # each part is b'{"events":[...]}' (orjson's or the standard library's compact JSON): their arrays joined
        return b"".join((b'{"events":[', b",".join([memoryview(part)[_EVENTS_HEAD:-2] for part in parts]), b"]}"))

    def _serialize(self, batch: list[Record]) -> tuple[bytes | None, list[Record]]:
        """The batch body and the records in it; a record that cannot be encoded is left out (the caller counts).

        Request data may carry what JSON or the collector cannot (``1e400`` parsed to infinity, lone surrogates):
        when the batch does not encode, its events are made representable (:func:`jsonable`) and encoded again.
        """
        scrubbed: dict[int, Any] = {}
        try:
            return self._encode_in_chunks(batch, scrubbed), batch
        except Exception as exc:
            logger.debug("sqreen_mw batch encoding failed (%s); making its events representable", exc)
        try:
            return encode_batch([_representable(self._wire(record, {})) for record in batch]), batch
        except Exception as exc:  # find the culprits one by one
            logger.debug("sqreen_mw batch encoding failed (%s); encoding its events one by one", exc)
        kept_events, kept = [], []
        for record in batch:
            try:
                event = _representable(self._wire(record, {}))
                encode_batch([event])
            except Exception as exc:
                logger.error("sqreen_mw cannot encode event %r: %s: %s", record[2], type(exc).__name__, exc)
                continue
            kept_events.append(event)
            kept.append(record)
        return (encode_batch(kept_events) if kept_events else None), kept

    def _after_fork(self) -> None:
        was_started = self._started_pid is not None
        self.queue.clear()
        self.flusher.after_fork()
        self._id_base = secrets.randbits(74)
        self._started_pid = None
        self._start_lock = threading.Lock()  # another thread of the parent may have held it at fork time
        self._flush_mark = 0
        if was_started and self._accepting:
            # A worker forked from a process that was delivering (gunicorn --preload after init()): it logs in
            # and fetches the actions now, so it enforces blocks from its first request on.
            self.flusher.ensure_started()
            self._started_pid = os.getpid()


def expand_properties(props: tuple[Any, ...]) -> dict[str, Any]:
    """The properties of a record that the compiled ``track()`` keeps compact, ``(keys, value, value, ...)``: the keys
    a tuple shared by the records of equal keys (a dict of up to five items takes 184 bytes; this, 40 + 8 per value)."""
    return dict(zip(props[0], props[1:], strict=True))


def _representable(event: WireEvent) -> WireEvent:
    # Deep enough for any body the collector stores; deeper levels become TRUNCATION_MARKER.
    return cast(WireEvent, jsonable(event, max_depth=64))
