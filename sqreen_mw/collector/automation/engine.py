"""Sliding-window counters: which actor reached a playbook's threshold, event by event.

Each playbook keeps, per actor, only what can still matter: in ``threshold`` mode the newest ``threshold`` events
(if the window holds that many, the newest of them are all inside it), in ``distinct`` mode the newest sighting of at
most ``threshold`` distinct values. Actors are kept in LRU order and capped (``max_actors``); an evicted actor's count
restarts from zero, and evictions are counted. Only events whose own timestamp is within the window measured from
``now`` count, so imported history never fires; a firing consumes the actor's events (the next firing needs a new
threshold of events) and starts the cooldown.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from .._records import EventRecord
from .model import MISSING, Playbook, user_key

__all__ = ["Candidate", "PlaybookCounter", "actor_of"]

DEFAULT_MAX_ACTORS = 100_000
_REQUEST_KEYS = {"request.path": "path", "request.verb": "verb", "request.client_ip": "client_ip",
                 "request.user_agent": "user_agent"}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A threshold reached: the actor (key, kind and JSON value), when, how many events and which."""

    playbook: Playbook
    key: Hashable
    kind: str
    value: Any
    at: float
    count: int
    event_ids: list[str]


def _field(event: EventRecord, key: str) -> Any:
    request_key = _REQUEST_KEYS.get(key)
    if request_key is None:
        return event.properties.get(key, MISSING)
    request = event.request
    if request is None:
        return MISSING
    return request.get(request_key, MISSING)


def prefix_lengths(prefix: int | None) -> tuple[int, int]:
    """The (IPv4, IPv6) prefix lengths a playbook's ``prefix`` groups by: ≤ 32 is the IPv4 length (IPv6 then by
    /64, one customer's usual allocation); above 32 it is the IPv6 length (IPv4 then per address)."""
    if prefix is None:
        return 32, 128
    if prefix <= 32:
        return prefix, 64
    return 32, prefix


_NETWORKS: dict[tuple[str, int], str | None] = {}  # (ip, prefix) -> network text: parsing is the costly part


def _network(ip: str, prefix: int) -> str | None:
    key = (ip, prefix)
    text = _NETWORKS.get(key, "")
    if text != "":
        return text
    v4, v6 = prefix_lengths(prefix)
    parts = ip.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts):
        # IPv4, the common case, without ipaddress (which costs ~10 µs per new address)
        n = int(parts[0]) << 24 | int(parts[1]) << 16 | int(parts[2]) << 8 | int(parts[3])
        n &= (0xFFFFFFFF << (32 - v4)) & 0xFFFFFFFF
        text = f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" + ("" if v4 == 32 else f"/{v4}")
    else:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            text = None
        else:
            network = ipaddress.ip_network(f"{addr}/{v4 if addr.version == 4 else v6}", strict=False)
            text = str(network) if network.num_addresses > 1 else str(addr)
    if len(_NETWORKS) >= 65536:  # bounded: start over rather than grow with an attacker's address space
        _NETWORKS.clear()
    _NETWORKS[key] = text
    return text


def actor_of(spec: str, event: EventRecord, prefix: int | None = None) -> tuple[Hashable, str, Any] | None:
    """The actor of ``event`` for an actor spec ("ip", "user", "property:<key>"): (key, kind, JSON value), or None
    when the event has none (no client IP, no user, no such property)."""
    if spec == "ip":
        ip = event.client_ip
        if not ip:
            return None
        if prefix is None:
            return ("ip", ip), "ip", ip
        text = _network(ip, prefix)
        return None if text is None else (("ip", text), "ip", text)
    if spec == "user":
        users = event.user_identifiers
        if not users:
            return None
        return ("user", user_key(users)), "user", dict(users)
    key = spec[9:]
    value = event.properties.get(key)
    if value is None:
        return None
    return ("property", key, type(value).__name__, value), "property", {"key": key, "value": value}


