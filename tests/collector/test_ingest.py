"""Agent endpoints of protocol v1, driven in-process through httpx.ASGITransport."""

from __future__ import annotations

import gzip
import json
import time
import uuid
import zlib
from typing import Any

import httpx
import pytest

from sqreen_mw._schema import parse_timestamp

from ._helpers import ADMIN_HEADERS, API_KEY, BOUND_KEY, event, login, send, stored

pytestmark = pytest.mark.anyio


async def test_healthz_needs_no_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# -- login --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "wrong"}, {"X-Api-Key": ""}, {"X-Api-Key": API_KEY + "x"}])
async def test_login_refuses_missing_or_wrong_key(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.post("/api/v1/agent/login", headers=headers, json={"app_name": "x"})
    assert response.status_code == 401
    assert "X-Api-Key" in response.json()["error"]


async def test_login_answers_a_session(client: httpx.AsyncClient) -> None:
    body = {"app_name": "blog", "hostname": "web-1", "pid": 1234, "sdk_version": "0.1.0", "runtime": "CPython 3.11"}
    response = await client.post("/api/v1/agent/login", headers={"X-Api-Key": API_KEY}, json=body)
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"protocol", "session_id", "app", "heartbeat_delay", "actions", "actions_version", "hot_events"}
    assert data["protocol"] == 1
    assert data["app"] == "blog"
    assert data["heartbeat_delay"] == 30
    assert data["actions"] == []
    assert len(data["session_id"]) >= 32
    assert set(data["session_id"]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

    agents = (await client.get("/api/v1/agents", headers=ADMIN_HEADERS)).json()["agents"]
    assert len(agents) == 1
    agent = agents[0]
    assert "session_id" not in agent and data["session_id"] not in str(agent)  # the credential stays secret
    assert len(agent["agent_id"]) == 16
    assert (agent["app"], agent["hostname"], agent["pid"], agent["sdk_version"]) == ("blog", "web-1", 1234, "0.1.0")
    assert agent["runtime"] == "CPython 3.11"
    assert abs(parse_timestamp(agent["started_at"]) - time.time()) < 60
    assert agent["last_heartbeat_at"] is None
    assert agent["logged_out_at"] is None
    assert agent["stats"] is None


async def test_login_app_name_rules(client: httpx.AsyncClient) -> None:
    async def app_of(key: str, body: Any) -> str:
        response = await client.post("/api/v1/agent/login", headers={"X-Api-Key": key}, json=body)
        assert response.status_code == 200, response.text
        name: str = response.json()["app"]
        return name

    assert await app_of(BOUND_KEY, {"app_name": "other"}) == "shop"  # the key's name wins
    assert await app_of(API_KEY, {"app_name": "blog"}) == "blog"
    assert await app_of(API_KEY, {"app_name": None}) == "default"
    assert await app_of(API_KEY, {}) == "default"  # missing fields are tolerated


async def test_login_with_empty_body_is_tolerated(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/agent/login", headers={"X-Api-Key": API_KEY})
    assert response.status_code == 200
    assert response.json()["app"] == "default"


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b'{"pid": "12"}', "'pid'")],
)
async def test_login_bad_body_is_400(client: httpx.AsyncClient, content: bytes, needle: str) -> None:
    response = await client.post("/api/v1/agent/login", headers={"X-Api-Key": API_KEY}, content=content)
    assert response.status_code == 400
    assert needle in response.json()["error"]


# -- heartbeat and logout -----------------------------------------------------------------------------------------


