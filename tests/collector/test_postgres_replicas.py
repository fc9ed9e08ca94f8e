"""Two collector apps on one PostgreSQL database, as two replicas behind a load balancer: a block made or lifted
through one wakes the long-polls held on the other, and an attacker's attempts split across both are counted
together (one firing, one block). The same with separate ``sqreen-mw serve`` processes: test_postgres_e2e.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from sqreen_mw.collector import create_app
from sqreen_mw.collector.automation import parse_playbook

from ..postgres_server import require_psycopg
from ._helpers import ADMIN, ADMIN_HEADERS, API_KEY, login, send
from .test_automation_api import STUFFING, blocks, failed_login, firings

require_psycopg()
pytestmark = pytest.mark.anyio


def _replica(url: str) -> Starlette:
    return create_app(db_path=url, api_keys={API_KEY: ""}, admin_token=ADMIN, playbooks=[parse_playbook(STUFFING)])


@pytest.fixture
async def pair(postgres_url: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    apps = [_replica(postgres_url), _replica(postgres_url)]
    try:
        for app in apps:  # listening before anything changes (a real replica is, long before its first agent)
            for listener in app.state.storage._listeners:
                assert listener.connected.wait(10)
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=f"http://replica{i}")) for i, app in enumerate(apps)]
            yield clients
    finally:
        for app in apps:
            app.state.storage.close()


async def _poll(client: httpx.AsyncClient, sid: str, version: int, into: list[dict[str, Any]]) -> None:
    response = await client.get("/api/v1/agent/actions", params={"wait": "20"},
                                headers={"X-Session-Key": sid, "X-Actions-Version": str(version)})
    assert response.status_code == 200, response.text
    into.append(response.json())


async def _version(client: httpx.AsyncClient, sid: str) -> int:
    answer = await client.get("/api/v1/agent/actions", headers={"X-Session-Key": sid, "X-Actions-Version": "-1"})
    version: int = answer.json()["actions_version"]
    return version


async def test_a_block_and_its_lifting_through_one_replica_wake_long_polls_on_the_other(
    pair: list[httpx.AsyncClient],
) -> None:
    a, b = pair
    sid_b = await login(b)
    version = await _version(b, sid_b)
    answers: list[dict[str, Any]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_poll, b, sid_b, version, answers)
        await anyio.sleep(0.3)
        started = time.monotonic()
        made = await a.post("/api/v1/blocks", headers=ADMIN_HEADERS, json={"kind": "ip", "value": "192.0.2.1"})
    assert made.status_code == 201
    assert time.monotonic() - started < 3.0  # pushed, not the 20 s wait
    assert answers[0]["actions_version"] > version and [x["value"] for x in answers[0]["actions"]] == ["192.0.2.1"]
    answers.clear()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_poll, b, sid_b, await _version(b, sid_b), answers)
        await anyio.sleep(0.3)
        started = time.monotonic()
        assert (await a.delete(f"/api/v1/blocks/{made.json()['id']}", headers=ADMIN_HEADERS)).status_code == 200
    assert time.monotonic() - started < 3.0 and answers[0]["actions"] == []
    assert (await b.delete(f"/api/v1/blocks/{made.json()['id']}", headers=ADMIN_HEADERS)).status_code == 404


async def test_an_api_playbook_made_on_one_replica_counts_on_the_other(pair: list[httpx.AsyncClient]) -> None:
    a, b = pair
    made = await a.put("/api/v1/playbooks/spray", headers=ADMIN_HEADERS,
                       json={**STUFFING, "name": "spray", "event": "sq.signup", "threshold": 2})
    assert made.status_code == 201
    sid = await login(b)
    for _ in range(100):  # the other replica hears of it through NOTIFY, within moments
        listed = (await b.get("/api/v1/playbooks", headers=ADMIN_HEADERS)).json()["playbooks"]
        if "spray" in {p["name"] for p in listed}:
            break
        await anyio.sleep(0.1)
    attempts = [failed_login(ip="198.51.100.77") for _ in range(2)]
    for attempt in attempts:
        attempt["name"] = "sq.signup"
    await send(b, sid, attempts)
    assert [f["actor"]["value"] for f in await firings(a, playbook="spray")] == ["198.51.100.77"]


async def test_attempts_split_across_replicas_fire_once_and_block_once(pair: list[httpx.AsyncClient]) -> None:
    a, b = pair
    sid_a, sid_b = await login(a), await login(b)
    version_a = await _version(a, sid_a)
    await send(a, sid_a, [failed_login(ip="203.0.113.50")])
    await send(b, sid_b, [failed_login(ip="203.0.113.50")])  # 2 of 3, each replica has seen only one
    assert await firings(a) == [] and await firings(b) == []
    answers: list[dict[str, Any]] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_poll, a, sid_a, version_a, answers)  # an agent of replica a waits
        await anyio.sleep(0.3)
        started = time.monotonic()
        # The third attempt, and more, through both replicas at once: the threshold is crossed once.
        async with anyio.create_task_group() as burst:
            for client, sid in [(b, sid_b), (a, sid_a)] * 3:
                burst.start_soon(send, client, sid, [failed_login(ip="203.0.113.50")])
    assert time.monotonic() - started < 5.0
    assert [x["value"] for x in answers[0]["actions"]] == ["203.0.113.50"]
    (firing,) = await firings(b)
    assert firing["count"] == 3 and len(set(firing["event_ids"])) == 3
    assert [x["value"] for x in await blocks(a)] == ["203.0.113.50"] == [x["value"] for x in await blocks(b)]
    assert len(await firings(a)) == 1  # the cooldown holds across replicas


async def test_a_batch_of_many_actors_fires_for_the_one_over_the_threshold(pair: list[httpx.AsyncClient]) -> None:
    a, b = pair
    sid_a, sid_b = await login(a), await login(b)
    crowd = [failed_login(ip=f"198.51.{n // 250}.{n % 250 + 1}") for n in range(300)]
    await send(a, sid_a, [*crowd[:150], failed_login(ip="203.0.113.60"), failed_login(ip="203.0.113.60")])
    await send(b, sid_b, [*crowd[150:], failed_login(ip="203.0.113.60")])
    assert [f["actor"]["value"] for f in await firings(a)] == ["203.0.113.60"]
