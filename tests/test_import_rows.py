"""The importer's row path: its fast paths give the bytes and ids of the exact, slower code they stand in front of."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqreen_mw._exceptions import InvalidEvent
from sqreen_mw._schema import REDACTED, check_user_identifiers
from sqreen_mw._scrub import Scrubber
from sqreen_mw.importer import _canonical, _events, _source
from sqreen_mw.importer._canonical import RowScrubber, stdlib_canonical
from sqreen_mw.importer._events import EventMaker, _timestamp, _wire_time, _wire_timestamp

NOW = 1.8e9  # 2027-01-15: every timestamp below is in the past
# Ids derived by the exact (stdlib) path: the canonical form they hash and their layout must never change, or a file
# imported again by a newer version would be stored twice.
PINNED: list[tuple[dict[str, Any], str]] = [
    ({"name": "login.failed", "timestamp": "2024-05-01T10:00:00Z"}, "018f3398-c100-8e44-9059-9fe76d461de8"),
    ({"name": "login.failed", "timestamp": "2024-05-01T10:00:00.5Z",
      "properties": {"ratio": 1e-05, "big": 1e16, "x": 0.1}}, "018f3398-c2f4-8d22-98a4-9262e876c41f"),
    ({"name": "caf\u00e9", "timestamp": "2024-05-01T12:00:00+02:00",
      "properties": {"city": "Z\u00fcrich", "ctl": "a\x7fb\x01"},
      "user_identifiers": {"email": "ann@example.com", "id": 2**62}}, "018f3398-c100-8f74-b151-330cb7aed6e8"),
    ({"name": "order", "timestamp": "1999-12-31T23:59:59.999999Z",
      "request": {"client_ip": "203.0.113.9", "user_agent": "curl/8.5", "path": "/pay", "verb": "POST",
                  "params": {"password": "x", "n": [1, 2.5e-7], "deep": {"token": "abc"}}},
      "body": {"card": "4111 1111 1111 1111", "q": [1, {"a": None}], "big": 2**70}},
     "00dc6acf-abff-8042-a44c-a894ea7f0ed7"),
    ({"name": "sq.auth_track", "timestamp": "2024-05-01T10:00:00.123Z",
      "properties": {"success": False, "note": "Bearer abcdefghijklmnop"},
      "request": {"client_ip": None, "path": "/login"}}, "018f3398-c17b-87a4-a102-aa525d4161e9"),
    ({"name": "x", "timestamp": "0001-01-01T00:00:00Z", "body": '{"password": "p"}'},
     "c77cedd3-2800-8d89-8a7b-52661bee86af"),
    ({"name": "x", "timestamp": "2026-06-01T00:00:00.000001Z", "body": [1.5, "\u2603"]},
     "019e807a-ec00-8434-9b18-0408836d5bab"),
]  # fmt: skip


@pytest.fixture(params=["orjson", "stdlib"])
def encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both encoders: orjson (when installed) and the stdlib alone."""
    if request.param == "orjson":
        if not _canonical.FAST:
            pytest.skip("orjson is not installed")
    else:
        monkeypatch.setattr(_events, "canonical", stdlib_canonical)
    return str(request.param)


@pytest.mark.parametrize(("row", "expected"), PINNED)
def test_derived_ids_are_pinned(encoder: str, row: dict[str, Any], expected: str) -> None:
    assert EventMaker(Scrubber(), "shop", clock=lambda: NOW).event(row)["id"] == expected


_AGENTS = ("Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0", "curl/8.5.0", "python-httpx/0.27")


