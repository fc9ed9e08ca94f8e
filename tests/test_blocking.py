"""The blocks snapshot: IP and user lookups, expiry, exemptions, bad entries; the enforcement report limiter."""

from __future__ import annotations

import ipaddress
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqreen_mw import _blocking
from sqreen_mw._blocking import EMPTY, Actions, Block, address_key, build_actions, user_key
from sqreen_mw._enforce import ReportLimiter, enforcement_event

NOW = 1_800_000_000.0  # a fixed "now" (2027): expiry is checked against the time given to the lookup
PAST = "2020-01-01T00:00:00Z"
FUTURE = "2100-01-01T00:00:00.000000Z"


def ip(id_: str, value: str, expires_at: str | None = None) -> dict[str, Any]:
    return {"id": id_, "action": "block_ip", "value": value, "expires_at": expires_at}


def user(id_: str, value: dict[str, Any], expires_at: str | None = None) -> dict[str, Any]:
    return {"id": id_, "action": "block_user", "value": value, "expires_at": expires_at}


TABLE = build_actions(
    [
        ip("net24", "203.0.113.0/24"),
        ip("one", "198.51.100.7"),
        ip("host-bits", "192.0.2.77/16"),  # host bits ignored: 192.0.0.0/16
        ip("v6-64", "2001:db8:1:2::/64", FUTURE),
        ip("v6-128", "2001:db8::42"),
        ip("mapped", "::ffff:100.64.0.0/112"),  # IPv4-mapped: the IPv4 network 100.64.0.0/16
        ip("expired", "8.8.8.0/24", PAST),
        ip("everyone", "0.0.0.0/0", FUTURE),  # covers loopback and the trusted proxies: they stay exempt
        ip("inner-expired", "203.0.113.128/25", PAST),  # nested in net24 (permanent): net24 still applies
    ],
    7,
    ["sq.auth_track", "card.declined", 3],
    never_blocked=["10.0.0.0/8", "fd00::/8"],
)


@pytest.mark.parametrize(
    ("address", "block_id"),
    [
        ("203.0.113.1", "net24"),
        ("203.0.113.255", "net24"),
        ("203.0.113.200", "net24"),  # inner block expired, the outer one still holds
        ("203.0.112.255", "everyone"),
        ("198.51.100.7", "one"),
        ("198.51.100.8", "everyone"),
        ("192.0.0.1", "host-bits"),
        ("192.0.255.255", "host-bits"),
        ("192.1.0.0", "everyone"),
        ("100.64.3.4", "mapped"),
        ("::ffff:203.0.113.9", "net24"),  # mapped spelling of an IPv4 address
        ("2001:db8:1:2::1", "v6-64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "v6-64"),
        ("2001:db8:1:3::", None),
        ("2001:db8::42", "v6-128"),
        ("2001:db8::43", None),
        ("8.8.8.8", "everyone"),  # expired /24 inside a live /0
        ("255.255.255.255", "everyone"),
        # never blocked: loopback, unspecified, trusted proxies
        ("127.0.0.1", None),
        ("127.200.0.1", None),
        ("0.0.0.0", None),
        ("::1", None),
        ("::", None),
        ("::ffff:127.0.0.1", None),
        ("10.1.2.3", None),
        ("fd12::1", None),
        ("11.0.0.0", "everyone"),
        ("9.255.255.255", "everyone"),
        # not addresses
        (None, None),
        ("", None),
        ("garbage", None),
        ("1.2.3", None),
        ("fe80::1%eth0", None),
    ],
)
def test_ip_lookup_table(address: str | None, block_id: str | None) -> None:
    found = TABLE.ip_block(address, NOW)
    assert (found.id if found else None) == block_id
    assert TABLE.ip_block(address, NOW) is found  # cached parse, same answer


def test_snapshot_attributes() -> None:
    assert TABLE.version == 7
    assert TABLE.hot_events == frozenset({"sq.auth_track", "card.declined"})
    assert TABLE.has_ip_blocks and not TABLE.has_user_blocks
    assert TABLE.invalid == 0
    assert {b.id for b in TABLE.blocks} >= {"net24", "one", "everyone"}
    assert next(b for b in TABLE.blocks if b.id == "host-bits").value == "192.0.0.0/16"
    assert next(b for b in TABLE.blocks if b.id == "mapped").value == "100.64.0.0/16"
    assert EMPTY.version == -1 and not EMPTY.has_ip_blocks and not EMPTY.has_user_blocks
    assert EMPTY.ip_block("203.0.113.1", NOW) is None and EMPTY.user_block({"id": 1}, NOW) is None


def test_expiry_is_enforced_at_lookup_time() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC).timestamp()
    actions = build_actions([ip("soon", "203.0.113.0/24", "2030-01-01T00:00:00Z"),
                             user("u", {"email": "eve@example.com"}, "2030-01-01T00:00:00")])  # naive = UTC
    assert actions.ip_block("203.0.113.5", at - 0.001) is not None
    assert actions.ip_block("203.0.113.5", at) is None
    assert actions.user_block({"email": "eve@example.com"}, at - 0.001) is not None
    assert actions.user_block({"email": "eve@example.com"}, at) is None


