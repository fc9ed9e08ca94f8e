"""Hostile and malformed input: every refusal is a 4xx naming the field, never a 500, never part of a batch."""

from __future__ import annotations

import base64
import gzip
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from sqreen_mw._schema import format_timestamp
from sqreen_mw.collector import _fastjson, _ingest, create_app
from sqreen_mw.collector._records import UNREADABLE
from sqreen_mw.collector._wire import MAX_DEPTH, MAX_JSON_VALUES, count_values

from ._helpers import ADMIN_HEADERS, API_KEY, event, login, send, stored

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True, params=["orjson", "stdlib"])
def json_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every refusal holds with both JSON paths: orjson (when installed) and the stdlib fallback."""
    if request.param == "stdlib":
        monkeypatch.setattr(_fastjson, "loads", _fastjson.stdlib_loads)
        monkeypatch.setattr(_fastjson, "loads_scanned", lambda raw, scanned: _fastjson.stdlib_loads(raw))
        monkeypatch.setattr(_fastjson, "dumps", _fastjson.stdlib_dumps)
    elif not _fastjson.FAST:
        pytest.skip("orjson is not installed")


def nested(depth: int, leaf: Any = 1) -> Any:
    """A value ``depth`` levels deep: ``nested(1)`` is ``[1]``."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


async def heartbeat(client: httpx.AsyncClient, sid: str, content: bytes) -> httpx.Response:
    return await client.post(
        "/api/v1/agent/heartbeat", headers={"X-Session-Key": sid, "Content-Type": "application/json"}, content=content
    )


async def send_raw(client: httpx.AsyncClient, sid: str, text: str) -> httpx.Response:
    return await client.post(
        "/api/v1/agent/batch",
        headers={"X-Session-Key": sid, "Content-Encoding": "gzip"},
        content=gzip.compress(text.encode()),
    )


async def test_depth_limit_is_shared_by_body_request_and_stats(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    ok = event(body={"a": nested(MAX_DEPTH - 2)})  # the body object, "a", then the lists: MAX_DEPTH levels
    assert (await send(client, sid, [ok])).status_code == 200
    for field, bad in (
        ("body", event(body={"a": nested(MAX_DEPTH - 1)})),
        ("request", event(request={**event()["request"], "params": {"q": nested(MAX_DEPTH)}})),
    ):
        response = await send(client, sid, [event(), bad])
        assert response.status_code == 422, response.text
        [err] = response.json()["errors"]
        assert err["field"] == field and err["index"] == 1
        assert f"at most {MAX_DEPTH} levels" in err["message"]
    deep_stats = json.dumps({"stats": {"extra": nested(MAX_DEPTH)}}).encode()
    response = await heartbeat(client, sid, deep_stats)
    assert response.status_code == 400 and "stats" in response.json()["error"], response.text
    assert [e["id"] for e in await stored(client)] == [ok["id"]]  # nothing of the refused batches
    assert (await client.get("/api/v1/events", headers=ADMIN_HEADERS)).status_code == 200


@pytest.mark.parametrize(
    ("where", "field", "path"),
    [
        ("body", "body", "body.x[1]"),
        ("params", "request", "request.params.n"),
    ],
)
async def test_an_infinite_number_is_refused_by_name(
    client: httpx.AsyncClient, where: str, field: str, path: str
) -> None:
    sid = await login(client)
    sample = event()
    text = json.dumps({"events": [sample]})
    if where == "body":
        text = text.replace('"body": null', '"body": {"x": [1, 1e400]}')
    else:
        text = text.replace('"params": {"a": "1"}', '"params": {"n": -1e400}')
    response = await send_raw(client, sid, text)
    assert response.status_code == 422, response.text
    [err] = response.json()["errors"]
    assert err["field"] == field and path in err["message"] and "finite" in err["message"]
    assert await stored(client) == []


async def test_heartbeat_stats_must_be_finite_and_64_bit(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    for content, needle in (
        (b'{"stats": {"load": 1e400}}', "stats.load must be a finite number"),
        (b'{"stats": {"queued": 18446744073709551616}}', "stats.queued must fit in 64 bits"),
    ):
        response = await heartbeat(client, sid, content)
        assert response.status_code == 400 and needle in response.json()["error"], response.text
    assert (await client.get("/api/v1/agents", headers=ADMIN_HEADERS)).status_code == 200


async def test_login_pid_beyond_64_bits_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/agent/login", headers={"X-Api-Key": API_KEY}, json={"pid": 2**64})
    assert response.status_code == 400
    assert "'pid' must fit in 64 bits" in response.json()["error"]


async def test_future_timestamps_beyond_the_skew_allowance_are_refused(client: httpx.AsyncClient) -> None:
    sid = await login(client)
    soon = event(timestamp=format_timestamp(time.time() + 600))  # within MAX_FUTURE_SKEW: clocks differ
    response = await send(client, sid, [soon, event(timestamp="2100-01-01T00:00:00Z")])
    assert response.status_code == 422
    [err] = response.json()["errors"]
    assert (err["index"], err["field"]) == (1, "timestamp") and "3600 s ahead" in err["message"]
    assert (await send(client, sid, [soon])).status_code == 200


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"limit": "\u00b2"}, "limit must be an integer from 1 to 1000"),
        ({"limit": "9" * 5000}, "limit must be an integer from 1 to 1000"),
        ({"limit": "0"}, "limit must be an integer from 1 to 1000"),
        ({"nme": "x"}, "unknown query parameter 'nme': the known ones are name, app, user, ip"),
        ({"ip": "203.0.113.0/33"}, "ip must be an IP address or a network in CIDR form"),
        ({"app": ""}, "app must not be empty"),
        ({"name": "\x00"}, "name must not contain a NUL character"),
        ({"user": "a\x00b"}, "user must not contain a NUL character"),
        ({"app": "\x00"}, "app must not contain a NUL character"),
        ({"cursor": base64.urlsafe_b64encode(b"[" * 5000).decode()}, "cursor is not a cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"[1.0, 99999999999999999999999]").decode()}, "cursor is not"),
        ({"cursor": base64.urlsafe_b64encode(b"[1e400, 1]").decode()}, "cursor is not a cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"[1e300, 1]").decode()}, "cursor is not a cursor"),
    ],
)
async def test_bad_query_parameters_are_400_naming_them(
    client: httpx.AsyncClient, params: dict[str, str], needle: str
) -> None:
    response = await client.get("/api/v1/events", headers=ADMIN_HEADERS, params=params)
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]