def _typical_rows(n: int) -> Iterator[dict[str, Any]]:
    # Rows of the fast paths (flat properties, a request block, plain UTC times) with a few of the others.
    for i in range(n):
        moment = datetime(2024, 5, 1, 10, tzinfo=UTC) + timedelta(milliseconds=997 * i)
        head, frac = moment.strftime("%Y-%m-%dT%H:%M:%S"), moment.microsecond // 1000
        stamp = [f"{head}.{frac:03d}Z", f"{head}Z", f"{head}.{frac:03d}123Z", f"{head}.{frac // 100}+00:00"][i % 4]
        row: dict[str, Any] = {
            "name": ("login.failed", "order.placed", "search")[i % 3], "timestamp": stamp,
            "properties": {"attempt": i % 7, "reason": "bad password", "success": i % 3 == 0, "ratio": i / 8},
            "request": {"client_ip": f"203.0.{i % 200}.{i % 250}", "user_agent": _AGENTS[i % 3], "path": "/login",
                        "verb": "POST", "params": {"next": "/home", "password": "hunter2"}},
        }  # fmt: skip
        if i % 2:
            row["user_identifiers"] = {"email": f"user{i % 50}@example.com"}
        if i % 5 == 0:
            row["body"] = {"card": "4111 1111 1111 1111", "items": [i, "x"]}
        yield row


def test_typical_rows_make_pinned_bytes_and_ids() -> None:
    # Computed by the version that first imported such files: a re-import must give the same ids (and bytes).
    maker = EventMaker(Scrubber(), "default", clock=lambda: NOW)
    sent = [maker.make(row) for row in _typical_rows(2000)]
    assert [json.loads(item)["id"] for item in sent[:4]] == [
        "018f3398-c100-8b26-968a-87d0a2a6ab50", "018f3398-c100-8f8d-8cbe-068b30d1b525",
        "018f3398-c8ca-8ea1-b487-3059ef660573", "018f3398-cc54-87a0-bc7b-2ef53746d80d",
    ]  # fmt: skip
    assert hashlib.sha256(b"\n".join(sent)).hexdigest() == (
        "bfbff0d82cc1092661ec86c75e833edcedda6d660da596270936dd2e3f9993c4"
    )


def test_the_event_sent_is_the_canonical_json_hashed() -> None:
    maker = EventMaker(Scrubber(), "shop", clock=lambda: NOW)
    row, expected = PINNED[3]
    sent = maker.make(row)
    event = json.loads(sent)
    assert event["request"]["params"]["password"] == REDACTED
    assert event["body"]["card"] == REDACTED
    del event["id"]
    millis = 946684799999  # 1999-12-31T23:59:59.999Z
    assert _events.content_id(b'sqreen_mw import v2\n"shop"\n' + stdlib_canonical(event), millis) == expected
    assert int(expected.replace("-", "")[:12], 16) == millis


def test_a_file_in_time_order_gets_ids_in_order() -> None:
    # The collector's id index then grows at its end, as with the SDK's time-ordered ids.
    maker = EventMaker(Scrubber(), "shop", clock=lambda: NOW)
    start = datetime(2024, 5, 1, tzinfo=UTC)
    ids = [
        maker.event({"name": f"e{i % 3}", "timestamp": (start + timedelta(milliseconds=7 * i)).isoformat(),
                     "properties": {"i": i}})["id"]
        for i in range(300)
    ]  # fmt: skip
    assert ids == sorted(ids)
    assert len(set(ids)) == 300


_finite = st.floats(allow_nan=False, allow_infinity=False)
_scalars = st.none() | st.booleans() | st.integers() | _finite | st.text(max_size=8)
_json = st.recursive(
    _scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=4)
)
# Floats near orjson's spelling changes (1e-10 to 1e-4, 1e16), the card-number range, DEL and non-ASCII text.
_edgy = st.sampled_from([1e-4, 9.99e-5, 1e-5, 2.5e-7, 1e-9, 1e-10, 1.5e-11, 1e15, 1e16, 1.2345e17, -0.0, 5e-324,
                         2**63 - 1, 2**63, -(2**63), 2**64 + 1, 4111111111111111, "\x7f", "\x00\x1f", "e-5 0.0000",
                         "\u00e9", "\ud800", "\u2028"])  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.recursive(_scalars | _edgy, lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.text(max_size=4), kids, max_size=4)))  # fmt: skip
def test_canonical_json_is_the_stdlib_s_byte_for_byte(value: Any) -> None:
    assert _canonical.canonical(value) == stdlib_canonical(value)


