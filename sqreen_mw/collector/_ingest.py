"""Agent endpoints of protocol v1: login, heartbeat, batch, logout."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .._exceptions import InvalidEvent
from .._schema import MAX_INT, MIN_INT
from ._auth import match_api_key, session_key
from ._http import BODY_READ_TIMEOUT, JSON, error, read_body, rejected, unavailable
from ._records import StorageUnavailable
from ._storage import AgentSession, Storage
from ._wire import Rejected, check_tree, decode_json, parse_batch, storable
from .automation.api import actions_fields
from .automation.service import Automation

PROTOCOL_VERSION = 1
#: Largest login / heartbeat / logout body accepted.
MAX_SMALL_BODY = 64 * 1024
_STAT_COUNTERS = ("queued", "queued_bytes", "tracked", "sent", "retries")
_NO_SESSION = "missing, unknown or logged-out X-Session-Key: log in again"
#: How long a batch waits for one of the parsing slots before the collector answers 503.
PARSE_SLOT_WAIT = 5.0
#: Seconds an agent is told to wait (``Retry-After``) when the collector is saturated or its database unavailable.
RETRY_AFTER = 2
_log = logging.getLogger("sqreen_mw.collector")


class _Busy(Exception):
    """Every parsing slot stayed taken for PARSE_SLOT_WAIT seconds."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _login_field(body: Mapping[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        article = "an" if kind is int else "a"
        raise InvalidEvent(f"login field {key!r} must be {article} {kind.__name__} or null, got {type(value).__name__}")
    if isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
        raise InvalidEvent(f"login field {key!r} must fit in 64 bits (-2**63 to 2**63-1)")
    return storable(key, value) if isinstance(value, str) else value


def _check_stats(stats: object) -> dict[str, Any]:
    if not isinstance(stats, dict):
        raise InvalidEvent(f"stats must be an object, got {type(stats).__name__}")
    for key in _STAT_COUNTERS:
        if key in stats and not _is_int(stats[key]):
            raise InvalidEvent(f"stats.{key} must be an int, got {type(stats[key]).__name__}")
    dropped = stats.get("dropped", {})
    if not isinstance(dropped, dict) or not all(_is_int(count) for count in dropped.values()):
        raise InvalidEvent("stats.dropped must be an object mapping reasons to int counts")
    for key, value in stats.items():
        if _is_int(value) and not MIN_INT <= value <= MAX_INT:
            raise InvalidEvent(f"stats.{key} must fit in 64 bits (-2**63 to 2**63-1)")
    check_tree("stats", stats)
    return stats


