"""parse_batch's quick path for ordinary events gives the verdict and the record of the exact checks, on any input."""

from __future__ import annotations

import json
import time
from typing import Any
from unittest import mock

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sqreen_mw._schema import parse_timestamp
from sqreen_mw.collector import _wire
from sqreen_mw.collector._wire import Rejected, _quick_record, _quick_timestamp, parse_batch

NOW = 1_714_557_600.0 + 86_400
_EVENT: dict[str, Any] = {
    "id": "018f3398-c101-8523-9b6b-a2e7f87860fa",
    "name": "login.failed",
    "timestamp": "2024-05-01T10:00:00.001000Z",
    "properties": {"attempt": 1, "reason": "bad password", "success": False, "ratio": 0.5, "none": None},
    "user_identifiers": {"email": "user1@example.com", "id": 7},
    "request": {
        "client_ip": "203.0.1.1",
        "user_agent": "curl/8.5.0",
        "path": "/cart",
        "verb": "POST",
        "params": {"next": "/home", "n": [1, 2]},
    },
    "body": None,
}

_odd_text = st.sampled_from(
    ["", "x" * 256, "x" * 4097, "é", "a\x00b", "a\ud800", "\u0661", "Z", " ", "sq.auth_track", "A" * 255, "\x7f"]
)
_odd_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.sampled_from([1e308, 1e400, -1e400, 0.0, -0.0])
    | st.text(max_size=6)
    | _odd_text
)
_odd_value = st.recursive(
    _odd_scalar, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3) | _odd_text, kids)
)
_stamps = st.sampled_from(
    [
        "2024-05-01T10:00:00Z", "2024-05-01T10:00:00.5Z", "2024-05-01T10:00:00.123Z", "2024-05-01T10:00:00.1234567Z",
        "2024-05-01T10:00:00+00:00", "2024-05-01T10:00:00+02:00", "2024-05-01T10:00:00", "2024-05-01Z",
        "2024-05-01", "2024-05-01T10Z", "2024-05-01Z10:00:00Z", "2024-05-01T24:00:00Z", "2024-05-01T10:00:60Z",
        "2024-13-01T10:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "2030-01-01T00:00:00Z",
        "2024-05-01 10:00:00Z", "20240501T100000Z", "2024-W18-3T10Z", "2024-05-01T10:00:00z", "Z", "",
        "2024-05-01T10:00:00,5Z", "2024-05-01T10:00:00.000001Z", "1969-12-31T23:59:59.999999Z",
    ]
)  # fmt: skip
_fields = {
    "id": st.sampled_from(
        [
            "018F3398-C101-8523-9B6B-A2E7F87860FA",
            "018f3398c1018523-9b6b-a2e7f87860fa",
            "018f3398-c101-8523-9b6b-a2e7f87860f",
        ]
    )
    | _odd_scalar,
    "name": _odd_text | _odd_scalar,
    "timestamp": _stamps | _odd_scalar,
    "properties": st.dictionaries(st.text(max_size=3) | _odd_text, _odd_value, max_size=17) | _odd_scalar,
    "user_identifiers": st.dictionaries(st.text(max_size=3) | _odd_text, _odd_scalar, max_size=17) | _odd_value,
    "request": _odd_value,
    "client_ip": _odd_text | _odd_scalar | st.sampled_from(["::1", "1.2.3.4", "x" * 255]),
    "user_agent": _odd_scalar,
    "path": _odd_scalar,
    "params": _odd_value,
    "body": _odd_value,
    "blocked": _odd_scalar,
}
_REQUEST_FIELDS = ("client_ip", "user_agent", "path", "verb", "params")


@st.composite
def _events(draw: st.DrawFn) -> Any:
    """The ordinary event with some fields changed, dropped or added (also inside its request)."""
    event: Any = json.loads(json.dumps(_EVENT))
    for key in draw(st.lists(st.sampled_from(sorted(_fields)), max_size=3)):
        target = event["request"] if key in _REQUEST_FIELDS and isinstance(event.get("request"), dict) else event
        if draw(st.booleans()):
            target[key] = draw(_fields[key])
        else:
            target.pop(key, None)
    if draw(st.integers(0, 9)) == 0:
        event = draw(_odd_value)
    return event


def _exact(event: Any) -> Any:
    """What the exact checks make of a batch of this one event: the records, or the 422 payload."""
    raw = json.dumps({"events": [event]}).encode()
    with mock.patch.object(_wire, "_quick_record", lambda *args: None):
        try:
            return parse_batch(raw, None, app="a", received_at=NOW, max_bytes=2**20, max_events=10)
        except Rejected as exc:
            return exc.payload


def _typed(value: Any) -> Any:
    # Equal and of equal types all the way down (1 == 1.0 == True would hide a changed value).
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


@settings(max_examples=1500, deadline=None)
@given(_events())
def test_quick_path_accepts_only_what_the_checks_accept_with_the_same_record(event: Any) -> None:
    try:
        text = json.dumps(event, allow_nan=False)
    except ValueError:  # infinity: not JSON, so never decoded (decode_json refuses the body)
        assume(False)
    decoded = json.loads(text)  # what decode_json hands over: JSON values only
    quick = _quick_record(decoded, "a", NOW)
    if quick is not None:
        exact = _exact(event)
        assert isinstance(exact, list), exact
        assert _typed(list(quick)) == _typed(list(exact[0]))


def test_ordinary_events_take_the_quick_path_and_others_keep_their_messages() -> None:
    assert _quick_record(json.loads(json.dumps(_EVENT)), "a", NOW) is not None
    bad = {**_EVENT, "timestamp": "2024-05-01T10:00:60Z"}
    assert _quick_record(bad, "a", NOW) is None
    raw = json.dumps({"events": [_EVENT, bad]}).encode()
    try:
        parse_batch(raw, None, app="a", received_at=NOW, max_bytes=2**20, max_events=10)
    except Rejected as exc:
        assert exc.payload["errors"] == [
            {"index": 1, "id": _EVENT["id"], "field": "timestamp",
             "message": "timestamp must be ISO 8601, got '2024-05-01T10:00:60Z'"},
        ]  # fmt: skip
    else:
        raise AssertionError("the batch was accepted")


@settings(max_examples=1500, deadline=None)
@given(_stamps | st.text(max_size=30) | st.datetimes().map(lambda d: d.isoformat() + "Z"))
def test_quick_timestamp_is_parse_timestamp(stamp: str) -> None:
    quick = _quick_timestamp(stamp)
    if quick is not None:
        assert quick == parse_timestamp(stamp)
        assert type(quick) is float


def test_quick_timestamp_reads_the_usual_spelling() -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW)) + ".001000Z"
    assert _quick_timestamp(stamp) == NOW + 0.001
