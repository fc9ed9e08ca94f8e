"""The collector's fast paths give the answers of the slow, exact code they stand in front of, on any input."""

from __future__ import annotations

import ipaddress
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqreen_mw._exceptions import InvalidEvent
from sqreen_mw.collector._records import ip_key
from sqreen_mw.collector._sqlite import _event_ip_key
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
