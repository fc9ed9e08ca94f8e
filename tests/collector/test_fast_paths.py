"""The collector's fast paths give the answers of the slow, exact code they stand in front of, on any input."""

from __future__ import annotations

import ipaddress
import json
import math
import os
import tempfile
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqreen_mw._exceptions import InvalidEvent
from sqreen_mw.collector import _fastjson
from sqreen_mw.collector import _sqlite_rollups as rollups
from sqreen_mw.collector._records import EventRecord, ip_key
from sqreen_mw.collector._sqlite import SQLiteStorage, _event_ip_key
from sqreen_mw.collector._wire import MAX_DEPTH, _fine, _walk, check_tree

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
_trees = st.recursive(
    _scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3)
)


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def _walk_passes(value: Any) -> bool:
    try:
        _walk("body", value)
    except InvalidEvent:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(_trees, st.integers(min_value=MAX_DEPTH - 6, max_value=MAX_DEPTH + 1), st.booleans())
def test_tree_fast_check_agrees_with_the_walk(tree: Any, depth: int, wrap: bool) -> None:
    value = nested(depth, tree) if wrap else tree  # near the depth limit too, where an off-by-one would show
    assert _fine(value, 1) is _walk_passes(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [1, {"b": math.inf}]}, "body.a[1].b must be a finite number"),
        ({"a": nested(MAX_DEPTH - 1, 1)}, f"body must be nested at most {MAX_DEPTH} levels deep"),
    ],
)
def test_check_tree_still_names_the_offending_value(value: Any, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_tree("body", value)


def test_check_tree_passes_the_deepest_allowed_and_empty_containers_below_it() -> None:
    check_tree("body", {"a": nested(MAX_DEPTH - 2, 1)})
    check_tree("body", {"a": nested(MAX_DEPTH - 2, [])})  # an empty list at the limit holds nothing deeper


_v4_like = st.lists(
    st.sampled_from(["0", "1", "01", "00", "9", "25", "255", "256", "999", "1000", "", " 1", "1 ", "0x1", "\u0661"]),
    min_size=1,
    max_size=6,
).map(".".join)


@settings(max_examples=600, deadline=None)
@given(
    st.none()
    | st.text(max_size=20)
    | _v4_like
    | st.ip_addresses().map(str)
    | st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}")
    | st.ip_addresses(v=4).map(lambda a: f"{a}\n")
)
def test_event_ip_key_agrees_with_ip_key(text: str | None) -> None:
    assert _event_ip_key(text) == ip_key(text)


def test_event_ip_key_maps_ipv4_into_ipv6() -> None:
    assert _event_ip_key("203.0.113.7") == ipaddress.IPv6Address("::ffff:203.0.113.7").packed


def _outcome(loads: Any, raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", loads(raw)
    except (ValueError, RecursionError) as exc:
        return "error", str(exc)


def _same(a: Any, b: Any) -> bool:
    # Equal values of equal types all the way down (1 == 1.0 == True would hide an integer read as a float); a loop,
    # not recursion: a nasty document is 1,100 levels deep.
    pairs = [(a, b)]
    while pairs:
        x, y = pairs.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, dict):
            if list(x) != list(y):
                return False
            pairs.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            pairs.extend(zip(x, y, strict=True))
        elif x != y:
            return False
    return True