def test_overlapping_blocks_the_latest_expiry_wins() -> None:
    actions = build_actions([
        ip("short", "203.0.113.0/24", "2030-01-01T00:00:00Z"),
        ip("long", "203.0.113.0/24", "2031-01-01T00:00:00Z"),
        ip("host", "203.0.113.9", "2029-01-01T00:00:00Z"),
    ])
    t2029 = datetime(2029, 6, 1, tzinfo=UTC).timestamp()
    t2030 = datetime(2030, 6, 1, tzinfo=UTC).timestamp()
    t2031 = datetime(2031, 6, 1, tzinfo=UTC).timestamp()
    assert (b := actions.ip_block("203.0.113.9", t2029)) is not None and b.id == "long"
    assert (b := actions.ip_block("203.0.113.9", t2030)) is not None and b.id == "long"
    assert actions.ip_block("203.0.113.9", t2031) is None


@pytest.mark.parametrize(
    ("identifiers", "block_id"),
    [
        ({"email": "eve@example.com"}, "eve"),
        ({"id": 42}, "int"),
        ({"id": "42"}, "int"),  # an integer and its decimal text are one identifier
        ({"id": 7}, "text"),
        ({"id": "7"}, "text"),
        ({"email": "eve@example.com", "id": 1}, "both"),
        ({"id": 1, "email": "eve@example.com"}, "both"),
        ({"email": "EVE@example.com"}, None),  # exact values
        ({"email": "eve@example.com", "name": "Eve"}, None),  # same keys, no more
        ({"id": 1}, None),
        ({"id": "042"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_user_lookup_table(identifiers: dict[str, Any] | None, block_id: str | None) -> None:
    actions = build_actions([
        user("eve", {"email": "eve@example.com"}),
        user("int", {"id": 42}),
        user("text", {"id": "7"}),
        user("both", {"email": "eve@example.com", "id": "1"}),
        user("gone", {"id": 1}, PAST),
    ])
    found = actions.user_block(identifiers, NOW)
    assert (found.id if found else None) == block_id
    assert actions.has_user_blocks and not actions.has_ip_blocks


def test_user_blocks_same_identifiers_latest_expiry_wins() -> None:
    actions = build_actions([user("a", {"id": 1}, PAST), user("b", {"id": "1"}, FUTURE), user("c", {"id": 1}, PAST)])
    assert (b := actions.user_block({"id": 1}, NOW)) is not None and b.id == "b"
    permanent = build_actions([user("a", {"id": 1}, FUTURE), user("b", {"id": 1})])
    assert (b := permanent.user_block({"id": 1}, NOW)) is not None and b.id == "b"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (3, "an action must be an object, got int"),
        ("block_ip", "an action must be an object, got str"),
        ({"action": "block_ip", "value": "203.0.113.1"}, "needs a non-empty string id, got None"),
        ({"id": "", "action": "block_ip", "value": "203.0.113.1"}, "needs a non-empty string id"),
        ({"id": 5, "action": "block_user", "value": {"id": 1}}, "needs a non-empty string id, got 5"),
        (ip("x", "not-an-ip"), "block_ip x: value must be an IP address or CIDR, got 'not-an-ip'"),
        (ip("x", "10.0.0.0/33"), "value must be an IP address or CIDR"),
        ({"id": "x", "action": "block_ip", "value": None}, "value must be an IP address or CIDR, got None"),
        ({"id": "x", "action": "block_ip", "value": ["1.2.3.4"]}, "value must be an IP address or CIDR"),
        (ip("x", "203.0.113.1", "tomorrow"), "Invalid isoformat string: 'tomorrow'"),
        (ip("x", "203.0.113.1", 1700000000), "expires_at must be an ISO 8601 string or null, got int"),
        (user("u", {}), "block_user u: value must be a non-empty map"),
        (user("u", {"id": 1.5}), "value must be a non-empty map of str to str or int"),
        (user("u", {"admin": True}), "value must be a non-empty map of str to str or int"),
        ({"id": "u", "action": "block_user", "value": "eve"}, "value must be a non-empty map"),
    ],
)
def test_bad_entries_are_skipped_and_logged_once(caplog: pytest.LogCaptureFixture, entry: Any, problem: str) -> None:
    actions = build_actions([ip("good", "203.0.113.0/24"), entry, entry], 9)
    assert actions.invalid == 2
    assert (b := actions.ip_block("203.0.113.1", NOW)) is not None and b.id == "good"
    warnings = [r for r in caplog.records if r.name == "sqreen_mw"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    message = warnings[0].getMessage()
    assert "skipped 2 unusable action(s) of version 9" in message and problem in message
    assert "actions[1]" in message and "actions[2]" in message


def test_unknown_kinds_are_ignored_silently(caplog: pytest.LogCaptureFixture) -> None:
    actions = build_actions([{"id": "r", "action": "redirect", "value": "https://example.com"},
                             {"action": "tarpit"}, ip("good", "203.0.113.0/24")])
    assert actions.invalid == 0 and len(actions.blocks) == 1
    assert not [r for r in caplog.records if r.name == "sqreen_mw"]


@pytest.mark.parametrize("payload", [None, {"actions": []}, "[]", 7])
def test_a_list_that_is_not_a_list_is_empty(caplog: pytest.LogCaptureFixture, payload: Any) -> None:
    actions = build_actions(payload, 1, "not-a-list")
    assert not actions.blocks and not actions.hot_events
    assert actions.invalid == (0 if payload is None else 1)


def test_already_expired_blocks_are_left_out_when_now_is_given() -> None:
    actions = build_actions([ip("old", "203.0.113.0/24", PAST), ip("new", "198.51.100.0/24")], now=NOW)
    assert [b.id for b in actions.blocks] == ["new"]


def test_never_blocked_without_any_ip_block_costs_nothing() -> None:
    actions = build_actions([user("u", {"id": 1})], never_blocked=["10.0.0.0/8"])
    assert not actions.has_ip_blocks and actions._starts == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0", 0),
        ("255.255.255.255", 2**32 - 1),
        ("203.0.113.7", int(ipaddress.ip_address("203.0.113.7"))),
        ("::", 2**32),
        ("::1", 2**32 + 1),
        ("::ffff:1.2.3.4", int(ipaddress.ip_address("1.2.3.4"))),
        ("2001:db8::1", 2**32 + int(ipaddress.ip_address("2001:db8::1"))),
        ("1.2.3", -1),
        ("01.2.3.4", -1),
        ("1.2.3.4:80", -1),
        ("", -1),
        ("x" * 300, -1),
    ],
)
def test_address_key(text: str, expected: int) -> None:
    assert address_key(text) == expected


def test_answer_cache_is_bounded() -> None:
    actions = build_actions([ip("b", "11.0.0.0/8")])
    for i in range(20_000):
        assert actions.ip_block(f"11.{i // 65536}.{i // 256 % 256}.{i % 256}", NOW) is not None
        assert actions.ip_block(f"12.{i // 65536}.{i // 256 % 256}.{i % 256}", NOW) is None
    assert 0 < len(actions._found) <= 8192


def test_now_defaults_to_the_clock() -> None:
    actions = build_actions([ip("past", "203.0.113.0/24", PAST), ip("future", "198.51.100.0/24", FUTURE)])
    assert actions.ip_block("203.0.113.1") is None
    assert (b := actions.ip_block("198.51.100.1")) is not None and b.id == "future"


# --- property test against a brute-force oracle ------------------------------------------------------------------

_v4_net = st.builds(lambda a, p: ipaddress.ip_network(f"{a}/{p}", strict=False),
                    st.ip_addresses(v=4), st.integers(0, 32))
_v6_net = st.builds(lambda a, p: ipaddress.ip_network(f"{a}/{p}", strict=False),
                    st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None), st.integers(0, 128))
