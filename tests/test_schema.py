"""Validation rules of DESIGN §2: every broken rule raises InvalidEvent naming the argument, the rule and the value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqreen_mw import InvalidEvent
from sqreen_mw._schema import (
    MAX_FUTURE_SKEW,
    MAX_STRING_LENGTH,
    TRUNCATION_MARKER,
    check_name,
    check_properties,
    check_timestamp,
    check_user_identifiers,
    format_timestamp,
    parse_timestamp,
)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (None, "event_name must be a str, got NoneType"),
        (42, "event_name must be a str, got int 42"),
        (b"bytes", "event_name must be a str, got bytes"),
        ("", "event_name must be 1 to 255 characters long, got 0"),
        ("x" * 256, "event_name must be 1 to 255 characters long, got 256"),
        ("sq.auth_track", "must not start with 'sq.'"),
    ],
)
def test_bad_names_are_refused_with_the_rule(name: Any, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        check_name(name)


def test_invalid_event_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="event_name"):
        check_name("")


def test_names_at_the_limits_pass() -> None:
    assert check_name("x" * 255) == "x" * 255
    assert check_name("a") == "a"
    assert check_name("sq.action.block_ip", allow_reserved=True) == "sq.action.block_ip"


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ([("a", 1)], "properties must be a mapping, got list"),
        ({str(i): i for i in range(17)}, "properties may have at most 16 entries, got 17"),
        ({1: "x"}, "properties keys must be str, got int 1"),
        ({"": "x"}, "properties keys must be 1 to 255 characters long"),
        ({"a": [1, 2]}, "properties['a'] must be a str, int, float, bool or None, got list [1, 2]"),
        ({"a": {"b": 1}}, "properties['a'] must be a str, int, float, bool or None, got dict"),
        ({"a": float("nan")}, "properties['a'] must be a finite number"),
        ({"a": float("inf")}, "properties['a'] must be a finite number"),
        ({"a": b"x"}, "got bytes"),
        ({"big": 2**63}, "properties['big'] must fit in 64 bits"),
        ({"huge": 10**5000}, "properties['huge'] must fit in 64 bits"),
    ],
)
def test_bad_properties_are_refused(properties: Any, message: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        check_properties(properties)
    assert message in str(info.value)


def test_sixteen_properties_of_every_scalar_type_pass_and_are_copied() -> None:
    given_props: dict[str, Any] = {f"k{i}": v for i, v in enumerate(["s", 1, 1.5, True, None] * 3 + [0])}
    out, size = check_properties(given_props)
    assert out == given_props and out is not given_props
    assert size > 0


def test_long_strings_are_truncated_with_the_marker() -> None:
    # The documented limit: 4096 characters, the last ones being "...[truncated]".
    assert (MAX_STRING_LENGTH, TRUNCATION_MARKER) == (4096, "...[truncated]")
    out, _ = check_properties({"long": "y" * 4106, "exact": "z" * 4096})
    assert out["long"] == "y" * (4096 - 14) + "...[truncated]"
    assert out["exact"] == "z" * 4096


def test_scalar_subclasses_become_plain_scalars() -> None:
    class Name(str):
        pass

    class Count(int):
        pass

    out, _ = check_properties({"n": Name("x"), "c": Count(3)})
    assert type(out["n"]) is str and type(out["c"]) is int


@pytest.mark.parametrize(
    ("identifiers", "message"),
    [
        ("a@example.com", "user_identifiers must be a mapping, got str"),
        ({}, "at least one identifier"),
        ({"email": None}, "user_identifiers['email'] must be a str or int, got NoneType"),
        ({"admin": True}, "user_identifiers['admin'] must be a str or int, got bool"),
        ({"id": 1.5}, "must be a str or int, got float"),
        ({3: "x"}, "user_identifiers keys must be str"),
        ({"id": -(2**63) - 1}, "user_identifiers['id'] must fit in 64 bits"),
    ],
)
def test_bad_user_identifiers_are_refused(identifiers: Any, message: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        check_user_identifiers(identifiers)
    assert message in str(info.value)


def test_user_identifiers_accept_str_and_int() -> None:
    assert check_user_identifiers({"email": "a@example.com", "shop": 7}) == {"email": "a@example.com", "shop": 7}


def test_timestamps() -> None:
    naive = datetime(2018, 3, 15, 13, 42)
    assert check_timestamp(naive) == datetime(2018, 3, 15, 13, 42, tzinfo=UTC).timestamp()
    aware = datetime(2018, 3, 15, 14, 42, tzinfo=timezone(timedelta(hours=1)))
    assert check_timestamp(aware) == check_timestamp(naive)
    with pytest.raises(InvalidEvent, match="timestamp must be a datetime, got str"):
        check_timestamp("2018-03-15")
    assert format_timestamp(check_timestamp(naive)) == "2018-03-15T13:42:00.000000Z"
    assert format_timestamp(check_timestamp(datetime(999, 1, 1))) == "0999-01-01T00:00:00.000000Z"
    with pytest.raises(InvalidEvent, match="timestamp must be between years 1 and 9999 in UTC"):
        check_timestamp(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))))


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_timestamp_round_trip(moment: datetime) -> None:
    seconds = check_timestamp(moment, now=datetime(2200, 1, 1, tzinfo=UTC).timestamp())
    assert parse_timestamp(format_timestamp(seconds)) == pytest.approx(seconds, abs=1e-6)


SCALARS = st.one_of(st.text(), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none())


@given(st.dictionaries(st.text(min_size=1, max_size=20), SCALARS, max_size=16))
def test_valid_properties_always_pass_unchanged(props: dict[str, Any]) -> None:
    out, _ = check_properties(props)
    cut = {k: v[:4082] + "...[truncated]" if isinstance(v, str) and len(v) > 4096 else v for k, v in props.items()}
    assert out == cut


def test_timestamps_beyond_the_clock_skew_allowance_are_refused() -> None:
    now = datetime.now(UTC)
    assert check_timestamp(now + timedelta(seconds=MAX_FUTURE_SKEW - 60)) > now.timestamp()  # skew is fine
    with pytest.raises(InvalidEvent, match="timestamp must not be more than 3600 s in the future"):
        check_timestamp(datetime(2100, 1, 1))
    with pytest.raises(InvalidEvent, match="in the future"):
        check_timestamp(now + timedelta(seconds=MAX_FUTURE_SKEW + 60))


class _Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    def __str__(self) -> str:
        raise RuntimeError("str exploded")


@pytest.mark.parametrize(
    "call",
    [
        lambda: check_name(_Hostile()),
        lambda: check_properties({"k": _Hostile()}),
        lambda: check_properties(_Hostile()),
        lambda: check_properties({_Hostile(): 1}),
        lambda: check_properties({f"k{i}": i for i in range(17)} | {"x": _Hostile()}),
        lambda: check_user_identifiers({"id": _Hostile()}),
        lambda: check_user_identifiers(_Hostile()),
        lambda: check_timestamp(_Hostile()),
    ],
)
def test_objects_whose_repr_raises_give_invalid_event(call: Any) -> None:
    with pytest.raises(InvalidEvent, match=r"repr\(\) raised RuntimeError|at most"):
        call()


def test_lone_surrogates_in_names_are_refused_and_in_identifiers_repaired() -> None:
    with pytest.raises(InvalidEvent, match="event_name must be valid Unicode"):
        check_name("order\ud800")
    assert check_user_identifiers({"email": "a\udc00b", "k\ud800": 1}, repair=True) == {
        "email": "a\ufffdb", "k\ufffd": 1}
    assert check_user_identifiers({"email": "a\udc00b"}) == {"email": "a\udc00b"}  # the collector checks itself


def test_long_identifiers_raise_unless_truncation_is_asked() -> None:
    with pytest.raises(InvalidEvent, match="must be at most 4096 characters"):
        check_user_identifiers({"email": "x" * 5000})
    out = check_user_identifiers({"email": "x" * 5000}, truncate=True)
    assert len(out["email"]) == MAX_STRING_LENGTH and out["email"].endswith(TRUNCATION_MARKER)


def test_known_keys_still_get_every_value_check() -> None:
    from sqreen_mw._schema import MAX_STRING_LENGTH, TRUNCATION_MARKER, check_properties

    class Key(str):
        pass

    assert check_properties({"known": 1, "other": "x"}) == ({"known": 1, "other": "x"}, 1 + 105 + 105)
    # the same keys again (the fast path): every rule still applies
    for bad in (float("nan"), 2**63, object(), [1]):
        with pytest.raises(InvalidEvent):
            check_properties({"known": bad})
    with pytest.raises(InvalidEvent, match="keys must be"):  # a str subclass is refused as before
        check_properties({Key("known"): 1})
    cut, _ = check_properties({"known": "y" * (MAX_STRING_LENGTH + 5)})
    assert cut["known"].endswith(TRUNCATION_MARKER) and len(cut["known"]) == MAX_STRING_LENGTH
    props = {"known": True, "other": None}
    copy, _ = check_properties(props)
    assert copy == props and copy is not props


def test_nul_characters() -> None:
    with pytest.raises(InvalidEvent, match="event_name must not contain a NUL character"):
        check_name("login\x00failed")
    with pytest.raises(InvalidEvent, match=r"user_identifiers\['email'\] must not contain a NUL character"):
        check_user_identifiers({"email": "eve\x00@example.com"})
    # Request data (auth_track, signup_track, identify) is repaired, not refused: the event is still recorded.
    assert check_user_identifiers({"email": "eve\x00@example.com"}, repair=True) == {"email": "eve\ufffd@example.com"}


def test_nul_characters_at_the_call_site() -> None:
    import sqreen_mw
    from sqreen_mw.testing import capture_events

    with capture_events() as events:
        sqreen_mw.auth_track(False, email="eve\x00@example.com")  # an attacker's form field: recorded, repaired
        with pytest.raises(InvalidEvent, match="NUL"):
            sqreen_mw.track("login\x00failed")
        sqreen_mw.track("login.failed", user_identifiers={"email": "eve\x00@example.com"})  # repaired alike
    assert [(e["name"], e["user_identifiers"]) for e in events] == [
        ("sq.auth_track", {"email": "eve\ufffd@example.com"}), ("login.failed", {"email": "eve\ufffd@example.com"})]
