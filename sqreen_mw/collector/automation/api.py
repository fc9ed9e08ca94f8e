"""HTTP side of automation: the admin API for playbooks, backtests, firings, blocks and the allowlist (bearer token),
and the agents' push channel ``GET /api/v1/agent/actions`` (session key). Shapes: DESIGN §8 and docs/protocol.md."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..._schema import parse_timestamp
from .._api import BadParameter
from .._auth import admin_denied, session_key
from .._http import JSON, error, read_body, rejected
from .._storage import Storage
from .._wire import Rejected, decode_json
from .model import PlaybookError
from .service import Automation, BlockRefused, block_json, firing_json

MAX_ADMIN_BODY = 1024 * 1024
MAX_WAIT = 60.0
DEFAULT_WAIT = 30.0
ACTIONS_VERSION_HEADER = "x-actions-version"


def encode_cursor_pair(at: float, seq: int) -> str:
    """Opaque cursor after the row (at, seq) of a newest-first listing."""
    return base64.urlsafe_b64encode(json.dumps([at, seq]).encode()).decode().rstrip("=")


def decode_cursor_pair(cursor: str) -> tuple[float, int]:
    """Inverse of :func:`encode_cursor_pair`; :raises BadParameter: not a cursor this API gave."""
    message = "cursor is not a cursor returned by this API (pass 'next' as is, with the same filters)"
    if len(cursor) > 200:
        raise BadParameter(message)
    try:
        at, seq = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, RecursionError, binascii.Error):
        raise BadParameter(message) from None
    if (not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at) or type(seq) is not int
            or not 0 <= seq < 2**63):
        raise BadParameter(message)
    return float(at), seq


def held_version(request: Request) -> int | None:
    """The ``X-Actions-Version`` an agent sent (None when missing or not an integer)."""
    text = request.headers.get(ACTIONS_VERSION_HEADER, "").strip()
    if not text or len(text) > 20 or not text.lstrip("-").isdigit():
        return None
    return int(text)


def actions_fields(automation: Automation, request: Request) -> dict[str, Any]:
    """What heartbeat and batch answers add for an agent that sends ``X-Actions-Version``: the version, and the
    actions when the agent's differs (nothing for agents that do not send the header)."""
    if ACTIONS_VERSION_HEADER not in request.headers:
        return {}
    payload = automation.actions()
    if held_version(request) == payload["actions_version"]:
        return {"actions_version": payload["actions_version"]}
    return dict(payload)


def _check_params(request: Request, known: Iterable[str]) -> None:
    allowed = set(known)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise BadParameter(f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(allowed)) or 'none'}")


def _time_param(request: Request, key: str) -> float | None:
    text = request.query_params.get(key)
    if text is None:
        return None
    try:
        return parse_timestamp(text)
    except (ValueError, OverflowError):
        raise BadParameter(f"{key} must be an ISO 8601 date-time, got {text[:60]!r}") from None


def _limit(request: Request, default: int, most: int) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 6 and 1 <= int(text) <= most):
        raise BadParameter(f"limit must be an integer from 1 to {most}, got {text[:20]!r}")
    return int(text)


def _invalid(exc: PlaybookError) -> JSON:
    return JSON({"error": str(exc), "errors": [{"field": f, "message": m} for f, m in exc.errors]}, status_code=422)


def _refused(exc: BlockRefused) -> JSON:
    return JSON({"error": str(exc), "errors": [{"field": exc.field, "message": str(exc)}]}, status_code=422)