class AgentEndpoints:
    """The agent side of the collector: sessions and event ingestion.

    :param storage: where sessions and events go.
    :param api_keys: accepted API keys, each mapped to the app it names ("" to let the agent name its app).
    :param automation: playbooks fed by the stored events, and the actions told to agents.
    :param heartbeat_delay: seconds between heartbeats told to agents (None: the agent's default).
    :param max_body_bytes: largest batch body, compressed and decompressed.
    :param max_batch_events: most events in one batch.
    :param body_timeout: seconds a client has to send a body once its headers are in (longer: 408).
    :param max_parallel_batches: most batches decoded at once (each may hold ~40 MB while decoded); a batch that
        finds every slot taken for :data:`PARSE_SLOT_WAIT` seconds is answered 503 with ``Retry-After``.
    """

    def __init__(
        self,
        storage: Storage,
        api_keys: Mapping[str, str],
        *,
        automation: Automation,
        heartbeat_delay: int | None,
        max_body_bytes: int,
        max_batch_events: int,
        max_parallel_batches: int = 2,
        body_timeout: float = BODY_READ_TIMEOUT,
    ) -> None:
        self.storage = storage
        self.automation = automation
        self.api_keys = dict(api_keys)
        self.heartbeat_delay = heartbeat_delay
        self.max_body_bytes = max_body_bytes
        self.max_batch_events = max_batch_events
        self._parse_slots = threading.BoundedSemaphore(max_parallel_batches)
        self.body_timeout = body_timeout

    def routes(self) -> list[Route]:
        """The agent routes, under ``/api/v1/agent``."""
        return [
            Route("/api/v1/agent/login", self.login, methods=["POST"]),
            Route("/api/v1/agent/heartbeat", self.heartbeat, methods=["POST"]),
            Route("/api/v1/agent/batch", self.batch, methods=["POST"]),
            Route("/api/v1/agent/logout", self.logout, methods=["POST"]),
        ]

    async def _small_json(self, request: Request) -> dict[str, Any]:
        raw = await read_body(request, MAX_SMALL_BODY, self.body_timeout)
        if not raw.strip():
            return {}
        body = decode_json(raw, request.headers.get("content-encoding"), MAX_SMALL_BODY)
        if not isinstance(body, dict):
            raise Rejected(400, {"error": f"body must be a JSON object, got {type(body).__name__}"})
        return body

    async def _session_app(self, request: Request) -> str | None:
        sid = session_key(request)
        return None if sid is None else await to_thread.run_sync(self.storage.session_app, sid)

    async def login(self, request: Request) -> Response:
        """``POST /api/v1/agent/login``: API key in, session out."""
        bound = match_api_key(self.api_keys, request)
        if bound is None:
            # Never the key itself: a mistyped key is often another secret.
            _log.info("login refused from %s: missing or unknown API key", _peer(request))
            return error(401, "missing or unknown X-Api-Key")
        try:
            body = await self._small_json(request)
            app_name = _login_field(body, "app_name", str)
            session = AgentSession(
                session_id=secrets.token_urlsafe(32),
                app=bound or app_name or "default",
                hostname=_login_field(body, "hostname", str),
                pid=_login_field(body, "pid", int),
                sdk_version=_login_field(body, "sdk_version", str),
                runtime=_login_field(body, "runtime", str),
                started_at=time.time(),
                agent_id=secrets.token_hex(8),
            )
        except Rejected as exc:
            return rejected(exc)
        except InvalidEvent as exc:
            return error(400, str(exc))
        try:
            await to_thread.run_sync(self.storage.create_session, session)
        except StorageUnavailable as exc:
            return unavailable(exc, RETRY_AFTER)
        _log.info(
            "login: app %r, host %r, pid %s, sdk %s (agent %s)",
            session.app, session.hostname, session.pid, session.sdk_version, session.agent_id,
        )  # fmt: skip
        if body.get("trusted_proxies") is not None:
            await to_thread.run_sync(self.automation.note_trusted_proxies, body["trusted_proxies"])
        return JSON(
            {
                "protocol": PROTOCOL_VERSION,
                "session_id": session.session_id,
                "app": session.app,
                "heartbeat_delay": self.heartbeat_delay,
                **self.automation.actions(),
            }
        )

    async def heartbeat(self, request: Request) -> Response:
        """``POST /api/v1/agent/heartbeat``: stats in, actions and commands out."""
        sid = session_key(request)
        if sid is None or await self._session_app(request) is None:
            return error(401, _NO_SESSION)
        try:
            stats = _check_stats((await self._small_json(request)).get("stats", {}))
        except Rejected as exc:
            return rejected(exc)
        except InvalidEvent as exc:
            return error(400, str(exc))
        try:
            if not await to_thread.run_sync(self.storage.heartbeat, sid, stats, time.time()):
                return error(401, _NO_SESSION)
        except StorageUnavailable as exc:
            return unavailable(exc, RETRY_AFTER)
        return JSON({"commands": [], **actions_fields(self.automation, request)})

    async def batch(self, request: Request) -> Response:
        """``POST /api/v1/agent/batch``: store a batch of events, all or nothing, deduplicated by id."""
        app = await self._session_app(request)
        if app is None:
            return error(401, _NO_SESSION)
        try:
            raw = await read_body(request, self.max_body_bytes, self.body_timeout)
        except Rejected as exc:
            return rejected(exc)
        encoding = request.headers.get("content-encoding")
        received_at = time.time()

        def work() -> tuple[int, int]:
            # Parsing and validating a 10 MiB batch takes a while: off the event loop, with the insert. The slots
            # bound the memory of batches being decoded at once (decoding holds the GIL: more would not be faster).
            if not self._parse_slots.acquire(timeout=PARSE_SLOT_WAIT):
                raise _Busy
            try:
                records = parse_batch(
                    raw,
                    encoding,
                    app=app,
                    received_at=received_at,
                    max_bytes=self.max_body_bytes,
                    max_events=self.max_batch_events,
                )
            except Rejected as exc:
                # Its traceback's frames hold the inflated body and the decoded batch; the exception ends up in a
                # reference cycle (the awaited future), so they would be freed only by the next garbage collection:
                # refused batches would pile up beyond what the parsing slots bound.
                raise exc.with_traceback(None) from None
            finally:
                self._parse_slots.release()
            if not records:
                return 0, 0
            fresh = self.storage.store_events(records)
            self.automation.observe(fresh)  # deduplicated first, then counted
            return len(fresh), len(records) - len(fresh)

        try:
            accepted, duplicates = await to_thread.run_sync(work)
        except Rejected as exc:
            _log.info("batch refused (app %r): %d %s", app, exc.status, exc.payload.get("error"))
            return rejected(exc)
        except _Busy:
            _log.warning("batch deferred (app %r): every parsing slot busy, answered 503", app)
            return error(503, "collector busy: retry later", {"Retry-After": str(RETRY_AFTER)})
        except StorageUnavailable as exc:
            return unavailable(exc, RETRY_AFTER)
        _log.info("batch (app %r): %d event(s) accepted, %d duplicate(s)", app, accepted, duplicates)
        return JSON({"accepted": accepted, "duplicates": duplicates, **actions_fields(self.automation, request)})

    async def logout(self, request: Request) -> Response:
        """``POST /api/v1/agent/logout``: end the session."""
        sid = session_key(request)
        if sid is None or not await to_thread.run_sync(self.storage.logout, sid, time.time()):
            return error(401, _NO_SESSION)
        return JSON({})


def _peer(request: Request) -> str:
    return request.client.host if request.client else "?"