async def test_heartbeat_stores_stats(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    stats = {"queued": 3, "queued_bytes": 900, "tracked": 10, "sent": 7, "dropped": {"queue_full": 2}, "retries": 1}
    response = await client.post("/api/v1/agent/heartbeat", headers={"X-Session-Key": sid}, json={"stats": stats})
    assert response.status_code == 200
    assert response.json() == {"commands": []}  # no X-Actions-Version sent: no actions fields
    agent = (await client.get("/api/v1/agents", headers=ADMIN_HEADERS)).json()["agents"][0]
    assert agent["stats"] == stats
    assert agent["last_heartbeat_at"] is not None
    assert abs(parse_timestamp(agent["last_heartbeat_at"]) - time.time()) < 60


@pytest.mark.parametrize("stats", [[], {"queued": "3"}, {"sent": True}, {"dropped": {"full": "x"}}, {"dropped": 3}])
async def test_heartbeat_bad_stats_is_400(client: httpx.AsyncClient, stats: Any) -> None:
    sid = await login(client)
    response = await client.post("/api/v1/agent/heartbeat", headers={"X-Session-Key": sid}, json={"stats": stats})
    assert response.status_code == 400
    assert "stats" in response.json()["error"]


@pytest.mark.parametrize("headers", [{}, {"X-Session-Key": "not-a-session"}])
async def test_unknown_session_is_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for path in ("heartbeat", "batch", "logout"):
        response = await client.post(f"/api/v1/agent/{path}", headers=headers, json={"events": [], "stats": {}})
        assert response.status_code == 401, path
        assert "log in again" in response.json()["error"]


async def test_logout_ends_the_session(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    response = await client.post("/api/v1/agent/logout", headers={"X-Session-Key": sid})
    assert response.status_code == 200
    assert response.json() == {}
    assert (await send(client, sid, [event()])).status_code == 401
    heartbeat = await client.post("/api/v1/agent/heartbeat", headers={"X-Session-Key": sid}, json={"stats": {}})
    assert heartbeat.status_code == 401
    assert (await client.post("/api/v1/agent/logout", headers={"X-Session-Key": sid})).status_code == 401
    agent = (await client.get("/api/v1/agents", headers=ADMIN_HEADERS)).json()["agents"][0]
    assert agent["logged_out_at"] is not None
    # Logging in again gives a new, working session.
    again = await login(client)
    assert again != sid
    assert (await send(client, again, [event()])).json() == {"accepted": 1, "duplicates": 0}


# -- batch --------------------------------------------------------------------------------------------------------


async def test_batch_is_stored_with_session_app_and_received_at(client: httpx.AsyncClient) -> None:
    sid = await login(client, BOUND_KEY)
    sent = event("sq.auth_track", "2024-05-01T12:00:00.250+02:00", users={"email": "a@example.com", "id": 7})
    sent["body"] = {"password": "[REDACTED]", "list": [1, 2]}
    before = time.time()
    response = await send(client, sid, [sent])
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "duplicates": 0}
    [got] = await stored(client)
    assert got == {
        "id": sent["id"],
        "name": "sq.auth_track",
        "timestamp": "2024-05-01T10:00:00.250000Z",
        "received_at": got["received_at"],
        "app": "shop",
        "properties": {"reason": "bad password", "attempt": 2},
        "user_identifiers": {"email": "a@example.com", "id": 7},
        "request": sent["request"],
        "body": {"password": "[REDACTED]", "list": [1, 2]},
    }
    assert before - 1 <= parse_timestamp(got["received_at"]) <= time.time() + 1
    assert [e["id"] for e in await stored(client, ip="203.0.113.7")] == [sent["id"]]


async def test_plain_json_batch_is_accepted(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    response = await client.post("/api/v1/agent/batch", headers={"X-Session-Key": sid}, json={"events": [event()]})
    assert response.json() == {"accepted": 1, "duplicates": 0}


async def test_retries_are_deduplicated(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    first = [event() for _ in range(3)]
    assert (await send(client, sid, first)).json() == {"accepted": 3, "duplicates": 0}
    assert (await send(client, sid, first)).json() == {"accepted": 0, "duplicates": 3}
    fresh = event()
    assert (await send(client, sid, [first[0], fresh, fresh])).json() == {"accepted": 1, "duplicates": 2}
    ids = [e["id"] for e in await stored(client)]
    assert sorted(ids) == sorted([e["id"] for e in first] + [fresh["id"]])


async def test_uppercase_id_is_the_same_event(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    sent = event()
    assert (await send(client, sid, [sent])).json() == {"accepted": 1, "duplicates": 0}
    upper = dict(sent, id=sent["id"].upper())
    assert (await send(client, sid, [upper])).json() == {"accepted": 0, "duplicates": 1}


async def test_empty_batch(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    assert (await send(client, sid, [])).json() == {"accepted": 0, "duplicates": 0}


def _request(**changes: Any) -> dict[str, Any]:
    return {"client_ip": None, "user_agent": None, "path": "/", "verb": "GET", "params": {}, **changes}


def _invalid_cases() -> list[tuple[dict[str, Any], str, str]]:
    return [
        (event(id="not-a-uuid"), "id", "UUID"),
        (event(id="{" + str(uuid.uuid4()) + "}"), "id", "canonical"),
        (event(id=None), "id", "UUID"),
        (event(name=""), "name", "1 to 255"),
        (event(name="x" * 256), "name", "1 to 255"),
        (event(name=12), "name", "must be a str"),
        (event(name="bad\ud800name"), "name", "surrogate"),
        (event(name="login\x00failed"), "name", "NUL"),  # no text column of either store holds it alike
        (event(users={"email": "eve\x00@example.com"}), "user_identifiers", "NUL"),
        (event(ip="203.0.113.7\x00"), "request", "NUL"),
        (event(timestamp="yesterday"), "timestamp", "ISO 8601"),
        (event(timestamp=1714563600), "timestamp", "ISO 8601"),
        (event(properties={f"k{i}": i for i in range(17)}), "properties", "at most 16"),
        (event(properties={"k": [1]}), "properties", "must be a str, int, float, bool or None"),
        (event(properties=[]), "properties", "mapping"),
        (event(users={}), "user_identifiers", "at least one"),
        (event(users={"id": True}), "user_identifiers", "str or int"),
        (event(request={"client_ip": "1.2.3.4"}), "request", "missing"),
        (event(request=_request(client_ip=5)), "request", "request.client_ip must be a str or null"),
        (event(request=_request(client_ip="1" * 256)), "request", "request.client_ip must be at most 255"),
        (event(request=_request(user_agent=1)), "request", "request.user_agent must be a str or null"),
        (event(request=_request(path=None)), "request", "request.path must be a str"),
        (event(request=_request(verb=1)), "request", "request.verb must be a str"),
        (event(request=_request(params=[])), "request", "request.params must be an object"),
        (event(request="1.2.3.4"), "request", "object or null"),
    ]


@pytest.mark.parametrize(("bad", "field", "needle"), _invalid_cases())
async def test_invalid_event_rejects_the_whole_batch(
    client: httpx.AsyncClient, bad: dict[str, Any], field: str, needle: str
) -> None:
    sid = await login(client)
    response = await send(client, sid, [event(), bad, event()])
    assert response.status_code == 422
    data = response.json()
    assert data["error"] == "1 invalid event"
    [error] = data["errors"]
    assert error["index"] == 1
    assert error["field"] == field
    assert needle in error["message"]
    good_id = isinstance(bad["id"], str) and field != "id"
    assert error["id"] == (bad["id"] if good_id else None)
    assert await stored(client) == []  # all or nothing


async def test_422_counts_every_invalid_event(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    response = await send(client, sid, [event(name=""), "not an event", event(), event(timestamp="?")])
    assert response.status_code == 422
    data = response.json()
    assert data["error"] == "3 invalid events"
    assert [(e["index"], e["field"]) for e in data["errors"]] == [(0, "name"), (1, "event"), (3, "timestamp")]


async def test_lone_surrogates_in_body_round_trip(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    sent = event(body={"text": "caf\u00e9 \ud800"}, properties={"p": "\udfff"})
    assert (await send(client, sid, [sent])).json() == {"accepted": 1, "duplicates": 0}
    [got] = await stored(client)
    assert got["body"] == {"text": "caf\u00e9 \ud800"}
    assert got["properties"] == {"p": "\udfff"}


async def _post(client: httpx.AsyncClient, sid: str, content: bytes, encoding: str | None = "gzip") -> httpx.Response:
    headers = {"X-Session-Key": sid, **({"Content-Encoding": encoding} if encoding else {})}
    return await client.post("/api/v1/agent/batch", headers=headers, content=content)


@pytest.mark.parametrize(
    ("content", "encoding", "needle"),
    [
        (b"{nope", None, "not valid JSON"),
        (gzip.compress(b"{nope"), "gzip", "not valid JSON"),
        (b'{"events": [NaN]}', None, "not valid JSON"),
        (b"not gzip at all", "gzip", "not valid gzip"),
        (gzip.compress(b'{"events": []}')[:-12], "gzip", "truncated"),
        (gzip.compress(b'{"events": []}') + b"garbage", "gzip", "not valid gzip"),
        (b'{"events": {}}', None, '{"events": [...]}'),
        (b"[]", None, '{"events": [...]}'),
        (b"[" * 60_000, None, "not valid JSON"),  # RecursionError in the parser
    ],
)
async def test_malformed_body_is_400(
    client: httpx.AsyncClient, content: bytes, encoding: str | None, needle: str
) -> None:
    sid = await login(client)
    response = await _post(client, sid, content, encoding)
    assert response.status_code == 400
    assert needle in response.json()["error"]


async def test_concatenated_gzip_members_are_one_body(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    text = json.dumps({"events": [event()]}).encode()
    response = await _post(client, sid, gzip.compress(text[:10]) + gzip.compress(text[10:]))
    assert response.json() == {"accepted": 1, "duplicates": 0}


async def test_unknown_content_encoding_is_415(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    response = await _post(client, sid, b'{"events": []}', "br")
    assert response.status_code == 415


async def test_too_many_events_is_413(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    response = await send(client, sid, [event() for _ in range(51)])  # the fixture allows 50
    assert response.status_code == 413
    assert "51 events" in response.json()["error"]
    assert await stored(client) == []


async def test_body_too_large_is_413(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    big = json.dumps({"events": [event(body="x" * 70_000)]}).encode()  # the fixture allows 64 KiB
    response = await _post(client, sid, big, None)
    assert response.status_code == 413


async def test_zip_bomb_is_413_without_inflating_it(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    # 200 MB of spaces inside valid JSON, about 200 KB compressed: the collector must stop at its 64 KiB limit.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunks = [compressor.compress(b'{"events": [')]
    chunks += [compressor.compress(b" " * 1_000_000) for _ in range(200)]
    chunks.append(compressor.compress(b"]}") + compressor.flush())
    bomb = b"".join(chunks)
    assert len(bomb) < 64 * 1024 * 4
    started = time.perf_counter()
    response = await _post(client, sid, bomb[: 64 * 1024])  # the first 64 KiB alone inflate far past the limit
    assert response.status_code == 413
    assert "decompressed" in response.json()["error"]
    assert time.perf_counter() - started < 5
