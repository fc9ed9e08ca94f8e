"""Automation through the collector's HTTP API: playbooks, firings on ingest, blocks, the allowlist, actions to
agents and the push channel, backtests; counters rebuilt after a restart."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from sqreen_mw._schema import format_timestamp
from sqreen_mw.collector import create_app
from sqreen_mw.collector.automation import Allowlist, parse_playbook

from ._helpers import ADMIN, ADMIN_HEADERS, API_KEY, event, login, send

pytestmark = pytest.mark.anyio

STUFFING: dict[str, Any] = {
    "name": "stuffing",
    "event": "sq.auth_track",
    "where": {"success": False},
    "actor": "ip",
    "threshold": 3,
    "window": "5m",
    "response": [{"action": "block_ip", "duration": "15m"}],
}


def now_iso(offset: float = 0.0) -> str:
    return format_timestamp(time.time() + offset)


def failed_login(ip: str = "203.0.113.7", offset: float = 0.0, **extra: Any) -> dict[str, Any]:
    data = event("sq.auth_track", now_iso(offset), ip=ip, users={"email": "ann@example.com"}, **extra)
    data["properties"] = {"success": False}
    return data


async def put(client: httpx.AsyncClient, body: dict[str, Any], name: str | None = None) -> httpx.Response:
    return await client.put(f"/api/v1/playbooks/{name or body['name']}", headers=ADMIN_HEADERS, json=body)


async def firings(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/firings", headers=ADMIN_HEADERS, params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["firings"]
    return found


async def blocks(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/blocks", headers=ADMIN_HEADERS, params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["blocks"]
    return found


async def test_playbook_crud(client: httpx.AsyncClient) -> None:
    created = await put(client, STUFFING)
    assert created.status_code == 201, created.text
    assert created.json()["source"] == "api" and created.json()["window"] == "5m"
    assert (await put(client, {**STUFFING, "threshold": 5})).status_code == 200
    listed = (await client.get("/api/v1/playbooks", headers=ADMIN_HEADERS)).json()["playbooks"]
    assert [(p["name"], p["threshold"]) for p in listed] == [("stuffing", 5)]
    patched = await client.patch("/api/v1/playbooks/stuffing", headers=ADMIN_HEADERS, json={"enabled": False})
    assert patched.json()["enabled"] is False
    bad = await put(client, {**STUFFING, "window": "soon"})
    assert bad.status_code == 422
    assert bad.json()["errors"] == [{"field": "window", "message": bad.json()["errors"][0]["message"]}]
    assert "duration" in bad.json()["errors"][0]["message"]
    assert (await put(client, STUFFING, name="other")).status_code == 422  # name must match the URL
    assert (await client.delete("/api/v1/playbooks/stuffing", headers=ADMIN_HEADERS)).status_code == 200
    assert (await client.delete("/api/v1/playbooks/stuffing", headers=ADMIN_HEADERS)).status_code == 404
    assert (await client.get("/api/v1/playbooks", headers={})).status_code == 401
    assert (await client.get("/api/v1/playbooks?x=1", headers=ADMIN_HEADERS)).status_code == 400


async def test_threshold_fires_once_and_blocks_the_ip(client: httpx.AsyncClient) -> None:
    await put(client, {**STUFFING, "response": [*STUFFING["response"], {"action": "log"}]})
    sid = await login(client)
    batch = [failed_login() for _ in range(2)] + [failed_login(ip="198.51.100.1")]
    assert (await send(client, sid, batch)).status_code == 200
    assert await firings(client) == []  # 2 from this IP: below the threshold
    assert (await send(client, sid, batch[:2])).json()["duplicates"] == 2  # a retry counts nothing twice
    assert await firings(client) == []
    third = failed_login()
    assert (await send(client, sid, [third, failed_login()])).status_code == 200
    (firing,) = await firings(client)
    assert firing["playbook"] == "stuffing" and firing["actor"] == {"kind": "ip", "value": "203.0.113.7"}
    assert firing["count"] == 3 and third["id"] in firing["event_ids"] and batch[0]["id"] in firing["event_ids"]
    assert [(r["action"], r["status"]) for r in firing["responses"]] == [("block_ip", "taken"), ("log", "taken")]
    (block,) = await blocks(client)
    assert block["id"] == firing["responses"][0]["block_id"]
    assert block["kind"] == "ip" and block["value"] == "203.0.113.7" and block["playbook"] == "stuffing"
    assert 14 * 60 < _seconds_until(block["expires_at"]) <= 15 * 60
    # agents get it on login, and in batch answers when they hold an older version
    login_answer = (await client.post("/api/v1/agent/login", headers={"X-Api-Key": API_KEY}, json={})).json()
    assert [a["value"] for a in login_answer["actions"]] == ["203.0.113.7"]
    assert login_answer["actions"][0]["action"] == "block_ip" and login_answer["hot_events"] == ["sq.auth_track"]
    version = login_answer["actions_version"]
    answer = await client.post("/api/v1/agent/heartbeat", headers={"X-Session-Key": sid, "X-Actions-Version": "-1"},
                               json={})
    assert answer.json()["actions_version"] == version and len(answer.json()["actions"]) == 1
    same = await client.post("/api/v1/agent/heartbeat",
                             headers={"X-Session-Key": sid, "X-Actions-Version": str(version)}, json={})
    assert same.json() == {"commands": [], "actions_version": version}
    # more attempts within the cooldown fire nothing new
    assert (await send(client, sid, [failed_login() for _ in range(5)])).status_code == 200
    assert len(await firings(client)) == 1


async def test_history_and_blocked_events_never_fire(client: httpx.AsyncClient) -> None:
    await put(client, STUFFING)
    sid = await login(client)
    old = [failed_login(offset=-3600 - i) for i in range(10)]  # imported history, an hour old
    blocked = [failed_login(blocked=True) for _ in range(10)]  # tracked while the agent refused the request
    assert (await send(client, sid, old + blocked)).status_code == 200
    assert await firings(client) == [] and await blocks(client) == []


async def test_dry_run_records_and_takes_no_action(client: httpx.AsyncClient) -> None:
    await put(client, {**STUFFING, "dry_run": True})
    sid = await login(client)
    await send(client, sid, [failed_login() for _ in range(3)])
    (firing,) = await firings(client)
    assert firing["responses"][0]["status"] == "dry_run"
    assert await blocks(client) == []
    listed = (await client.get("/api/v1/playbooks", headers=ADMIN_HEADERS)).json()["playbooks"]
    assert listed[0]["dry_run"] is True
    login_answer = (await client.post("/api/v1/agent/login", headers={"X-Api-Key": API_KEY}, json={})).json()
    assert login_answer["hot_events"] == []  # a dry run does not need events at once


async def test_distinct_users_per_ip_and_user_blocks(client: httpx.AsyncClient) -> None:
    await put(client, {**STUFFING, "name": "spray", "distinct": "user", "threshold": 3})
    await put(client, {**STUFFING, "name": "per-user", "actor": "user", "distinct": "ip", "threshold": 2,
                       "response": [{"action": "block_user", "duration": "1h"}]})
    sid = await login(client)
    same_user = [failed_login() for _ in range(4)]  # 4 attempts, one user, one IP: no spray
    assert (await send(client, sid, same_user)).status_code == 200
    assert await firings(client, playbook="spray") == []
    spray = [{**failed_login(), "user_identifiers": {"email": f"u{i}@example.com"}} for i in range(3)]
    await send(client, sid, spray)
    assert len(await firings(client, playbook="spray")) == 1
    other_ip = {**failed_login(ip="198.51.100.9"), "user_identifiers": {"email": "victim@example.com"}}
    first_ip = {**failed_login(), "user_identifiers": {"email": "victim@example.com"}}
    await send(client, sid, [first_ip, other_ip])
    (user_firing,) = await firings(client, playbook="per-user")
    assert user_firing["actor"] == {"kind": "user", "value": {"email": "victim@example.com"}}
    kinds = sorted((b["kind"], str(b["value"])) for b in await blocks(client))
    assert kinds == [("ip", "203.0.113.7"), ("user", "{'email': 'victim@example.com'}")]


async def test_manual_blocks_refuse_protected_and_allowlisted(client: httpx.AsyncClient) -> None:
    async def block(body: dict[str, Any]) -> httpx.Response:
        return await client.post("/api/v1/blocks", headers=ADMIN_HEADERS, json=body)

    made = await block({"kind": "ip", "value": "203.0.113.0/24", "duration": "1h", "reason": "scanner"})
    assert made.status_code == 201 and made.json()["value"] == "203.0.113.0/24" and made.json()["active"]
    for value in ("127.0.0.1", "0.0.0.0", "::1", "224.0.0.1", "0.0.0.0/0"):
        refused = await block({"kind": "ip", "value": value})
        assert refused.status_code == 422, value
        assert refused.json()["errors"][0]["field"] == "value" and "never blocked" in refused.json()["error"]
    for body, field in [({"kind": "ip", "value": "nope"}, "value"), ({"kind": "host", "value": "x"}, "kind"),
                        ({"kind": "ip", "value": "1.2.3.4", "duration": "5s"}, "duration"),
                        ({"kind": "ip", "value": "1.2.3.4", "color": 1}, "color"),
                        ({"kind": "user", "value": {}}, "value")]:
        refused = await block(body)
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == field, body
    allowed = await client.post("/api/v1/allowlist", headers=ADMIN_HEADERS,
                                json={"kind": "ip", "value": "198.51.100.0/24"})
    assert allowed.status_code == 201
    refused = await block({"kind": "ip", "value": "198.51.100.7"})
    assert refused.status_code == 422 and "allowlist" in refused.json()["error"]
    # allowlisting what is blocked lifts the block
    await client.post("/api/v1/allowlist", headers=ADMIN_HEADERS, json={"kind": "ip", "value": "203.0.113.5"})
    assert await blocks(client) == []
    assert len(await blocks(client, all=1)) == 1


async def test_agents_trusted_proxies_are_never_blocked(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/agent/login", headers={"X-Api-Key": API_KEY},
                      json={"trusted_proxies": ["10.0.0.0/24", "*"]})
    refused = await client.post("/api/v1/blocks", headers=ADMIN_HEADERS, json={"kind": "ip", "value": "10.0.0.5"})
    assert refused.status_code == 422 and "trusted proxy" in refused.json()["error"]
    await put(client, STUFFING)
    sid = await login(client)
    await send(client, sid, [failed_login(ip="10.0.0.9") for _ in range(3)])
    (firing,) = await firings(client)
    assert firing["responses"][0]["status"] == "skipped" and "trusted proxy" in firing["responses"][0]["reason"]


async def test_lift_reaches_the_push_channel_at_once(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    headers = {"X-Session-Key": sid}
    first = (await client.get("/api/v1/agent/actions", headers={**headers, "X-Actions-Version": "-1"})).json()
    version = first["actions_version"]
    idle = await client.get("/api/v1/agent/actions", params={"wait": "0.2"},
                            headers={**headers, "X-Actions-Version": str(version)})
    assert idle.json() == {"actions_version": version, "changed": False}
    answers: list[dict[str, Any]] = []

    async def poll() -> None:
        response = await client.get("/api/v1/agent/actions", params={"wait": "20"},
                                    headers={**headers, "X-Actions-Version": str(version)})
        answers.append(response.json())

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        await anyio.sleep(0.2)
        started = time.monotonic()
        made = await client.post("/api/v1/blocks", headers=ADMIN_HEADERS, json={"kind": "ip", "value": "192.0.2.1"})
    assert time.monotonic() - started < 2.0
    assert answers[0]["actions_version"] > version and answers[0]["actions"][0]["value"] == "192.0.2.1"
    version = answers[0]["actions_version"]
    answers.clear()
    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        await anyio.sleep(0.2)
        lifted = await client.delete(f"/api/v1/blocks/{made.json()['id']}", headers=ADMIN_HEADERS)
    assert lifted.status_code == 200 and lifted.json()["active"] is False
    assert answers[0]["actions"] == []
    assert (await client.delete(f"/api/v1/blocks/{made.json()['id']}", headers=ADMIN_HEADERS)).status_code == 404
    assert (await client.get("/api/v1/agent/actions", headers={"X-Session-Key": "nope"})).status_code == 401
    assert (await client.get("/api/v1/agent/actions", params={"wait": "99"}, headers=headers)).status_code == 400


async def test_backtest_replays_history_without_acting(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    base = time.time() - 86400 * 3
    history = []
    for i in range(12):  # 12 attempts a minute apart from one IP, 2 from another
        history.append({**failed_login(), "timestamp": format_timestamp(base + 60 * i)})
    history += [{**failed_login(ip="198.51.100.3"), "timestamp": format_timestamp(base + 60 * i)} for i in range(2)]
    assert (await send(client, sid, history)).status_code == 200
    body = {"playbook": STUFFING, "since": format_timestamp(base - 1), "until": now_iso()}
    answer = await client.post("/api/v1/playbooks/backtest", headers=ADMIN_HEADERS, json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["events_scanned"] == 14
    # threshold 3 in 5 minutes, cooldown 5 minutes: fires at the 3rd, then needs 3 more after the cooldown
    assert [(f["actor"]["value"], f["count"]) for f in result["firings"]] == [("203.0.113.7", 3)] * 2
    assert result["firings"][0]["event_ids"] == [e["id"] for e in history[:3]]
    assert await blocks(client) == [] and await firings(client) == []
    bad = await client.post("/api/v1/playbooks/backtest", headers=ADMIN_HEADERS,
                            json={"playbook": {**STUFFING, "threshold": -1}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "threshold"


async def _client_for(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://collector") as client:
        yield client


async def test_a_stopping_collector_sends_the_push_channel_away(db: str) -> None:
    # An unchanged 200 at once would make the agent poll again at once: on a connection uvicorn accepted just as it
    # began stopping (it never asks that one to close), that loop kept the server up (1 stop in ~20 under load).
    app = create_app(db_path=db, api_keys={API_KEY: ""}, admin_token=ADMIN)
    try:
        async for client in _client_for(app):
            headers = {"X-Session-Key": await login(client)}
            answers: list[httpx.Response] = []

            async def poll(client: httpx.AsyncClient = client, answers: list[httpx.Response] = answers,
                           headers: dict[str, str] = headers) -> None:
                version = "-1"
                while not answers or answers[-1].status_code == 200:  # as an agent does: hold the newest version
                    answers.append(await client.get("/api/v1/agent/actions", params={"wait": "20"},
                                                    headers={**headers, "X-Actions-Version": version}))
                    if answers[-1].status_code == 200:
                        version = str(answers[-1].json()["actions_version"])

            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(poll)
                await anyio.sleep(0.5)
                app.state.automation.release_waiters()  # what SIGTERM does
            held = answers[-1]
            again = await client.get("/api/v1/agent/actions", params={"wait": "20"},
                                     headers={**headers, "X-Actions-Version": "-1"})
            assert time.monotonic() - started < 10  # nothing waited for its 20 s
            for answer in (held, again):
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"] == "1" and answer.headers["connection"] == "close"
    finally:
        app.state.storage.close()


async def test_counters_blocks_and_api_playbooks_survive_a_restart(db: str) -> None:
    def make() -> Starlette:
        return create_app(db_path=db, api_keys={API_KEY: ""}, admin_token=ADMIN,
                          playbooks=[parse_playbook({**STUFFING, "name": "from-file", "threshold": 4})],
                          allow=Allowlist())

    app = make()
    async for client in _client_for(app):
        await put(client, STUFFING)  # an API playbook, stored
        changed = await put(client, {**STUFFING, "name": "from-file", "threshold": 100})
        assert changed.json()["source"] == "file" and changed.json()["overridden"] is True
        sid = await login(client)
        await send(client, sid, [failed_login(ip="198.51.100.20") for _ in range(2)])
        made = await client.post("/api/v1/blocks", headers=ADMIN_HEADERS, json={"kind": "ip", "value": "192.0.2.9"})
        assert made.status_code == 201
    app.state.storage.close()
    app = make()
    try:
        async for client in _client_for(app):
            listed = {p["name"]: p for p in (await client.get("/api/v1/playbooks", headers=ADMIN_HEADERS)).json()[
                "playbooks"]}
            assert listed["stuffing"]["source"] == "api"
            assert listed["from-file"]["threshold"] == 4 and listed["from-file"]["overridden"] is False  # file wins
            assert [b["value"] for b in await blocks(client)] == ["192.0.2.9"]
            sid = await login(client)
            await send(client, sid, [failed_login(ip="198.51.100.20")])  # the 3rd, 2 before the restart
            (firing,) = await firings(client, playbook="stuffing")
            assert firing["count"] == 3
    finally:
        app.state.storage.close()


def _seconds_until(iso: str) -> float:
    from sqreen_mw._schema import parse_timestamp

    return parse_timestamp(iso) - time.time()


async def test_backtest_skips_refused_requests_only(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    base = time.time() - 86400
    refused = [{**failed_login(blocked=True), "timestamp": format_timestamp(base + i)} for i in range(5)]
    sneaky = []  # an attacker's own "blocked" field inside the request data must not hide the attempts
    for i in range(3):
        e = {**failed_login(), "timestamp": format_timestamp(base + 10 + i)}
        e["request"] = {**e["request"], "params": {"json": {"blocked": True}}}
        sneaky.append(e)
    assert (await send(client, sid, refused + sneaky)).status_code == 200
    body = {"playbook": STUFFING, "since": format_timestamp(base - 1)}
    result = (await client.post("/api/v1/playbooks/backtest", headers=ADMIN_HEADERS, json=body)).json()
    assert result["events_scanned"] == 8
    assert [f["event_ids"] for f in result["firings"]] == [[e["id"] for e in sneaky]]
