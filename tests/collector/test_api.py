"""Admin read API: auth, filters, ordering, pagination, agents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sqreen_mw.collector import create_app

from ._helpers import ADMIN, ADMIN_HEADERS, API_KEY, event, login, send, stored

pytestmark = pytest.mark.anyio


async def _seed(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    sid = await login(client)
    events = {
        "a": event("login.failed", "2024-05-01T10:00:00Z", ip="203.0.113.1", users={"email": "ann@example.com"}),
        "b": event("login.failed", "2024-05-01T11:00:00Z", ip="203.0.113.2", users={"id": 42}),
        "c": event("signup", "2024-05-01T12:00:00Z", ip="203.0.113.1", users={"email": "bob@example.com", "id": 7}),
        "d": event("login.failed", "2024-05-01T13:00:00Z", ip=None),
    }
    assert (await send(client, sid, list(events.values()))).json() == {"accepted": 4, "duplicates": 0}
    return events


def _ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "missing admin token"),
        ({"Authorization": "Basic YWRtaW46eA=="}, "missing admin token"),
        ({"Authorization": "Bearer "}, "missing admin token"),
        ({"Authorization": "Bearer wrong"}, "wrong admin token"),
        ({"Authorization": f"Bearer {ADMIN}x"}, "wrong admin token"),
        ({"Authorization": "Bearer caf\u00e9".encode()}, "wrong admin token"),  # non-ASCII bytes
    ],
)
async def test_admin_api_needs_the_token(client: httpx.AsyncClient, headers: Any, needle: str) -> None:
    for path in ("/api/v1/events", "/api/v1/agents"):
        response = await client.get(path, headers=headers)
        assert response.status_code == 401
        assert needle in response.json()["error"]
        assert response.headers["www-authenticate"] == "Bearer"


async def test_admin_api_without_configured_token_is_always_401(tmp_path: Path) -> None:
    app = create_app(db_path=str(tmp_path / "x.db"), api_keys={API_KEY: ""}, admin_token=None)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as client:
            for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
                response = await client.get("/api/v1/events", headers=headers)
                assert response.status_code == 401
                assert "configure an admin token" in response.json()["error"]
    finally:
        app.state.storage.close()


async def test_events_newest_first_with_their_fields(client: httpx.AsyncClient) -> None:
    seeded = await _seed(client)
    response = await client.get("/api/v1/events", headers=ADMIN_HEADERS)
    assert response.status_code == 200
    data = response.json()
    assert data["next"] is None
    assert _ids(data["events"]) == [seeded[k]["id"] for k in "dcba"]
    newest = data["events"][0]
    assert set(newest) == {"id", "name", "timestamp", "received_at", "app", "properties", "user_identifiers",
                           "request", "body"}  # fmt: skip
    assert newest["timestamp"] == "2024-05-01T13:00:00.000000Z"
    assert newest["request"] is None
    assert newest["user_identifiers"] is None
    assert newest["app"] == "default"
    assert data["events"][1]["user_identifiers"] == {"email": "bob@example.com", "id": 7}


async def test_filters(client: httpx.AsyncClient) -> None:
    s = await _seed(client)
    assert _ids(await stored(client, name="login.failed")) == [s[k]["id"] for k in "dba"]
    assert _ids(await stored(client, name="nope")) == []
    assert _ids(await stored(client, ip="203.0.113.1")) == [s[k]["id"] for k in "ca"]
    assert _ids(await stored(client, user="42")) == [s["b"]["id"]]
    assert _ids(await stored(client, user="bob@example.com")) == [s["c"]["id"]]
    assert _ids(await stored(client, user="7")) == [s["c"]["id"]]
    # since is inclusive, until exclusive; offsets are honoured.
    assert _ids(await stored(client, since="2024-05-01T11:00:00Z")) == [s[k]["id"] for k in "dcb"]
    assert _ids(await stored(client, until="2024-05-01T12:00:00Z")) == [s[k]["id"] for k in "ba"]
    assert _ids(await stored(client, since="2024-05-01T12:00:00+01:00", until="2024-05-01T13:00:00")) == [
        s[k]["id"] for k in "cb"
    ]
    assert _ids(await stored(client, name="login.failed", ip="203.0.113.1", user="ann@example.com")) == [s["a"]["id"]]
    assert _ids(await stored(client, name="signup", ip="203.0.113.2")) == []


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-13-01"}, "until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"cursor": "WzEsMl0"[:-1]}, "cursor"),
        ({"cursor": "WyJ4IiwgMl0"}, "cursor"),  # ["x", 2]
        ({"name": ""}, "name"),
        ({"user": ""}, "user"),
    ],
)
async def test_bad_filter_is_400_naming_it(client: httpx.AsyncClient, params: dict[str, str], needle: str) -> None:
    response = await client.get("/api/v1/events", headers=ADMIN_HEADERS, params=params)
    assert response.status_code == 400
    assert response.json()["error"].startswith(needle)


async def test_pagination_walks_everything_once_even_with_equal_timestamps(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    same = [event(timestamp="2024-05-01T10:00:00Z") for _ in range(5)]
    other = [event(timestamp=f"2024-05-01T1{i}:00:00Z") for i in range(1, 4)]
    assert (await send(client, sid, same + other)).json()["accepted"] == 8
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        data = (await client.get("/api/v1/events", headers=ADMIN_HEADERS, params=params)).json()
        pages += 1
        assert len(data["events"]) <= 3
        seen += data["events"]
        cursor = data["next"]
        if cursor is None:
            break
        assert pages < 10
    assert pages == 3
    assert sorted(_ids(seen)) == sorted(_ids(same + other))
    assert len(set(_ids(seen))) == 8
    assert [e["timestamp"][:13] for e in seen[:3]] == ["2024-05-01T13", "2024-05-01T12", "2024-05-01T11"]


async def test_user_filter_pages_through_equal_timestamps_newest_first(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    mine: list[dict[str, Any]] = []
    for batch in range(6):  # 150 events of one user, 10 per timestamp, interleaved with other users' events
        events = [event(timestamp=f"2024-05-01T10:00:{(batch * 25 + i) // 10:02d}Z", users={"id": "mallory"})
                  for i in range(25)]  # fmt: skip
        mine += events
        others = [event(timestamp="2024-05-01T10:00:05Z", users={"id": "someone"}) for _ in range(25)]
        assert (await send(client, sid, others + events)).json()["accepted"] == 50
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"user": "mallory", "limit": 40, **({"cursor": cursor} if cursor else {})}
        data = (await client.get("/api/v1/events", headers=ADMIN_HEADERS, params=params)).json()
        seen += data["events"]
        cursor = data["next"]
        if cursor is None:
            break
    assert len(seen) == 150 and len(set(_ids(seen))) == 150
    # Newest first; within a timestamp, the later stored first (the order of the unfiltered listing).
    assert _ids(seen) == _ids(sorted(mine[::-1], key=lambda e: e["timestamp"], reverse=True))
    assert [e["timestamp"] for e in seen] == sorted((e["timestamp"] for e in seen), reverse=True)
    unfiltered = await stored(client, limit=1000)
    assert _ids(seen) == [i for i in _ids(unfiltered) if i in set(_ids(mine))]


async def test_exact_page_has_no_next(client: httpx.AsyncClient) -> None:
    await _seed(client)
    data = (await client.get("/api/v1/events", headers=ADMIN_HEADERS, params={"limit": 4})).json()
    assert len(data["events"]) == 4
    assert data["next"] is None


async def test_limit_defaults_to_100_and_allows_up_to_1000(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    for _ in range(3):  # 150 events: the fixture allows 50 per batch
        assert (await send(client, sid, [event() for _ in range(50)])).status_code == 200
    default = (await client.get("/api/v1/events", headers=ADMIN_HEADERS)).json()
    assert len(default["events"]) == 100
    assert default["next"] is not None
    rest = (await client.get("/api/v1/events", headers=ADMIN_HEADERS, params={"cursor": default["next"]})).json()
    assert len(rest["events"]) == 50
    assert rest["next"] is None
    for _ in range(18):  # 1,050 events in all
        assert (await send(client, sid, [event() for _ in range(50)])).status_code == 200
    largest = (await client.get("/api/v1/events", headers=ADMIN_HEADERS, params={"limit": 1000})).json()
    assert len(largest["events"]) == 1000
    assert largest["next"] is not None
    beyond = await client.get("/api/v1/events", headers=ADMIN_HEADERS, params={"limit": 1001})
    assert beyond.status_code == 400
    assert "limit must be an integer from 1 to 1000" in beyond.json()["error"]


async def test_agents_newest_first(client: httpx.AsyncClient) -> None:
    first = await login(client, hostname="one")
    second = await login(client, hostname="two")
    agents = (await client.get("/api/v1/agents", headers=ADMIN_HEADERS)).json()["agents"]
    assert [a["hostname"] for a in agents] == ["two", "one"]
    assert all(len(a["agent_id"]) == 16 for a in agents) and agents[0]["agent_id"] != agents[1]["agent_id"]
    shown = json.dumps(agents)
    assert "session_id" not in shown and first not in shown and second not in shown  # the credentials


async def test_unknown_route_and_method_answer_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Not Found"}
    wrong = await client.get("/api/v1/agent/batch")
    assert wrong.status_code == 405
    assert wrong.json() == {"error": "Method Not Allowed"}
    assert wrong.headers["allow"] == "POST"
