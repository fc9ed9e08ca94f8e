"""The explorer's pages over automation: blocks (add, lift, history), playbooks (state, firings, backtest), and
what the actor timeline shows of them.

Reads and changes go through :class:`~sqreen_mw.collector.automation.Automation` (``app.state.automation``), the
same object the admin API uses, so a block made here reaches agents as fast as one made through the API.
"""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..automation import Automation, BlockRefused, PlaybookError
from ..automation.model import user_key
from ..automation.store import Block, Firing
from ._pages import render
from ._params import PRESETS, parse_filters
from ._security import HEADERS, Session, safe_path

DURATIONS = ("15m", "1h", "6h", "1d", "7d", "permanent")
RECENT_FIRINGS = 10
HISTORY = 200


def _base(session: Session, context: dict[str, Any], page: str) -> dict[str, Any]:
    return {"signed_in": True, "csrf": session.csrf, "page": page, "presets": list(PRESETS), **context}


def parse_user_value(text: str) -> dict[str, Any]:
    """A user block's value typed in a form: a JSON identifier map, or ``key=value``.

    :raises BlockRefused: neither.
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            raise BlockRefused("value", 'a user is a JSON identifier map like {"email": "a@example.com"}') from None
        if isinstance(value, dict):
            return value
    key, sep, rest = text.partition("=")
    if not sep or not key.strip() or not rest.strip():
        raise BlockRefused("value", "a user is key=value (e.g. email=a@example.com) or a JSON identifier map")
    return {key.strip(): rest.strip()}


async def blocks(automation: Automation, request: Request, session: Session, context: dict[str, Any]) -> Response:
    """``GET /blocks``: active blocks, the add form, and the history."""
    return await _blocks_page(automation, session, context, 200, None, {})


async def _blocks_page(
    automation: Automation, session: Session, context: dict[str, Any], status: int, message: str | None,
    form: dict[str, str],
) -> Response:  # fmt: skip
    everything = await to_thread.run_sync(lambda: automation.list_blocks(include_inactive=True))
    now = time.time()
    active = [b for b in everything if b.active(now)]
    history = [b for b in everything if not b.active(now)][:HISTORY]
    return render(
        "blocks.html", status, active=active, history=history, message=message, form=form, durations=DURATIONS,
        now=now, **_base(session, context, "blocks"),
    )  # fmt: skip


async def add_block(
    automation: Automation, request: Request, session: Session, context: dict[str, Any], form: dict[str, str]
) -> Response:
    """``POST /blocks``: block an IP/CIDR or a user for a duration, with a reason."""
    kind = form.get("kind", "")
    try:
        value: Any = parse_user_value(form.get("value", "")) if kind == "user" else form.get("value", "")
        body = {
            "kind": kind,
            "value": value,
            "duration": form.get("duration", "1h"),
            "reason": form.get("reason", "").strip() or "blocked from the explorer",
        }
        await to_thread.run_sync(automation.create_block, body)
    except BlockRefused as exc:
        return await _blocks_page(automation, session, context, 422, f"Not blocked: {exc.field}: {exc}", form)
    return RedirectResponse(safe_path(form.get("next"), "/blocks"), 303, headers=HEADERS)


async def lift_block(
    automation: Automation, request: Request, session: Session, context: dict[str, Any], form: dict[str, str]
) -> Response:
    """``POST /blocks/{id}/lift``: lift an active block."""
    block_id = str(request.path_params["block_id"])
    lifted = await to_thread.run_sync(automation.lift_block, block_id)
    if lifted is None:
        return await _blocks_page(automation, session, context, 404, f"No active block has the id {block_id!r}.", {})
    return RedirectResponse(safe_path(form.get("next"), "/blocks"), 303, headers=HEADERS)


def _firings(automation: Automation, playbook: str | None, limit: int) -> list[Firing]:
    store: Any = automation.store  # the collector's storage implements list_firings
    found: list[Firing] = store.list_firings(playbook=playbook, since=None, limit=limit, after=None)
    return found


async def playbooks(automation: Automation, request: Request, session: Session, context: dict[str, Any]) -> Response:
    """``GET /playbooks``: each playbook with its state and recent firings, and the backtest form."""
    return await _playbooks_page(automation, session, context, 200, None, None, {})


async def _playbooks_page(
    automation: Automation, session: Session, context: dict[str, Any], status: int, message: str | None,
    backtest: dict[str, Any] | None, form: dict[str, str],
) -> Response:  # fmt: skip
    listed = await to_thread.run_sync(automation.list_playbooks)

    def recent() -> dict[str, list[Firing]]:
        return {pb["name"]: _firings(automation, pb["name"], RECENT_FIRINGS) for pb in listed}

    firings = await to_thread.run_sync(recent)
    return render(
        "playbooks.html", status, playbooks=listed, firings=firings, message=message, backtest=backtest, form=form,
        **_base(session, context, "playbooks"),
    )  # fmt: skip


async def set_playbook_state(
    automation: Automation, request: Request, session: Session, context: dict[str, Any], form: dict[str, str]
) -> Response:
    """``POST /playbooks/{name}/state``: switch ``enabled`` or ``dry_run``."""
    name = str(request.path_params["name"])
    field = form.get("field", "")
    if field not in ("enabled", "dry_run") or form.get("value") not in ("true", "false"):
        return await _playbooks_page(automation, session, context, 400, "field must be enabled or dry_run, value "
                                     "true or false", None, {})  # fmt: skip
    try:
        changed = await to_thread.run_sync(automation.patch_playbook, name, {field: form["value"] == "true"})
    except PlaybookError as exc:
        return await _playbooks_page(automation, session, context, 422, str(exc), None, {})
    if changed is None:
        return await _playbooks_page(automation, session, context, 404, f"No playbook is named {name!r}.", None, {})
    return RedirectResponse("/playbooks", 303, headers=HEADERS)


async def run_backtest(
    automation: Automation, request: Request, session: Session, context: dict[str, Any], form: dict[str, str]
) -> Response:
    """``POST /playbooks/backtest``: replay a range through a playbook (a stored one, or JSON); no action taken."""
    filters, errors = parse_filters(form)
    definition: Any = None
    if form.get("definition", "").strip():
        try:
            definition = json.loads(form["definition"])
        except ValueError as exc:
            errors.append(f"the playbook JSON does not parse: {exc}")
    else:
        definition = await to_thread.run_sync(automation.get_playbook, form.get("playbook", ""))
        if definition is None:
            errors.append(f"no playbook is named {form.get('playbook', '')!r}")
        else:
            definition = {k: v for k, v in definition.items() if k not in ("source", "overridden", "stats")}
    if errors:
        return await _playbooks_page(automation, session, context, 400, "; ".join(errors), None, form)
    try:
        result = await to_thread.run_sync(automation.backtest, definition, filters.since, filters.until)
    except PlaybookError as exc:
        return await _playbooks_page(automation, session, context, 422, str(exc), None, form)
    result["since"], result["until"] = filters.since, filters.until
    return await _playbooks_page(automation, session, context, 200, None, result, form)


def _covers(block: Block, kind: str, value: str, users: list[dict[str, Any]]) -> bool:
    if block.kind != kind:
        return False
    if kind == "ip":
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(block.value, strict=False)
        except ValueError:
            return bool(block.value == value)
    key = user_key(block.value)
    return any(user_key(u) == key for u in users) or value in {str(v) for v in block.value.values()}


def _concerns(firing: Firing, kind: str, value: str, users: list[dict[str, Any]]) -> bool:
    if firing.actor_kind != kind:
        return False
    if kind == "ip":
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(str(firing.actor_value), strict=False)
        except ValueError:
            return bool(firing.actor_value == value)
    actor = firing.actor_value if isinstance(firing.actor_value, dict) else {}
    return any(user_key(u) == user_key(actor) for u in users) or value in {str(v) for v in actor.values()}


def actor_story(automation: Automation, kind: str, value: str, users: list[dict[str, Any]]) -> dict[str, Any]:
    """Blocks (active first) and recent firings concerning one IP or one user (worker thread)."""
    now = time.time()
    found = [b for b in automation.list_blocks(include_inactive=True) if _covers(b, kind, value, users)]
    found.sort(key=lambda b: (not b.active(now), -b.created_at))
    firings = [f for f in _firings(automation, None, 2000) if _concerns(f, kind, value, users)][:50]
    return {"blocks": found, "firings": firings, "now": now, "durations": DURATIONS}
