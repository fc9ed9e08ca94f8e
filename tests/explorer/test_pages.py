"""The explorer's pages in process (httpx over ASGI), on both stores: empty states, stale agents, drops, charts'
buckets, errors."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from sqreen_mw.collector import create_app
from sqreen_mw.collector._records import AgentSession

pytestmark = pytest.mark.anyio
TOKEN = "pages-admin-token"


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The collector's database, once per store: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "e.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def client(db: str) -> AsyncIterator[tuple[httpx.AsyncClient, Starlette]]:
    app = create_app(db_path=db, api_keys={"k": ""}, admin_token=TOKEN, heartbeat_delay=10)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://collector") as c:
            form = await c.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf
            assert (await c.post("/login", data={"csrf": csrf.group(1), "token": TOKEN})).status_code == 303
            yield c, app
    finally:
        app.state.storage.close()


async def test_every_list_says_what_to_do_when_empty(client: tuple[httpx.AsyncClient, Starlette]) -> None:
    c, _ = client
    expected = {
        "/": "send a first event from your app",
        "/events": "No event matches",
        "/breakdown": "Nothing to break down",
        "/actor?ip=192.0.2.1": "No stored event comes from it",
        "/agents": "No agent has logged in",
        "/blocks": "Nothing is blocked",
        "/playbooks": "No playbook",
    }
    for path, text in expected.items():
        answer = await c.get(path)
        assert answer.status_code == 200, path
        assert text in unescape(answer.text), path


async def test_agents_marks_stale_ones_and_shows_drops(client: tuple[httpx.AsyncClient, Starlette]) -> None:
    c, app = client
    now = time.time()
    storage = app.state.storage
    storage.create_session(AgentSession("s1", "shop", "web-1", 11, "0.1.0", "cpython", now - 600, now - 600, None,
                                        {"queued": 4, "sent": 90, "dropped": {"queue_full": 12, "max_age": 3}}))
    storage.create_session(AgentSession("s2", "shop", "web-2", 12, "0.1.0", "cpython", now - 5, now - 5, None,
                                        {"queued": 0, "sent": 10, "dropped": {}}))
    answer = await c.get("/agents")
    rows = re.findall(r"<tr class=\"([^\"]*)\">(.*?)</tr>", answer.text, re.S)
    by_host = {("web-1" in body and "web-1") or "web-2": classes for classes, body in rows}
    assert "stale" in by_host["web-1"] and "dropping" in by_host["web-1"]
    assert "stale" not in by_host["web-2"]
    alert = answer.text.split('role="alert">', 1)[1].split("</div>", 1)[0]
    assert "<strong>12</strong> queue_full" in alert and "<strong>3</strong> max_age" in alert
    overview = (await c.get("/")).text
    assert "Agents dropped events" in overview and "12 (queue_full)" in overview and "3 (max_age)" in overview


async def test_chart_buckets_follow_the_range(client: tuple[httpx.AsyncClient, Starlette]) -> None:
    c, _ = client
    session = (await c.post("/api/v1/agent/login", headers={"X-Api-Key": "k"}, json={})).json()["session_id"]
    now = time.time()
    events = [{"id": f"0190b2a0-0000-7000-8000-{i:012d}", "name": "search",
               "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 30 - i * 60)), "properties": {}}
              for i in range(5)]
    assert (await c.post("/api/v1/agent/batch", headers={"X-Session-Key": session},
                         json={"events": events})).status_code == 200
    for preset, bucket in (("1h", 60), ("24h", 900), ("7d", 3 * 3600), ("30d", 6 * 3600)):
        page = (await c.get("/", params={"range": preset})).text
        data = json.loads(unescape(re.search(r'data-chart="([^"]*)"', page).group(1)))  # type: ignore[union-attr]
        times = data["times"]
        assert {b - a for a, b in itertools.pairwise(times)} == {bucket}, preset
        assert sum(data["series"][0]["data"]) == 5 and data["series"][0]["name"] == "search"
        assert len(times) <= 121
    custom = await c.get("/", params={"since": "2026-01-01T00:00Z", "until": "2026-01-01T02:00Z"})
    assert "in buckets of 1 min" in custom.text


async def test_unknown_event_and_bad_actor(client: tuple[httpx.AsyncClient, Starlette]) -> None:
    c, _ = client
    answer = await c.get("/events/0190b2a0-0000-7000-8000-000000000000")
    assert answer.status_code == 404 and "No stored event has the id" in answer.text
    for query in ("", "?ip=nonsense", "?ip=192.0.2.1&user=a"):
        answer = await c.get(f"/actor{query}")
        assert answer.status_code == 400 and "an actor is one ip=" in unescape(answer.text), query


async def test_overview_says_while_older_events_are_being_counted(
    client: tuple[httpx.AsyncClient, Starlette], monkeypatch: pytest.MonkeyPatch
) -> None:
    c, app = client
    assert "events stored before this version" not in (await c.get("/")).text
    monkeypatch.setattr(app.state.storage, "rollup_backfill", lambda: (25_000, 100_000))
    assert "Counting the 100,000 events stored before this version: 25 % done" in (await c.get("/")).text


async def test_a_nul_character_in_a_filter_is_explained_on_every_page(
    client: tuple[httpx.AsyncClient, Starlette],
) -> None:
    c, _ = client  # PostgreSQL refuses NUL in a query's text: a 500 before the filters refused it
    for path in ("/", "/events", "/breakdown", "/actor"):
        for key in ("name", "user", "app"):
            answer = await c.get(path, params={key: "a\x00b"})
            assert answer.status_code == 400, (path, key, answer.status_code)
            if path != "/actor":  # the actor page says what an actor is instead
                assert f"{key} must not contain a NUL character" in unescape(answer.text), (path, key)