def test_canonical_json_of_every_float_spelling() -> None:
    # Every power of ten a double holds, and values just around it: where orjson and repr() could spell differently.
    for exponent in range(-323, 309):
        for value in (10.0**exponent, 1.5 * 10.0**exponent, math.nextafter(10.0**exponent, 0.0)):
            assert _canonical.canonical([value, -value]) == stdlib_canonical([value, -value]), value


_keys = st.sampled_from(["q", "next", "password", "x-api-key", "authToken", "page", "user[pass]", "note"]) | st.text(
    max_size=6
)
_texts = st.sampled_from([
    "/home", "curl/8.5", "Bearer abcdefghijklmnop", "4111 1111 1111 1111", '{"password": "p"}', "[1, 2]",
    " {\"token\": \"t\"}", "a=1&password=hunter2", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "token=x",
    "x" * 600,
]) | st.text(max_size=12)  # fmt: skip
_numbers = st.integers() | st.sampled_from([4111111111111111, 10**12, 10**19]) | _finite
_values = _texts | _numbers | st.booleans() | st.none()
_flat = st.dictionaries(_keys, _values, max_size=6)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_keys, _values | _flat | st.lists(_values, max_size=2) | st.dictionaries(_keys, _flat),
                       max_size=6), st.booleans())  # fmt: skip
def test_row_scrubber_gives_the_scrubber_s_result(value: dict[str, Any], twice: bool) -> None:
    scrubber = Scrubber()
    rows = RowScrubber(scrubber)
    if twice:  # the second time from the remembered strings
        rows.scrub(value)
    assert rows.scrub(value)[0] == scrubber.scrub(value)


@pytest.mark.parametrize("levels", [18, 19, 20])
def test_row_scrubber_scrubs_json_text_at_its_depth(levels: int) -> None:
    # JSON inside a string is scrubbed as data, and its depth counts from where the string is: near the depth limit
    # the same text is scrubbed differently at the top and inside params, so such strings are never remembered.
    inner: Any = {"password": "hunter2", "n": 1}
    for _ in range(levels):
        inner = {"k": inner}
    text = json.dumps(inner)
    value = {"q": text, "params": {"q": text}}
    scrubber = Scrubber()
    assert RowScrubber(scrubber).scrub(value)[0] == scrubber.scrub(value)


def test_row_scrubber_honours_the_settings() -> None:
    value = {"password": "hunter2", "note": "Bearer abcdefghijklmnop", "tag": "keep me"}
    assert RowScrubber(Scrubber(enabled=False)).scrub(value)[0] == value
    custom = Scrubber(sensitive_keys=["tag"], sensitive_values=[r"keep"])
    assert RowScrubber(custom).scrub(value)[0] == custom.scrub(value) == {
        "password": REDACTED, "note": REDACTED, "tag": REDACTED,
    }  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    st.datetimes(min_value=datetime(1965, 1, 1), max_value=datetime(2105, 12, 31)),
    st.integers(min_value=0, max_value=6),
)
def test_plain_utc_timestamps_skip_the_float_round_trip_exactly(moment: datetime, digits: int) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond:06d}"[: digits + 1] if digits else "") + "Z"
    fast = _wire_timestamp(text)
    if 1970 <= moment.year <= 2099:
        assert fast is not None
    if fast is not None:
        assert fast == _timestamp(text, 1e12)
        assert _wire_time(text) == (fast, _events.wire_millis(fast))
    else:
        assert _wire_time(text) is None


@pytest.mark.parametrize(
    "text",
    ["2024-02-30T10:00:00Z", "2024-05-01T24:00:00Z", "2024-05-01T10:00:60Z", "2024-05-01T10:00:00.1234567Z",
     "2024-05-01T10:00:00", "2024-05-01 10:00:00Z", "1969-12-31T23:59:59Z", "2100-01-01T00:00:00Z",
     "2024-05-01T10:00:00.\u0661Z", "2024-05-01T1\u0661:00:00Z", "2024-05-01T10:00:00.5\u0661Z"],
)  # fmt: skip
def test_other_timestamps_take_the_exact_path(text: str) -> None:
    assert _wire_timestamp(text) is None
    assert _wire_time(text) is None
    assert _wire_time(text) is None  # remembered as such


