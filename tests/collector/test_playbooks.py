"""Playbook validator, condition operators and the window counters (against a brute-force oracle)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqreen_mw.collector._records import EventRecord
from sqreen_mw.collector.automation import PlaybookError, load_playbooks_file, parse_playbook
from sqreen_mw.collector.automation.engine import PlaybookCounter, actor_of, replay
from sqreen_mw.collector.automation.model import format_duration, parse_duration

VALID: dict[str, Any] = {
    "name": "credential-stuffing",
    "event": "sq.auth_track",
    "where": {"success": False},
    "actor": "ip",
    "threshold": 3,
    "window": "5m",
    "response": [{"action": "block_ip", "duration": "15m"}],
}


def with_(**changes: Any) -> dict[str, Any]:
    out = {**VALID, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def test_a_valid_playbook_round_trips_through_json() -> None:
    pb = parse_playbook(with_(event=["a", "b"], prefix=24, cooldown="10m", distinct="user", dry_run=True))
    assert pb.events == ("a", "b") and pb.prefix == 24 and pb.cooldown == 600 and pb.distinct == "user"
    assert pb.window == 300 and pb.dry_run and pb.enabled and not pb.acts
    again = parse_playbook(pb.to_json())
    assert again.to_json() == pb.to_json()


@pytest.mark.parametrize(
    ("changes", "field", "needle"),
    [
        ({"name": "has space"}, "name", "letters, digits"),
        ({"name": "x" * 65}, "name", "1 to 64"),
        ({"event": []}, "event", "event name or a list"),
        ({"event": "sq.action.block_ip"}, "event", "never feed a playbook"),
        ({"actor": "session"}, "actor", '"ip", "user" or "property:<key>"'),
        ({"actor": ...}, "actor", "is required"),
        ({"prefix": 4}, "prefix", "IPv4 8-32"),
        ({"actor": "user", "prefix": 24, "response": [{"action": "log"}]}, "prefix", 'only applies to actor = "ip"'),
        ({"threshold": 0}, "threshold", "from 1 to"),
        ({"threshold": True}, "threshold", "integer"),
        ({"window": "5 minutes"}, "window", 'like "30s"'),
        ({"window": "30d"}, "window", "from 1s to 7d"),
        ({"window": ...}, "window", "is required"),
        ({"cooldown": "0s"}, "cooldown", "duration"),
        ({"distinct": "ip"}, "distinct", "must differ from actor"),
        ({"enabled": "yes"}, "enabled", "true or false"),
        ({"where": {"request.body": 1}}, "where.request.body", "request fields are"),
        ({"where": {"n": {"between": [1, 2]}}}, "where.n", "unknown operator 'between'"),
        ({"where": {"n": {"gt": "5"}}}, "where.n.gt", "finite number"),
        ({"where": {"n": {"in": []}}}, "where.n.in", "non-empty list"),
        ({"where": {"n": {"regex": "("}}}, "where.n.regex", "not a valid regular expression"),
        ({"where": {"n": {"gt": 1, "lt": 2}}}, "where.n", "exactly one"),
        ({"where": {"n": [1]}}, "where.n", "JSON scalar"),
        ({"response": []}, "response", "list of 1 to"),
        ({"response": [{"action": "ban"}]}, "response[0].action", "block_ip, block_user, webhook, log"),
        ({"response": [{"action": "block_ip"}]}, "response[0].duration", "is required"),
        ({"response": [{"action": "block_ip", "duration": "30s"}]}, "response[0].duration", "from 1m to 365d"),
        ({"response": [{"action": "block_user", "duration": "1h"}]}, "response[0].action", 'needs actor = "user"'),
        ({"response": [{"action": "block_ip", "duration": "1h", "escalate": 1}]}, "response[0].escalate", "above 1"),
        ({"response": [{"action": "block_ip", "duration": "1h", "escalate": 2, "max_duration": "30m"}]},
         "response[0].max_duration", "at least duration"),
        ({"response": [{"action": "webhook", "url": "http://hooks.example.com/x"}]}, "response[0].url", "https"),
        ({"response": [{"action": "webhook", "url": "ftp://x"}]}, "response[0].url", "http(s) URL"),
        ({"response": [{"action": "log", "level": "info"}]}, "response[0]", "unknown keys ['level']"),
        ({"color": "red"}, "playbook", "unknown fields ['color']"),
    ],
)
def test_invalid_playbooks_name_the_field(changes: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(with_(**changes))
    fields = {f: m for f, m in caught.value.errors}
    assert field in fields, caught.value.errors
    assert needle in fields[field]
    assert str(caught.value).startswith("playbook ")


def test_webhook_urls_allowed() -> None:
    for url in ("https://hooks.example.com/x", "http://127.0.0.1:9/x", "http://localhost/x"):
        parse_playbook(with_(response=[{"action": "webhook", "url": url}]))
    plain = with_(response=[{"action": "webhook", "url": "http://hooks.example.com/"}])
    parse_playbook(plain, allow_http_webhooks=True)


def test_durations() -> None:
    assert [parse_duration(t) for t in ("30s", "5m", "1h", "1d")] == [30, 300, 3600, 86400]
    assert parse_duration("permanent", permanent=True) is None
    for bad in ("permanent", "5", "1w", "-1m", "0m", 5, None):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    assert [format_duration(s) for s in (30, 300, 5400, 86400, None)] == ["30s", "5m", "90m", "1d", "permanent"]


def record(name: str = "login", ts: float = 1000.0, *, ip: str | None = "203.0.113.7", users: Any = None,
           props: dict[str, Any] | None = None, path: str = "/login") -> EventRecord:
    request = None if ip is None else {"client_ip": ip, "user_agent": "ua", "path": path, "verb": "POST", "params": {}}
    return EventRecord(str(uuid.uuid4()), name, ts, ts, "app", ip, props or {}, users, request, None,
                       tuple(str(v) for v in (users or {}).values()))


@pytest.mark.parametrize(
    ("where", "props", "path", "expected"),
    [
        ({"success": False}, {"success": False}, "/", True),
        ({"success": False}, {"success": 0}, "/", False),  # a bool equals only a bool
        ({"n": 1}, {"n": 1.0}, "/", True),
        ({"n": 1}, {}, "/", False),  # missing never equals
        ({"n": {"ne": 1}}, {}, "/", True),  # missing is "not equal"
        ({"n": {"ne": 1}}, {"n": 1}, "/", False),
        ({"n": {"in": ["a", "b"]}}, {"n": "b"}, "/", True),
        ({"n": {"in": ["a", "b"]}}, {"n": "c"}, "/", False),
        ({"n": {"gt": 5}}, {"n": 6}, "/", True),
        ({"n": {"gt": 5}}, {"n": 5}, "/", False),
        ({"n": {"gte": 5}}, {"n": 5}, "/", True),
        ({"n": {"lt": 5}}, {"n": 4.5}, "/", True),
        ({"n": {"lte": 5}}, {"n": 6}, "/", False),
        ({"n": {"gt": 5}}, {"n": "6"}, "/", False),  # text is not a number
        ({"n": {"gt": 0}}, {"n": True}, "/", False),  # nor is a bool
        ({"n": {"regex": "ab+"}}, {"n": "abbb"}, "/", True),
        ({"n": {"regex": "ab+"}}, {"n": "xabbb"}, "/", False),  # full match
        ({"request.path": {"regex": "/admin/.*"}}, {}, "/admin/users", True),
        ({"request.path": "/login"}, {}, "/signup", False),
        ({"a": 1, "b": 2}, {"a": 1, "b": 2}, "/", True),
        ({"a": 1, "b": 2}, {"a": 1, "b": 3}, "/", False),
    ],
)
def test_condition_operators(where: dict[str, Any], props: dict[str, Any], path: str, expected: bool) -> None:
    counter = PlaybookCounter(parse_playbook(with_(where=where)))
    assert counter.matches(record(props=props, path=path)) is expected


def test_actor_kinds_and_prefixes() -> None:
    ev = record(ip="203.0.113.77", users={"email": "a@x", "id": 7}, props={"card": "tok_1"})
    assert actor_of("ip", ev)[1:] == ("ip", "203.0.113.77")  # type: ignore[index]
    assert actor_of("ip", ev, 24)[1:] == ("ip", "203.0.113.0/24")  # type: ignore[index]
    assert actor_of("ip", record(ip="2001:db8::1"), 24)[2] == "2001:db8::/64"  # type: ignore[index]
    assert actor_of("ip", record(ip="2001:db8::1"), 48)[2] == "2001:db8::/48"  # type: ignore[index]
    assert actor_of("user", ev)[2] == {"email": "a@x", "id": 7}  # type: ignore[index]
    assert actor_of("user", record(users={"id": 7}))[0] == actor_of("user", record(users={"id": "7"}))[0]  # type: ignore[index]
    assert actor_of("property:card", ev)[2] == {"key": "card", "value": "tok_1"}  # type: ignore[index]
    assert actor_of("property:none", ev) is None
    assert actor_of("ip", record(ip=None)) is None


def test_only_events_inside_the_window_from_now_count() -> None:
    counter = PlaybookCounter(parse_playbook(with_(threshold=2, window="1m", where={})))
    now = 10_000.0
    assert counter.observe(record(ts=now - 3600), now) is None  # an hour old: imported history
    assert counter.observe(record(ts=now - 3601), now) is None
    assert counter.observe(record(ts=now - 30), now) is None
    fired = counter.observe(record(ts=now - 1), now)
    assert fired is not None and fired.count == 2 and fired.value == "203.0.113.7"


# -- window counting against a brute-force oracle ----------------------------------------------------------------

Arrival = tuple[float, float, int, int]  # (arrival time, event ts offset, actor, distinct value)


def oracle(threshold: int, window: float, cooldown: float, distinct: bool, arrivals: list[Arrival]) -> list[tuple]:
    """Fire at an arrival when the actor's not-yet-consumed events inside [now - window, now] reach the threshold
    (distinct values, in distinct mode), unless the actor fired within the cooldown."""
    fired: list[tuple] = []
    consumed_at: dict[int, int] = {}  # actor -> index of the arrival that consumed its earlier events
    last: dict[int, float] = {}
    for i, (now, offset, actor, _value) in enumerate(arrivals):
        ts = min(now - offset, now)
        if ts < now - window:
            continue
        start = consumed_at.get(actor, -1)
        live = []
        for j in range(start + 1, i + 1):
            t_now, t_off, t_actor, t_value = arrivals[j]
            t = min(t_now - t_off, t_now)
            if t_actor == actor and t >= now - window:
                live.append(t_value)
        count = len(set(live)) if distinct else len(live)
        if count >= threshold and not (actor in last and now - last[actor] < cooldown):
            fired.append((i, actor))
            consumed_at[actor] = i
            last[actor] = now
    return fired


@given(
    threshold=st.integers(1, 4),
    window=st.sampled_from([5.0, 10.0, 30.0]),
    cooldown=st.sampled_from([1.0, 10.0, 60.0]),
    distinct=st.booleans(),
    steps=st.lists(
        st.tuples(st.floats(0, 4), st.one_of(st.floats(-1, 3), st.floats(0, 40)), st.integers(0, 2),
                  st.integers(0, 3)),
        max_size=40,
    ),
)
@settings(max_examples=400)
def test_counters_match_the_oracle(threshold: int, window: float, cooldown: float, distinct: bool,
                                   steps: list[tuple[float, float, int, int]]) -> None:
    spec = with_(threshold=threshold, window=f"{int(window)}s", cooldown=f"{int(cooldown)}s", where={},
                 distinct="property:v" if distinct else None)
    spec = {k: v for k, v in spec.items() if v is not None}
    counter = PlaybookCounter(parse_playbook(spec))
    now = 1000.0
    arrivals: list[Arrival] = []
    got = []
    for i, (advance, offset, actor, value) in enumerate(steps):
        now += advance
        arrivals.append((now, offset, actor, value))
        ev = record(ts=now - offset, ip=f"203.0.113.{actor}", props={"v": value})
        candidate = counter.observe(ev, now)
        if candidate is not None:
            counter.fired(candidate.key, now)
            got.append((i, actor))
    assert got == oracle(threshold, window, cooldown, distinct, arrivals)


def test_actor_cap_evicts_least_recent_and_counts() -> None:
    counter = PlaybookCounter(parse_playbook(with_(threshold=2, where={})), max_actors=3)
    for i in range(5):
        counter.observe(record(ts=999, ip=f"203.0.113.{i}"), 1000)
    assert counter.actors() == 3 and counter.evictions == 2


def test_replay_evaluates_each_event_at_its_own_time() -> None:
    pb = parse_playbook(with_(threshold=3, window="1m", cooldown="1h", where={}))
    events = [record("sq.auth_track", ts=t) for t in (0, 10, 20, 30, 40, 50, 5000, 5001, 5002)]
    events.insert(3, record("other", ts=25))  # not a trigger event
    firings = list(replay(pb, events))
    assert [(f.at, f.count) for f in firings] == [(20, 3), (5002, 3)]  # 30..50 consumed/cooldown


def test_playbooks_file_errors_name_the_playbook(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[playbook]]\nname = "ok"\nevent = "a"\nactor = "ip"\nthreshold = 2\nwindow = "1m"\n'
                    '[[playbook.response]]\naction = "log"\n\n'
                    '[[playbook]]\nname = "bad"\nevent = "a"\nactor = "ip"\nthreshold = 2\nwindow = "1 m"\n'
                    '[[playbook.response]]\naction = "log"\n')
    with pytest.raises(PlaybookError, match=r"playbook 'bad': window: must be a duration"):
        load_playbooks_file(str(path))
    path.write_text("[[playbook]\n")
    with pytest.raises(PlaybookError, match="not valid TOML"):
        load_playbooks_file(str(path))
    path.write_text('[allow]\nips = ["10.0.0.0/8", "nope"]\n')
    with pytest.raises(PlaybookError, match=r"allow.ips\[1\]"):
        load_playbooks_file(str(path))
    path.write_text('[allow]\nips = ["198.51.100.0/24"]\nusers = [{ email = "ops@example.com" }]\n')
    playbooks, allow = load_playbooks_file(str(path))
    assert playbooks == [] and allow.to_json() == {"ips": ["198.51.100.0/24"], "users": [{"email": "ops@example.com"}]}


def test_repeat_offenders_get_escalating_blocks(db: str) -> None:
    from sqreen_mw.collector import open_storage
    from sqreen_mw.collector.automation import Automation

    now = [1_000_000.0]
    storage = open_storage(db)
    pb = parse_playbook(with_(threshold=2, window="1m", cooldown="1m", where={}, response=[
        {"action": "block_ip", "duration": "10m", "escalate": 3, "max_duration": "1h"}]))
    automation = Automation(storage, playbooks=[pb], clock=lambda: now[0])
    try:
        durations = []
        for _ in range(4):
            for block in automation.list_blocks():
                automation.lift_block(block.id)
            assert automation.observe([record("sq.auth_track", now[0]) for _ in range(2)]) == 1
            (block,) = automation.list_blocks()
            durations.append(round((block.expires_at or 0) - now[0]))
            now[0] += 120  # past the cooldown, within 24 h
        assert durations == [600, 1800, 3600, 3600]  # 10m, x3, then capped at 1h
        now[0] += 86400 * 2  # two days later the history is forgotten
        for block in automation.list_blocks():
            automation.lift_block(block.id)
        automation.observe([record("sq.auth_track", now[0]) for _ in range(2)])
        (block,) = automation.list_blocks()
        assert round((block.expires_at or 0) - now[0]) == 600
    finally:
        automation.close()
        storage.close()
