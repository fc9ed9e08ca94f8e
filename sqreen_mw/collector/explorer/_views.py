"""The explorer's pages: overview, events, event detail, breakdown, actor timeline, agents.

Each page takes the storage, the request, the session (its CSRF token goes into every form) and shared context, and
runs its storage queries in a worker thread.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response

from .._api import encode_cursor
from .._records import AgentSession
from .._sqlite_explorer import Overview
from ._automation_views import actor_story
from ._pages import render
from ._params import PRESETS, Filters, bucket_for, parse_filters
from ._security import Session

if TYPE_CHECKING:
    from ._routes import ExplorerStorage

PAGE_SIZE = 50
MAX_SERIES = 12
GROUPS = ("name", "ip", "user", "app")


def _base(request: Request, session: Session, context: dict[str, Any], page: str) -> dict[str, Any]:
    return {
        "signed_in": True, "csrf": session.csrf, "page": page, "presets": list(PRESETS),
        "request_base": str(request.base_url).rstrip("/"), **context,
    }  # fmt: skip


def _chart(overview: Overview) -> dict[str, Any]:
    """The chart's data: the busiest names as series, the rest summed as "other"."""
    ranked = sorted(overview.series.items(), key=lambda item: -sum(item[1]))
    series = [{"name": name, "data": data} for name, data in ranked[:MAX_SERIES]]
    if len(ranked) > MAX_SERIES:
        rest = [sum(column) for column in zip(*(data for _, data in ranked[MAX_SERIES:]), strict=True)]
        series.append({"name": "(other names)", "data": rest})
    return {"times": overview.times, "series": series}


async def _drops(storage: ExplorerStorage) -> dict[str, int]:
    """Events dropped by reason, summed over the agents' latest statistics."""
    agents = await to_thread.run_sync(storage.list_agents)
    totals: dict[str, int] = {}
    for agent in agents:
        for reason, count in ((agent.stats or {}).get("dropped") or {}).items():
            if isinstance(count, int) and count > 0:
                totals[str(reason)] = totals.get(str(reason), 0) + count
    return totals


async def overview(storage: ExplorerStorage, request: Request, session: Session, context: dict[str, Any]) -> Response:
    """``GET /``: events over time per name, totals, top names / IPs / users, login outcomes."""
    filters, errors = parse_filters(request.query_params)
    bucket = bucket_for(filters.until - filters.since)
    data = await to_thread.run_sync(storage.overview, filters.since, filters.until, bucket)
    if filters.query.name is not None:  # the chart follows a name chosen in the filter
        data.series = {k: v for k, v in data.series.items() if k == filters.query.name}
    return render(
        "overview.html", 400 if errors else 200, errors=errors, f=filters, data=data, chart=_chart(data),
        stacked=request.query_params.get("stack", "1") != "0", drops=await _drops(storage),
        backfill=await to_thread.run_sync(storage.rollup_backfill),
        **_base(request, session, context, "overview"),
    )  # fmt: skip


async def events(storage: ExplorerStorage, request: Request, session: Session, context: dict[str, Any]) -> Response:
    """``GET /events``: the filtered events, newest first, a page at a time."""
    filters, errors = parse_filters(request.query_params, cursor=True)
    rows = await to_thread.run_sync(storage.search_events, filters.query, PAGE_SIZE + 1)
    page = rows[:PAGE_SIZE]
    older = filters.link("/events", cursor=encode_cursor(page[-1])) if len(rows) > PAGE_SIZE else None
    return render(
        "events.html", 400 if errors else 200, errors=errors, f=filters, events=page, older=older,
        first=filters.link("/events") if filters.query.after else None, **_base(request, session, context, "events"),
    )  # fmt: skip


async def event_detail(
    storage: ExplorerStorage, request: Request, session: Session, context: dict[str, Any]
) -> Response:
    """``GET /events/{id}``: every field of one event."""
    event_id = str(request.path_params["event_id"]).lower()
    event = await to_thread.run_sync(storage.get_event, event_id)
    base = _base(request, session, context, "events")
    if event is None:
        return render("error.html", 404, message=f"No stored event has the id {event_id!r}.", **base)
    return render("event.html", event=event, **base)


def _row_link(f: Filters, group: str, value: Any) -> str | None:
    """The events page filtered on one breakdown row."""
    if value is None:
        return None
    if group == "user":
        first = next(iter(value.values()), None) if isinstance(value, dict) and value else None
        return None if first is None else f.link("/events", user=str(first))
    if group.startswith("property:"):
        shown = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return f.link("/events", prop=f"{group.removeprefix('property:')}={shown}")
    return f.link("/events", **{group: str(value)})