_json_trees = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=3), kids, max_size=3),
)  # what reaches storage: validated, finite
_nasty = st.sampled_from(
    [
        b"18446744073709551616", b"-9223372036854775809", b"9223372036854775808", b"12345678901234567890.5",
        b'"\\ud800"', b'{"a": "\\udfff x"}', b"\xef\xbb\xbf{}", '{"a": "\u00e9"}'.encode("utf-16"), b"NaN",
        b"[Infinity]", b"-Infinity", b"1e400", b"[1,]", b"{}x", b'"\xff"', b"[" * 1100 + b"]" * 1100,
        b'{"a":1,"a":2}', b"-0", b"-0.0", b'"\\u0000"', b" \t\n{}\r ", b"", b"0123", b"1.", b".5", b"1e5",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(_json_trees.map(lambda v: json.dumps(v).encode()) | _nasty)
def test_fast_loads_decodes_like_the_stdlib(raw: bytes) -> None:
    slow = _outcome(_fastjson.stdlib_loads, raw)
    for loads in (_fastjson.loads, lambda raw: _fastjson.loads_scanned(raw, raw.translate(_fastjson.SCAN))):
        fast = _outcome(loads, raw)
        assert fast[0] == slow[0]
        assert _same(fast[1], slow[1]) if fast[0] == "ok" else fast[1] == slow[1]  # the stdlib's words for bad JSON


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | _json_trees.map(lambda v: json.dumps(v).encode()))
def test_the_scan_counts_what_count_values_counts_first(raw: bytes) -> None:
    quick = raw.count(b"{") + raw.count(b"[") + raw.count(b",") + 1
    assert raw.translate(_fastjson.SCAN).count(b"{") + 1 == quick
    assert (b"0" * 19 in raw.translate(_fastjson.SCAN)) == (b"0" * 19 in raw.translate(_fastjson._DIGITS))


@settings(max_examples=400, deadline=None)
@given(_json_trees | st.sampled_from([{"s": "a\ud800b"}, [2**64, -(2**63) - 1], {"é": ["\u2028", "\x00"]}]))
def test_fast_dumps_reads_back_like_the_stdlib(value: Any) -> None:
    assert _same(json.loads(_fastjson.dumps(value)), json.loads(_fastjson.stdlib_dumps(value)))


def test_the_collector_extra_brings_orjson() -> None:
    # The figures of docs/performance.md are with orjson; without it every path above is the stdlib's.
    assert _fastjson.FAST


_identifiers = st.dictionaries(
    st.text(min_size=1, max_size=6) | st.sampled_from(["email", "id", "\x7f", "é"]),
    st.text(max_size=8)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from(["a\x7fb", "\u2603", "x\ud800"]),
    min_size=1,
    max_size=4,
)


@settings(max_examples=500, deadline=None)
@given(_identifiers)
def test_rollup_user_key_is_the_stdlib_text(identifiers: dict[str, Any]) -> None:
    # The rollups count a user under this text: the explorer looks users up by it, in databases of every version.
    assert rollups._orjson_user_key(identifiers) == rollups._stdlib_user_key(identifiers)
    assert json.loads(rollups._stdlib_user_key(identifiers)) == identifiers


def _reference_rollups(events: list[Any]) -> tuple[Any, Any]:
    # The rollups as documented in _sqlite_rollups, one event at a time.
    minute: Counter[tuple[int, str]] = Counter()
    hour: Counter[tuple[int, int, str]] = Counter()
    for e in events:
        m = int(e.ts // 60)
        minute[m, e.name] += 1
        hour[rollups.KIND_NAME, m // 60, e.name] += 1
        hour[rollups.KIND_APP, m // 60, e.app] += 1
        if e.client_ip is not None:
            hour[rollups.KIND_IP, m // 60, e.client_ip] += 1
        if e.user_identifiers:
            hour[rollups.KIND_USER, m // 60, rollups._stdlib_user_key(e.user_identifiers)] += 1
        if e.name == rollups.LOGIN_EVENT:
            outcome = "success" if e.properties.get("success") is True else "failure"
            hour[rollups.KIND_LOGIN, m // 60, outcome] += 1
    return sorted((*k, n) for k, n in minute.items()), sorted((*k, n) for k, n in hour.items())


_rollup_events = st.lists(
    st.builds(
        lambda ts, name, app, ip, users, success: EventRecord(
            str(uuid.uuid4()), name, ts, 0.0, app, ip, {"success": success}, users, None, None,
            tuple(str(v) for v in users.values()) if users else (),
        ),
        st.floats(min_value=-62135596800.0, max_value=2e9) | st.sampled_from([-0.5, 59.999999, 3599.9999999, 0.0]),
        st.sampled_from(["a", "b", rollups.LOGIN_EVENT]),
        st.sampled_from(["app", "shop"]),
        st.none() | st.sampled_from(["10.0.0.1", "::1", "x"]),
        st.none() | _identifiers.filter(lambda ids: all(f"{k}{v}".isascii() for k, v in ids.items())),  # storable
        st.none() | st.booleans() | st.just(1),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_rollup_events, max_size=3))
def test_rollups_count_what_a_plain_loop_counts(batches: list[list[EventRecord]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        storage = SQLiteStorage(os.path.join(directory, "r.db"))
        try:
            for batch in batches:
                storage.insert_events(batch)
            db = storage._db()
            minute = db.execute("SELECT minute, name, n FROM explorer_minute ORDER BY 1, 2").fetchall()
            hour = db.execute("SELECT kind, hour, value, n FROM explorer_hour ORDER BY 1, 2, 3").fetchall()
        finally:
            storage.close()
    assert (minute, hour) == _reference_rollups([e for batch in batches for e in batch])