async def test_app_and_cidr_filters(client: httpx.AsyncClient) -> None:
    from ._helpers import BOUND_KEY

    shop, other = await login(client, key=BOUND_KEY), await login(client, app_name="blog")
    ips = ["203.0.113.7", "203.0.113.250", "203.0.114.1", "2001:db8::1", "2001:db8:1::1", "not an ip"]
    events = [event(ip=ip) for ip in ips]
    assert (await send(client, shop, events[:3])).status_code == 200
    assert (await send(client, other, events[3:])).status_code == 200

    def ids(found: list[dict[str, Any]]) -> set[str]:
        return {e["id"] for e in found}

    assert ids(await stored(client, app="shop")) == ids(events[:3])
    assert ids(await stored(client, ip="203.0.113.0/24")) == ids(events[:2])
    assert ids(await stored(client, ip="2001:db8::/48")) == ids(events[3:4])
    assert ids(await stored(client, ip="2001:db8::/32", app="blog")) == ids(events[3:5])
    assert ids(await stored(client, ip="2001:DB8::1")) == ids(events[3:4])  # an address, however written
    assert ids(await stored(client, ip="not an ip")) == ids(events[5:])


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # SQLite's plan / rows written as SQLite stores them
def test_a_network_filter_is_a_range_scan_of_the_ip_index(app: Starlette) -> None:
    from sqreen_mw.collector._api import parse_query

    plan = app.state.storage.query_plan(parse_query({"ip": "203.0.113.0/24"}))
    assert any("events_ipkey_ts (ip_key>? AND ip_key<?)" in line for line in plan), plan