async def breakdown(storage: ExplorerStorage, request: Request, session: Session, context: dict[str, Any]) -> Response:
    """``GET /breakdown``: counts and distinct users / IPs grouped by name, IP, user, app or a property."""
    filters, errors = parse_filters(request.query_params)
    group = request.query_params.get("group", "name")
    key = request.query_params.get("key", "").strip()
    if group == "property":
        if not key:
            errors.append("group by property needs a property key (e.g. success)")
            group = "name"
        elif '"' in key:
            errors.append(f"property key must not contain a double quote, got {key!r}")
            group = "name"
        else:
            group = f"property:{key}"
    elif group not in GROUPS:
        errors.append(f"group must be one of {', '.join((*GROUPS, 'property'))}, got {group!r}")
        group = "name"
    rows, scanned, capped = await to_thread.run_sync(storage.breakdown, filters.query, group)
    linked = [(row, _row_link(filters, group, row.value)) for row in rows]
    return render(
        "breakdown.html", 400 if errors else 200, errors=errors, f=filters, group=group, key=key, rows=linked,
        scanned=scanned, capped=capped, **_base(request, session, context, "breakdown"),
    )  # fmt: skip


async def actor(storage: ExplorerStorage, request: Request, session: Session, context: dict[str, Any]) -> Response:
    """``GET /actor?ip=...`` or ``?user=...``: what one IP or one user did, in order (all time)."""
    filters, errors = parse_filters(request.query_params, cursor=True)
    base = _base(request, session, context, "actor")
    ip, user = filters.raw.get("ip"), filters.raw.get("user")
    if bool(ip) == bool(user) or (ip and filters.query.network is None):
        errors.append("an actor is one ip=<address or CIDR> or one user=<identifier value>")
        return render("actor.html", 400, errors=errors, f=filters, kind=None, value=None, **base)
    query = replace(filters.query, since=None, until=None, name=None, app=None, prop=None)
    summary, first, last = await to_thread.run_sync(storage.actor_summary, query)
    rows = await to_thread.run_sync(storage.search_events, query, PAGE_SIZE + 1)
    page = rows[:PAGE_SIZE]
    earlier = filters.link("/actor", cursor=encode_cursor(page[-1])) if len(rows) > PAGE_SIZE else None
    kind, value = ("ip", str(ip)) if ip else ("user", str(user))
    users = list({_compact_key(e.user_identifiers): e.user_identifiers for e in page if e.user_identifiers}.values())
    story = None
    automation = context.get("automation")
    if automation is not None:
        story = await to_thread.run_sync(actor_story, automation, kind, value, users)
    return render(
        "actor.html", 400 if errors else 200, errors=errors, f=filters, kind=kind, value=value, summary=summary,
        first_seen=first, last_seen=last, events=list(reversed(page)), earlier=earlier,
        latest=filters.link("/actor") if query.after else None, story=story, users=users, back=_back(request),
        **base,
    )  # fmt: skip


def _compact_key(ids: dict[str, Any] | None) -> str:
    return json.dumps(ids, sort_keys=True, ensure_ascii=True)


def _back(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def _agent_row(agent: AgentSession, now: float, delay: int) -> dict[str, Any]:
    stats = agent.stats or {}
    dropped = {str(k): v for k, v in (stats.get("dropped") or {}).items() if isinstance(v, int) and v > 0}
    seen = agent.last_heartbeat_at or agent.started_at
    return {
        "agent": agent,
        "seen": seen,
        "stale": agent.logged_out_at is None and now - seen > 3 * delay,
        "queued": stats.get("queued"),
        "sent": stats.get("sent"),
        "dropped": dropped,
        "dropped_total": sum(dropped.values()),
    }


async def agents(storage: ExplorerStorage, request: Request, session: Session, context: dict[str, Any]) -> Response:
    """``GET /agents``: agent sessions with their delivery statistics, drops first in view."""
    found = await to_thread.run_sync(storage.list_agents)
    now = time.time()
    rows = [_agent_row(agent, now, int(context["heartbeat_delay"])) for agent in found]
    return render(
        "agents.html", rows=rows, drops=await _drops(storage), **_base(request, session, context, "agents"),
    )  # fmt: skip