class AutomationApi:
    """Routes of the admin automation API and of the push channel."""

    def __init__(self, automation: Automation, storage: Storage, admin_token: str | None) -> None:
        self.automation = automation
        self.storage = storage
        self.admin_token = admin_token

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/agent/actions", self.agent_actions, methods=["GET"]),
            Route("/api/v1/playbooks", self.playbooks, methods=["GET"]),
            Route("/api/v1/playbooks/backtest", self.backtest, methods=["POST"]),
            Route("/api/v1/playbooks/{name}", self.playbook, methods=["GET", "PUT", "PATCH", "DELETE"]),
            Route("/api/v1/firings", self.firings, methods=["GET"]),
            Route("/api/v1/blocks", self.blocks, methods=["GET", "POST"]),
            Route("/api/v1/blocks/{id}", self.block, methods=["GET", "DELETE"]),
            Route("/api/v1/allowlist", self.allowlist, methods=["GET", "POST"]),
            Route("/api/v1/allowlist/{id}", self.allow_entry, methods=["DELETE"]),
        ]

    def _denied(self, request: Request) -> Response | None:
        reason = admin_denied(self.admin_token, request)
        return None if reason is None else error(401, reason, {"WWW-Authenticate": "Bearer"})

    async def _json_body(self, request: Request) -> Any:
        raw = await read_body(request, MAX_ADMIN_BODY)
        if not raw.strip():
            raise Rejected(400, {"error": "the body must be JSON"})
        return decode_json(raw, request.headers.get("content-encoding"), MAX_ADMIN_BODY)

    # --- push channel -----------------------------------------------------------------------------------------

    async def agent_actions(self, request: Request) -> Response:
        """``GET /api/v1/agent/actions``: answer at once when the agent's version is old, else when it changes."""
        sid = session_key(request)
        if sid is None or await to_thread.run_sync(self.storage.session_app, sid) is None:
            return error(401, "missing, unknown or logged-out X-Session-Key: log in again")
        text = request.query_params.get("wait")
        try:
            wait = DEFAULT_WAIT if text is None else float(text)
        except ValueError:
            wait = -1.0
        if not 0 <= wait <= MAX_WAIT:
            return error(400, f"wait must be a number of seconds from 0 to {MAX_WAIT:g}, got {str(text)[:20]!r}")
        held = held_version(request)
        if held is not None and held == self.automation.version and wait > 0:
            await self.automation.wait_for_change(held, wait)
        if self.automation.closing:
            # Not a 200 "unchanged": the agent would poll again at once, and a connection uvicorn accepted just
            # as it began stopping (it never asks that one to close) would keep the server up in that loop.
            return error(503, "the collector is stopping: reconnect", {"Retry-After": "1", "Connection": "close"})
        payload = self.automation.actions()
        if held == payload["actions_version"]:
            return JSON({"actions_version": held, "changed": False})
        return JSON(payload)

    # --- playbooks --------------------------------------------------------------------------------------------

    async def playbooks(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            _check_params(request, ())
        except BadParameter as exc:
            return error(400, str(exc))
        return JSON({"playbooks": self.automation.list_playbooks()})

    async def playbook(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        name = request.path_params["name"]
        if request.method == "GET":
            found = self.automation.get_playbook(name)
            return error(404, f"no playbook named {name!r}") if found is None else JSON(found)
        if request.method == "DELETE":
            removed = await to_thread.run_sync(self.automation.delete_playbook, name)
            return JSON({}) if removed else error(404, f"no playbook named {name!r}")
        try:
            body = await self._json_body(request)
            if request.method == "PATCH":
                shown = await to_thread.run_sync(self.automation.patch_playbook, name, body)
                return error(404, f"no playbook named {name!r}") if shown is None else JSON(shown)
            created, shown = await to_thread.run_sync(self.automation.put_playbook, name, body)
        except Rejected as exc:
            return rejected(exc)
        except PlaybookError as exc:
            return _invalid(exc)
        return JSON(shown, status_code=201 if created else 200)

    async def backtest(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            body = await self._json_body(request)
            if not isinstance(body, dict) or "playbook" not in body:
                raise PlaybookError(None, [("playbook", 'the body is {"playbook": {...}, "since": ISO, "until": ISO}')])
            unknown = set(body) - {"playbook", "since", "until"}
            if unknown:
                raise PlaybookError(None, [(sorted(unknown)[0], f"unknown fields {sorted(unknown)}; known: playbook, "
                                                                 "since, until")])
            bounds: dict[str, float | None] = {}
            for key in ("since", "until"):
                value = body.get(key)
                if value is None:
                    bounds[key] = None
                    continue
                try:
                    bounds[key] = parse_timestamp(value) if isinstance(value, str) else _fail()
                except (ValueError, OverflowError):
                    raise PlaybookError(None, [(key, f"{key} must be an ISO 8601 date-time")]) from None
            until = bounds["until"] if bounds["until"] is not None else self.automation.clock()
            since = bounds["since"] if bounds["since"] is not None else until - 7 * 86400
            if since >= until:
                raise PlaybookError(None, [("since", "since must be before until")])
            result = await to_thread.run_sync(self.automation.backtest, body["playbook"], since, until)
        except Rejected as exc:
            return rejected(exc)
        except PlaybookError as exc:
            return _invalid(exc)
        return JSON(result)

    # --- firings ----------------------------------------------------------------------------------------------

    async def firings(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        try:
            _check_params(request, ("playbook", "since", "limit", "cursor"))
            since = _time_param(request, "since")
            limit = _limit(request, 100, 1000)
            cursor = request.query_params.get("cursor")
            after = None if cursor is None else decode_cursor_pair(cursor)
        except BadParameter as exc:
            return error(400, str(exc))
        rows = await to_thread.run_sync(lambda: self.automation.store.list_firings(
            playbook=request.query_params.get("playbook"), since=since, limit=limit + 1, after=after))
        page = rows[:limit]
        return JSON({
            "firings": [firing_json(f) for f in page],
            "next": encode_cursor_pair(page[-1].at, page[-1].seq) if len(rows) > limit else None,
        })

    # --- blocks -----------------------------------------------------------------------------------------------

    async def blocks(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        if request.method == "GET":
            try:
                _check_params(request, ("all",))
                flag = request.query_params.get("all", "0")
                if flag not in ("0", "1", "true", "false"):
                    raise BadParameter(f"all must be 1 or 0, got {flag[:20]!r}")
            except BadParameter as exc:
                return error(400, str(exc))
            blocks = await to_thread.run_sync(
                lambda: self.automation.list_blocks(include_inactive=flag in ("1", "true")))
            return JSON({"blocks": [block_json(b) for b in blocks]})
        try:
            body = await self._json_body(request)
            block = await to_thread.run_sync(self.automation.create_block, body)
        except Rejected as exc:
            return rejected(exc)
        except BlockRefused as exc:
            return _refused(exc)
        return JSON(block_json(block), status_code=201)

    async def block(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        block_id = request.path_params["id"]
        if request.method == "GET":
            found = await to_thread.run_sync(self.automation.store.get_block, block_id)
            return error(404, f"no block {block_id[:80]!r}") if found is None else JSON(block_json(found))
        lifted = await to_thread.run_sync(self.automation.lift_block, block_id)
        if lifted is None:
            return error(404, f"no active block {block_id[:80]!r}")
        return JSON(block_json(lifted))

    # --- allowlist --------------------------------------------------------------------------------------------

    async def allowlist(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        if request.method == "GET":
            return JSON(self.automation.allowlist_json())
        try:
            body = await self._json_body(request)
            entry = await to_thread.run_sync(self.automation.add_allow, body)
        except Rejected as exc:
            return rejected(exc)
        except BlockRefused as exc:
            return _refused(exc)
        return JSON({"id": entry.id, "kind": entry.kind, "value": entry.value}, status_code=201)

    async def allow_entry(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        entry_id = request.path_params["id"]
        removed = await to_thread.run_sync(self.automation.remove_allow, entry_id)
        return JSON({}) if removed else error(404, f"no allowlist entry {entry_id[:80]!r}")


def _fail() -> float:
    raise ValueError("not a string")


__all__ = ["AutomationApi", "actions_fields", "held_version"]