class PlaybookCounter:
    """The counters of one playbook. Not thread-safe: the caller serialises calls."""

    def __init__(self, playbook: Playbook, max_actors: int = DEFAULT_MAX_ACTORS) -> None:
        self.playbook = playbook
        self.max_actors = max_actors
        self.evictions = 0
        # threshold mode: actor -> sorted [(ts, event id)]; distinct mode: actor -> {value key: (ts, event id)}
        self._actors: OrderedDict[Hashable, Any] = OrderedDict()
        self._fired: OrderedDict[Hashable, float] = OrderedDict()  # actor -> time of its last firing
        self.consumed: dict[Hashable, float] = {}  # actor -> events at or before this ts already fired (restart)

    def matches(self, event: EventRecord) -> bool:
        """Whether the event passes the trigger's ``where`` conditions (its name is checked by the caller)."""
        for c in self.playbook.conditions:
            if not c.test(_field(event, c.key)):
                return False
        return True

    def in_cooldown(self, key: Hashable, now: float) -> bool:
        last = self._fired.get(key)
        return last is not None and now - last < self.playbook.cooldown

    def fired(self, key: Hashable, at: float) -> None:
        """Record a firing for ``key`` at ``at``: its events are consumed and the cooldown starts."""
        self._actors.pop(key, None)
        self._fired[key] = at
        self._fired.move_to_end(key)
        while len(self._fired) > self.max_actors:
            self._fired.popitem(last=False)

    def observe(self, event: EventRecord, now: float) -> Candidate | None:
        """Count one event (already known to match); return a candidate when its actor reaches the threshold."""
        pb = self.playbook
        ts = min(event.ts, now)  # a little clock skew ahead of the collector counts as now
        horizon = now - pb.window
        if ts < horizon:
            return None
        found = actor_of(pb.actor, event, pb.prefix)
        if found is None:
            return None
        key, kind, value = found
        if ts <= self.consumed.get(key, float("-inf")):
            return None
        if pb.distinct is None:
            slot = self._count(key, ts, event.id, horizon)
            if len(slot) < pb.threshold or self.in_cooldown(key, now):
                return None
            return Candidate(pb, key, kind, value, now, len(slot), [i for _, i in slot])
        other = actor_of(pb.distinct, event)
        if other is None:
            return None
        seen = self._distinct(key, other[0], ts, event.id, horizon)
        if len(seen) < pb.threshold or self.in_cooldown(key, now):
            return None
        return Candidate(pb, key, kind, value, now, len(seen), [i for _, i in sorted(seen.values())])

    def _slot(self, key: Hashable, empty: Any) -> Any:
        slot = self._actors.get(key)
        if slot is None:
            slot = self._actors[key] = empty
            if len(self._actors) > self.max_actors:
                self._actors.popitem(last=False)
                self.evictions += 1
        else:
            self._actors.move_to_end(key)
        return slot

    def _count(self, key: Hashable, ts: float, event_id: str, horizon: float) -> list[tuple[float, str]]:
        entries: list[tuple[float, str]] = self._slot(key, [])
        if not entries or entries[-1][0] <= ts:
            entries.append((ts, event_id))  # the usual case: events arrive in time order
        else:
            bisect.insort(entries, (ts, event_id))
        if entries[0][0] < horizon:
            del entries[: bisect.bisect_left(entries, (horizon, ""))]
        if len(entries) > self.playbook.threshold:
            del entries[: len(entries) - self.playbook.threshold]
        return entries

    def _distinct(
        self, key: Hashable, value: Hashable, ts: float, event_id: str, horizon: float
    ) -> dict[Hashable, tuple[float, str]]:
        seen: dict[Hashable, tuple[float, str]] = self._slot(key, {})
        if value not in seen or seen[value][0] <= ts:
            seen[value] = (ts, event_id)
        limit = self.playbook.threshold
        if len(seen) >= limit or len(seen) > 64:  # prune only when it can matter (or to bound the work)
            for v in [v for v, (t, _) in seen.items() if t < horizon]:
                del seen[v]
            if len(seen) > limit:  # keep the newest sightings only
                for v, _ in sorted(seen.items(), key=lambda item: item[1])[: len(seen) - limit]:
                    del seen[v]
        return seen

    def actors(self) -> int:
        return len(self._actors)


def replay(
    playbook: Playbook, events: Iterable[EventRecord], *, max_actors: int = DEFAULT_MAX_ACTORS,
) -> Iterable[Candidate]:
    """Backtest: feed stored events in timestamp order, each evaluated at its own time; yield the firings that
    would have happened (cooldown included), taking no action."""
    counter = PlaybookCounter(playbook, max_actors)
    names = set(playbook.events)
    for event in events:
        if event.name not in names or event.blocked or not counter.matches(event):
            continue
        candidate = counter.observe(event, event.ts)
        if candidate is not None:
            counter.fired(candidate.key, candidate.at)
            yield candidate
