"""parse_batch's quick path for ordinary events gives the verdict and the record of the exact checks, on any input."""

from __future__ import annotations

import json
import time
from typing import Any
from unittest import mock

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sqreen_mw._native import speedups
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
    with mock.patch.object(_wire, "_quick_all", lambda events, *args: [None] * len(events)):
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


_compiled = pytest.mark.skipif(speedups is None, reason="the compiled speedups are not built (pure Python)")


@_compiled
@settings(max_examples=3000, deadline=None)
@given(st.lists(_events(), min_size=1, max_size=3), st.sampled_from([NOW, 1e300, -1e300, 0.0]))
def test_the_compiled_quick_path_gives_the_python_one_s_verdict_and_record(events: list[Any], now: float) -> None:
    # The decoded batch, as parse_batch hands it over; each event judged alone and within its batch.
    text = json.dumps(events)  # infinity included: the compiled code must judge what it is given, as Python does
    decoded = json.loads(text)
    compiled = speedups.quick_records(decoded, "a", now, _wire._QUICK_PARTS)
    assert len(compiled) == len(decoded)
    for event, record in zip(decoded, compiled, strict=True):
        python = _quick_record(event, "a", now)
        assert (record is None) == (python is None), (event, record, python)
        if record is not None:
            assert type(record) is type(python)
            assert _typed(list(record)) == _typed(list(python))
    assert json.loads(text) == decoded  # nothing changed in place


def _at_the_limits() -> list[Any]:
    """The ordinary event with one value at, or one past, each limit the quick path checks."""
    def with_(**changes: Any) -> Any:
        event = json.loads(json.dumps(_EVENT))
        for path, value in changes.items():
            *parents, last = path.split("__")
            target = event
            for parent in parents:
                target = target[parent]
            target[last] = value
        return event

    out = []
    for n in (4096, 4097):
        out += [with_(properties__s="x" * n), with_(user_identifiers__email="x" * n)]
    for n in (255, 256):
        out += [with_(name="a" * n), with_(request__client_ip="1" * n), with_(properties={"k" * n: 1}),
                with_(user_identifiers={"k" * n: "v"})]
    for n in (16, 17):
        many = {f"k{i}": i for i in range(n)}
        out += [with_(properties=many), with_(user_identifiers=many)]
    for i in (2**63 - 1, 2**63, -(2**63), -(2**63) - 1):
        out += [with_(properties__n=i), with_(user_identifiers__id=i)]
    out += [with_(name=""), with_(name="a\x00"), with_(name="é"), with_(user_identifiers={}),
            with_(user_identifiers__id=True), with_(user_identifiers__email="é"),
            with_(user_identifiers__email="a\x00"), with_(request__client_ip="é"),
            with_(request__client_ip="1\x00"), with_(request__client_ip=None), with_(request__user_agent=None),
            with_(request__user_agent=1), with_(request__path=None), with_(request__verb=1), with_(request__params=[]),
            with_(request__params={"a": 1.5}), with_(request__params={"a": [[[[1]]]]}), with_(request={}),
            with_(request=None), with_(request__extra=1), with_(body=1.5), with_(body=[1, {"a": None}]),
            with_(properties__f=1.5), with_(properties__f=float("inf")), with_(properties__f=float("nan")),
            with_(properties={"": 1}), with_(user_identifiers={"": "v"}), with_(properties__f=[1]),
            with_(properties=None), with_(properties=[]),
            with_(blocked=True), with_(blocked=1), with_(blocked=True, request=None), with_(id=_EVENT["id"].upper()),
            with_(id=_EVENT["id"][:-1] + "g"), with_(id=_EVENT["id"].replace("-", "_")),
            with_(id=" " + _EVENT["id"][1:]),
            with_(timestamp="2024-05-01T10:00:00.001000Zz"), with_(timestamp="9999-12-31T23:59:59.999999Z"),
            with_(timestamp="0001-01-01T00:00:00Z"), with_(timestamp="2024-05-02T11:00:00Z"),
            with_(timestamp="2024-05-02T09:59:59Z"), with_(timestamp="2024-05-01T10:00:00+00:00Z")]
    return out


@_compiled
def test_the_compiled_quick_path_agrees_at_every_limit() -> None:
    events = _at_the_limits()
    compiled = speedups.quick_records(events, "a", NOW, _wire._QUICK_PARTS)
    verdicts = []
    for event, record in zip(events, compiled, strict=True):
        python = _quick_record(event, "a", NOW)
        assert _typed(list(record) if record else None) == _typed(list(python) if python else None), event
        verdicts.append(record is not None)
    assert 20 < sum(verdicts) < len(verdicts) - 20  # both verdicts well represented


@_compiled
def test_the_compiled_quick_path_takes_ordinary_events_and_lowers_their_id() -> None:
    upper = {**_EVENT, "id": _EVENT["id"].upper(), "blocked": True}
    records = speedups.quick_records([json.loads(json.dumps(e)) for e in (_EVENT, upper)], "a", NOW, _wire._QUICK_PARTS)
    assert [r is not None for r in records] == [True, True]
    assert records[0] == _quick_record(json.loads(json.dumps(_EVENT)), "a", NOW)
    assert records[1].id == _EVENT["id"] and records[1].blocked and records[1].request["blocked"] is True
    assert records[0].users == ("user1@example.com", "7")
    with pytest.raises(TypeError, match="quick_records"):
        speedups.quick_records((_EVENT,), "a", NOW, _wire._QUICK_PARTS)


@_compiled
def test_parse_batch_gives_the_same_records_and_errors_compiled_or_not(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = {**_EVENT, "properties": {"n": 2**70}}  # quick path refuses, the exact checks word it
    batches = ([_EVENT, {**_EVENT, "id": _EVENT["id"].upper()}, {**_EVENT, "body": {"a": [1.5]}}], [_EVENT, odd])

    def outcomes() -> list[Any]:
        out: list[Any] = []
        for events in batches:
            raw = json.dumps({"events": events}).encode()
            try:
                out.append(_typed(parse_batch(raw, None, app="a", received_at=NOW, max_bytes=2**20, max_events=10)))
            except Rejected as exc:
                out.append(exc.payload)
        return out

    compiled = outcomes()
    # an app name that is not text (the ingest path always has one): the Python code's record, as without speedups
    assert parse_batch(json.dumps({"events": [_EVENT]}).encode(), None, app=None, received_at=NOW,  # type: ignore[arg-type]
                       max_bytes=2**20, max_events=10)[0].app is None
    monkeypatch.setattr(_wire, "speedups", None)
    python = outcomes()
    assert compiled == python
    assert isinstance(compiled[0], list) and len(compiled[0]) == 3
    assert compiled[1]["errors"][0]["field"] == "properties"


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