def test_a_future_timestamp_in_the_plain_form_is_still_refused() -> None:
    soon = datetime.fromtimestamp(NOW, UTC) + timedelta(hours=2)
    with pytest.raises(InvalidEvent, match="must not be more than 3600 s in the future"):
        EventMaker(Scrubber(), "shop", clock=lambda: NOW).make(
            {"name": "x", "timestamp": soon.strftime("%Y-%m-%dT%H:%M:%SZ")}
        )


@pytest.mark.parametrize("where", ["request", "body"])
def test_nan_and_infinity_are_a_bad_row_not_a_crash(encoder: str, where: str) -> None:
    # CSV param.x:float accepts "nan"; a JSON body may hold 1e400.
    bad = {"params": {"x": math.nan}} if where == "request" else {"x": [math.inf]}
    with pytest.raises(InvalidEvent, match=f"{where} must hold finite numbers only"):
        EventMaker(Scrubber(), "shop", clock=lambda: NOW).make({"name": "x", "timestamp": "2024-05-01T10:00:00Z",
                                                                where: bad})  # fmt: skip


_lines = st.sampled_from([
    b'{"a": 1}', b'{"a": 1, "a": 2}', b'{"n": 12345678901234567890123}', b'{"n": 1e400}', b'{"n": NaN}',
    b'\xef\xbb\xbf{"a": 1}', b'{"s": "\\ud800"}', b'{"s": "\xff"}', b"[1]", b"", b"  ", b"{bad", b'{"f": -0.0}',
    b'{"f": 1.7976931348623157e308, "g": 5e-324}', b"[" * 1100 + b"]" * 1100,
]) | st.builds(lambda v: json.dumps(v).encode(), _json)  # fmt: skip


def _rows(lines: list[bytes], monkeypatch: pytest.MonkeyPatch, fast: bool) -> list[Any]:
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(_source, "orjson", None)
        source = _source.Source("t", "jsonl", None, iter(lines), None)  # type: ignore[arg-type]
        return list(source.rows())


@settings(max_examples=300, deadline=None)
@given(st.lists(_lines, max_size=4))
def test_json_lines_read_alike_with_orjson_and_the_stdlib(lines: list[bytes]) -> None:
    if not _canonical.FAST:
        pytest.skip("orjson is not installed")
    with pytest.MonkeyPatch.context() as patch:
        fast, slow = _rows(lines, patch, True), _rows(lines, patch, False)
    assert repr(fast) == repr(slow)  # repr: NaN != NaN, and -0.0 == 0.0 would hide a difference


_odd_identifiers = st.sampled_from(["a\x00", "x" * 4097, 2**63, -(2**63) - 1, 1.5, None])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=3) | st.integers(),
                       st.booleans() | st.integers() | st.text(max_size=4) | _odd_identifiers, max_size=17))
def test_user_identifiers_checked_as_check_user_identifiers_does(value: dict[Any, Any]) -> None:
    try:
        expected: Any = check_user_identifiers(value)
    except InvalidEvent as exc:
        expected = str(exc)
    try:
        got: Any = _events._users(value)
    except InvalidEvent as exc:
        got = str(exc)
    assert got == expected
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()] if isinstance(got, dict) else True


@pytest.mark.parametrize(
    "rest", ["Z", ".5Z", ".123456Z", ".Z", ".1234567Z", ".12a4Z", ".1", "Zx", "+00:00", ".5+00:00", "", ".-1Z"]
)
def test_a_time_whose_seconds_are_remembered_is_read_alike(rest: str) -> None:
    assert _wire_time("2024-05-01T10:20:30Z") is not None  # its first 19 characters are remembered
    text = "2024-05-01T10:20:30" + rest
    fast = _wire_timestamp(text)
    assert _wire_time(text) == (None if fast is None else (fast, _events.wire_millis(fast)))
