"""The collector status policy (unit level: httpx.MockTransport stands in for the network edge)."""

from __future__ import annotations

import email.utils
import gzip
import json
import time
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqreen_mw._transport import AUTH, DROP, OK, RETRY, SPLIT, Transport, _stdlib_batch, classify, encode_batch

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        (200, {}, OK, None),
        (202, {}, OK, None),
        (401, {}, AUTH, None),
        (408, {}, RETRY, None),
        (429, {"Retry-After": "7"}, RETRY, 7.0),
        (500, {}, RETRY, None),
        (503, {"Retry-After": "2.5"}, RETRY, 2.5),
        (413, {}, SPLIT, None),
        (400, {}, DROP, None),
        (422, {}, DROP, None),
        (404, {}, DROP, None),
    ],
)
def test_status_policy(status: int, headers: dict[str, str], kind: str, retry_after: float | None) -> None:
    outcome = classify(httpx.Response(status, headers=headers, json={"error": "why"}))
    assert outcome.kind == kind
    assert outcome.retry_after == retry_after
    if kind != OK:
        assert outcome.reason == f"HTTP {status}: why"


def test_retry_after_as_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    outcome = classify(httpx.Response(429, headers={"Retry-After": when}))
    assert outcome.retry_after is not None and 25 <= outcome.retry_after <= 31


async def test_batches_are_gzip_json_and_keys_stay_in_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/login"):
            return httpx.Response(200, json={"session_id": "s1", "actions": []})
        return httpx.Response(200, json={"accepted": 1, "duplicates": 0})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://collector")
    transport = Transport("http://collector", "secret-key", "app", 5.0, client=client)
    assert (await transport.login()).kind == OK
    events: list[Any] = [{"id": "x", "name": "e"}]
    assert (await transport.send_batch(encode_batch(events))).kind == OK
    await transport.aclose()
    login, batch = seen
    assert login.headers["X-Api-Key"] == "secret-key" and "secret-key" not in str(login.url)
    assert batch.headers["X-Session-Key"] == "s1" and batch.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(batch.content)) == {"events": events}


async def test_network_error_is_retryable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://collector")
    transport = Transport("http://collector", "k", None, 5.0, client=client)
    outcome = await transport.login()
    await transport.aclose()
    assert outcome.kind == RETRY and "ConnectError" in outcome.reason


_JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
_JSON = st.recursive(_JSON_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=20)


@settings(max_examples=200)
@given(st.lists(st.dictionaries(st.text(max_size=8), _JSON, max_size=5), max_size=3))
def test_encode_batch_decodes_as_the_standard_library_encoding(events: list[dict[str, Any]]) -> None:
    # orjson (when installed) or the standard library: the collector decodes the same batch
    assert json.loads(encode_batch(events)) == json.loads(_stdlib_batch(events))


def test_encode_batch_leaves_what_orjson_refuses_to_the_standard_library() -> None:
    assert json.loads(encode_batch([{"n": 2**70, 1: "int key"}])) == {"events": [{"n": 2**70, "1": "int key"}]}
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate: refused either way (the client repairs it first)
        encode_batch([{"s": "a\ud800"}])