async def test_json_value_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    # 10 MiB of "{}," gzips to ~10 KB: it must cost neither memory nor a 500.
    app = create_app(db_path=str(tmp_path / "b.db"), api_keys={API_KEY: ""}, admin_token="a")
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
            sid = await login(client)
            bomb = '{"events": [' + "{}," * (10 * 2**20 // 3 - 10) + "{}]}"
            response = await send_raw(client, sid, bomb)
            assert response.status_code == 413, response.text
            assert f"more than {MAX_JSON_VALUES} JSON values" in response.json()["error"]
    finally:
        app.state.storage.close()


def test_value_count_skips_strings() -> None:
    assert count_values(b'["a,b,{c}[", 1]', 1) == 3  # the quick count is 7; the list and its 2 items
    assert count_values(b"[{}, {}, {}]", 100) <= 10


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # SQLite's plan / rows written as SQLite stores them
async def test_stored_rows_the_api_cannot_encode_do_not_break_pages(app: Starlette, client: httpx.AsyncClient) -> None:
    sid = await login(client)
    kept = event()
    assert (await send(client, sid, [kept, event()])).status_code == 200
    # As an older version stored them: a body far deeper than the limit, and one JSON cannot encode.
    db = app.state.storage._db()
    db.execute("UPDATE events SET body = ? WHERE id = ?", ("[" * 3000 + "]" * 3000, kept["id"]))
    db.execute("UPDATE events SET body = '[Infinity]' WHERE id != ?", (kept["id"],))
    db.execute("UPDATE sessions SET stats = ?", ("[" * 3000 + "]" * 3000,))
    events = await stored(client)
    assert [e["body"] for e in events] == [UNREADABLE, UNREADABLE]
    agents = await client.get("/api/v1/agents", headers=ADMIN_HEADERS)
    assert agents.status_code == 200 and agents.json()["agents"][0]["stats"] == UNREADABLE


async def test_a_locked_database_answers_503_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    app = create_app(db_path=str(path), api_keys={API_KEY: ""}, admin_token="admin-secret")
    app.state.storage._db().execute("PRAGMA busy_timeout=200")  # fail fast; the default waits 5 s
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c") as client:
            sid = await login(client)
            batch = [event() for _ in range(5)]
            blocker.execute("BEGIN EXCLUSIVE")
            response = await send(client, sid, batch)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"].isdigit()
            assert "retry later" in response.json()["error"]
            hb = await heartbeat(client, sid, b'{"stats": {}}')
            assert hb.status_code == 503
            blocker.execute("ROLLBACK")
            retried = await send(client, sid, batch)
            assert retried.json() == {"accepted": 5, "duplicates": 0}
            assert {e["id"] for e in await stored(client)} == {e["id"] for e in batch}
    finally:
        blocker.close()
        app.state.storage.close()


async def test_saturated_parsing_answers_503(app: Starlette, client: httpx.AsyncClient, monkeypatch: Any) -> None:
    monkeypatch.setattr(_ingest, "PARSE_SLOT_WAIT", 0.1)
    sid = await login(client)
    slots: threading.BoundedSemaphore = app.state.agents._parse_slots
    taken = 0
    while slots.acquire(blocking=False):
        taken += 1
    try:
        response = await send(client, sid, [event()])
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
    finally:
        for _ in range(taken):
            slots.release()
    assert taken == 2
    assert (await send(client, sid, [event()])).status_code == 200


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
_field_values = st.fixed_dictionaries(
    {},
    optional={
        "id": st.uuids().map(str) | _json,
        "name": st.sampled_from(["login", "sq.auth_track", ""]) | _json,
        "timestamp": st.sampled_from(["2024-05-01T00:00:00Z", "2100-01-01T00:00:00Z", "0001-01-01"]) | _json,
        "properties": _json,
        "user_identifiers": _json,
        "request": _json | st.just(event()["request"]),
        "body": _json,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(_field_values | _json, max_size=4), garbage=st.binary(max_size=20))
async def test_fuzzed_batches_never_500_and_never_store_part(
    app: Starlette, client: httpx.AsyncClient, events: list[Any], garbage: bytes
) -> None:
    sid = await login(client)
    before = len(await stored(client))
    for content in (
        json.dumps({"events": events}).encode(),
        json.dumps({"events": events}).encode()[: len(garbage)] + garbage,
    ):
        response = await client.post("/api/v1/agent/batch", headers={"X-Session-Key": sid}, content=content)
        assert response.status_code in (200, 400, 413, 422), response.text
        after = len(await stored(client))
        if response.status_code == 200:
            assert after - before == response.json()["accepted"]
        else:
            assert after == before
        before = after
    assert (await client.get("/api/v1/agents", headers=ADMIN_HEADERS)).status_code == 200


_query_values = st.text(max_size=30) | st.sampled_from(["0", "1000", "\u00b2", "1e3", "203.0.113.0/24", "::/0", "Z"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    login_body=st.dictionaries(st.sampled_from(["app_name", "hostname", "pid", "sdk_version", "runtime"]), _json),
    stats=_json,
    params=st.dictionaries(
        st.sampled_from(["name", "app", "user", "ip", "since", "until", "limit", "cursor", "x"]), _query_values
    ),
)
async def test_fuzzed_login_heartbeat_and_queries_never_500(
    client: httpx.AsyncClient, login_body: dict[str, Any], stats: Any, params: dict[str, str]
) -> None:
    response = await client.post("/api/v1/agent/login", headers={"X-Api-Key": API_KEY}, content=json.dumps(login_body))
    assert response.status_code in (200, 400), response.text
    sid = await login(client)
    beat = await heartbeat(client, sid, json.dumps({"stats": stats}).encode())
    assert beat.status_code in (200, 400), beat.text
    for path in ("/api/v1/events", "/api/v1/agents"):
        answer = await client.get(path, headers=ADMIN_HEADERS, params=params if path.endswith("events") else None)
        assert answer.status_code in (200, 400), answer.text