_expiry = st.one_of(st.none(), st.integers(-5, 5).map(lambda d: NOW + d))
_entries = st.lists(st.tuples(st.one_of(_v4_net, _v6_net), _expiry), max_size=12)
_exempt = st.lists(st.one_of(_v4_net, _v6_net), max_size=3)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _near(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    # the edges of a network and their neighbours: where an off-by-one would show
    top = 2**32 - 1 if net.version == 4 else 2**128 - 1
    cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
    ints = {int(net.network_address), int(net.broadcast_address)}
    ints |= {i - 1 for i in ints if i > 0} | {i + 1 for i in ints if i < top}
    return [str(cls(i)) for i in ints]


@given(entries=_entries, exempt=_exempt, probes=st.lists(st.ip_addresses(), max_size=8), now_delta=st.integers(-6, 6))
def test_ip_lookup_matches_a_brute_force_oracle(
    entries: list[tuple[Any, float | None]], exempt: list[Any], probes: list[Any], now_delta: int
) -> None:
    now = NOW + now_delta
    actions = build_actions([ip(f"b{i}", str(net), _iso(exp)) for i, (net, exp) in enumerate(entries)],
                            never_blocked=[str(n) for n in exempt])
    never = [ipaddress.ip_network(n) for n in _blocking.NEVER_BLOCKED] + exempt
    addresses = {str(p) for p in probes}
    for net, _ in entries:
        addresses.update(_near(net))
    for net in exempt:
        addresses.update(_near(net))
    for text in addresses:
        addr = ipaddress.ip_address(text)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        live = [(i, exp) for i, (net, exp) in enumerate(entries)
                if net.version == addr.version and addr in net and (exp is None or now < exp)]
        exempted = any(n.version == addr.version and addr in n for n in never)
        found = actions.ip_block(text, now)
        if exempted or not live:
            assert found is None, (text, found)
        else:
            assert found is not None, text
            # the block reported is a live one that covers the address and expires last
            best = max((float("inf") if exp is None else exp) for _, exp in live)
            assert int(found.id[1:]) in {i for i, _ in live}
            assert (float("inf") if found.expires_at is None else found.expires_at) == best


@given(blocks=st.lists(st.dictionaries(st.sampled_from(["id", "email", "name"]),
                                       st.one_of(st.integers(0, 3), st.sampled_from(["0", "1", "a"])),
                                       min_size=1), max_size=6),
       probe=st.dictionaries(st.sampled_from(["id", "email", "name"]),
                             st.one_of(st.integers(0, 3), st.sampled_from(["0", "1", "a"]))))
def test_user_lookup_matches_a_brute_force_oracle(blocks: list[dict[str, Any]], probe: dict[str, Any]) -> None:
    actions = build_actions([user(f"u{i}", b) for i, b in enumerate(blocks)])
    as_text = {k: str(v) for k, v in probe.items()}
    matches = [i for i, b in enumerate(blocks) if {k: str(v) for k, v in b.items()} == as_text]
    found = actions.user_block(probe, NOW)
    assert (found is not None) == bool(matches and probe)
    if found is not None:
        assert int(found.id[1:]) in matches


@given(net=st.one_of(_v4_net, _v6_net))
def test_fast_cidr_parse_agrees_with_ipaddress(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
    offset = 0 if net.version == 4 else 2**32
    expected = (int(net.network_address) + offset, int(net.broadcast_address) + offset, str(net))
    assert _blocking._range(str(net)) == expected
    single = (expected[0], expected[0], f"{net.network_address}/{net.max_prefixlen}")
    assert _blocking._range(str(net.network_address)) == single
    assert _blocking._range(f"{net.broadcast_address}/{net.prefixlen}") == expected  # host bits ignored


def test_user_key() -> None:
    assert user_key({"id": 1, "email": "a"}) == user_key({"email": "a", "id": "1"})
    assert user_key({"id": 1}) != user_key({"id": "01"})


def test_snapshot_is_read_only() -> None:
    with pytest.raises(AttributeError):
        TABLE.extra = 1  # type: ignore[attr-defined]
    block = TABLE.blocks[0]
    with pytest.raises(AttributeError):
        block.id = "other"  # type: ignore[misc]
    assert isinstance(TABLE, Actions) and isinstance(block, Block)


def test_a_big_list_builds_and_looks_up() -> None:
    entries = [ip(f"n{i}", f"{10 + i // 65536}.{i // 256 % 256}.{i % 256}.0/24") for i in range(10_000)]
    entries.append(ip("v6", "2001:db8::/32"))
    actions = build_actions(entries)
    assert len(actions.blocks) == 10_001
    assert (b := actions.ip_block("11.0.0.1", NOW)) is None or b.id  # 10/8 is not exempt by default
    assert (b := actions.ip_block("10.0.5.9", NOW)) is not None and b.id == "n5"
    assert (b := actions.ip_block("2001:db8:ffff::1", NOW)) is not None and b.id == "v6"
    assert len(actions._starts) <= 2 * len(entries) + 1


# --- enforcement events ------------------------------------------------------------------------------------------


def test_enforcement_event() -> None:
    block = Block("b_1", "ip", "203.0.113.0/24", None)
    assert enforcement_event(block, "203.0.113.7") == (
        "sq.action.block_ip", {"block_id": "b_1", "actor": "203.0.113.7"})
    ublock = Block("b_2", "user", {"email": "eve@example.com"}, None)
    assert enforcement_event(ublock, {"id": 3, "email": "eve@example.com"}) == (
        "sq.action.block_user", {"block_id": "b_2", "actor": '{"email":"eve@example.com","id":3}'})


def test_report_limiter_once_per_actor_per_interval() -> None:
    limiter = ReportLimiter(interval=60.0, max_actors=100)
    assert limiter.allow("203.0.113.7", 0.0)
    assert not limiter.allow("203.0.113.7", 1.0)
    assert not limiter.allow("203.0.113.7", 59.9)
    assert limiter.allow("198.51.100.1", 2.0)
    assert limiter.allow("203.0.113.7", 60.0)
    assert limiter.suppressed == 2


def test_report_limiter_memory_is_bounded() -> None:
    limiter = ReportLimiter(interval=60.0, max_actors=10)
    assert all(limiter.allow(i, float(i)) for i in range(10))
    assert not limiter.allow("new", 20.0)  # ten fresh actors: no room
    assert not limiter.allow("newer", 30.0)
    assert len(limiter._seen) == 10
    assert limiter.allow("later", 60.5)  # actor 0 aged out
    assert not limiter.allow("latest", 60.6)  # actor 1 ages out at 61
    assert limiter.allow("latest", 61.5)
    assert len(limiter._seen) <= 10
    assert limiter.suppressed == 3
