"""The automation service: playbooks evaluated on ingest, their responses, blocks, and the actions agents enforce.

One :class:`Automation` per collector (``app.state.automation``). Ingest calls :meth:`Automation.observe` with the
events a batch stored for the first time (deduplication comes first, then counting); the admin API and the explorer
call the rest. Every change to the actions (a block made, extended or lifted, a playbook changed: the hot event
names change with it) bumps the actions version in the database and wakes the agents' long-polls at once.

Playbooks come from the ``--playbooks`` file and from the admin API. The file wins on restart: a file playbook
changed or deleted through the API stays so until the collector restarts (its JSON says ``"overridden": true``), then
the file's version is back; API-made playbooks are stored in the database and survive restarts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from ..._schema import MAX_FUTURE_SKEW, format_timestamp
from .._records import EventRecord
from .._sqlite_automation import new_id
from .engine import DEFAULT_MAX_ACTORS, Candidate, PlaybookCounter, actor_of, replay
from .model import Allowlist, Playbook, PlaybookError, format_duration, parse_duration, parse_playbook, user_key
from .store import AllowEntry, AutomationStore, Block, Firing
from .webhooks import WebhookSender

__all__ = ["Automation", "BlockRefused", "block_json", "firing_json"]

logger = logging.getLogger("sqreen_mw.collector")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Never blocked, whatever anyone says: loopback, unspecified and multicast (plus the agents' trusted proxies).
ALWAYS_PROTECTED = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128", "224.0.0.0/4", "ff00::/8",
))  # fmt: skip
ESCALATION_WINDOW = 86400.0
MAX_BACKTEST_EVENTS = 2_000_000
BACKTEST_SECONDS = 30.0
MAX_BACKTEST_FIRINGS = 1000
MAX_REASON = 500


class BlockRefused(ValueError):
    """A block that may not be made; ``field`` names the part of the request at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _time(value: float | None) -> str | None:
    return None if value is None else format_timestamp(value)


def block_json(block: Block, now: float | None = None) -> dict[str, Any]:
    """A block as the admin API shows it."""
    return {
        "id": block.id, "kind": block.kind, "value": block.value, "reason": block.reason,
        "playbook": block.playbook, "firing_id": block.firing_id, "created_at": _time(block.created_at),
        "expires_at": _time(block.expires_at), "lifted_at": _time(block.lifted_at),
        "active": block.active(time.time() if now is None else now),
    }  # fmt: skip


def firing_json(firing: Firing) -> dict[str, Any]:
    """A firing as the admin API shows it."""
    return {
        "id": firing.id, "playbook": firing.playbook,
        "actor": {"kind": firing.actor_kind, "value": firing.actor_value}, "at": _time(firing.at),
        "count": firing.count, "event_ids": firing.event_ids, "responses": firing.responses,
    }  # fmt: skip


def actor_key(kind: str, value: Any) -> Hashable:
    """The counter key of a stored actor (inverse of the keys :func:`engine.actor_of` makes)."""
    if kind == "ip":
        return ("ip", value)
    if kind == "user":
        return ("user", user_key(value))
    return ("property", value["key"], type(value["value"]).__name__, value["value"])


def actor_text(key: Hashable) -> str:
    """An actor's counter key as text: how a store shared by replicas names the actor (hits, firings)."""
    return json.dumps(key, separators=(",", ":"), ensure_ascii=True)


_PRUNE_SECONDS = 60.0  # how often old shared hits are deleted


def _block_key(kind: str, value: Any) -> Hashable:
    return ("ip", value) if kind == "ip" else ("user", user_key(value))


def normalize_block_value(kind: object, value: object) -> tuple[str, Any]:
    """Check a block's kind and value; an IP value becomes canonical (an address, or a network in CIDR form).

    :raises BlockRefused: naming ``kind`` or ``value``.
    """
    if kind == "ip":
        if not isinstance(value, str):
            raise BlockRefused("value", f"an ip block's value is an address or CIDR string, got {type(value).__name__}")
        try:
            network = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise BlockRefused("value", f"not an IP address or CIDR: {value[:80]!r}") from None
        return "ip", str(network.network_address) if network.num_addresses == 1 else str(network)
    if kind == "user":
        if not isinstance(value, dict) or not value or len(value) > 16 or not all(
            isinstance(k, str) and k and isinstance(v, str | int) and not isinstance(v, bool)
            for k, v in value.items()
        ):
            raise BlockRefused("value", 'a user block\'s value is an identifier map like {"email": "..."}')
        return "user", dict(value)
    raise BlockRefused("kind", f'kind must be "ip" or "user", got {str(kind)[:40]!r}')


@dataclass(slots=True)
class _Entry:
    playbook: Playbook
    source: str  # "file" | "api"
    overridden: bool = False


class Automation:
    """Playbooks, counters, responses and blocks of one collector.

    :param store: the collector's storage (it implements :class:`~.store.AutomationStore`).
    :param playbooks: the playbooks of the ``--playbooks`` file.
    :param allow: the file's ``[allow]`` table.
    :param allow_http_webhooks: accept plain-http webhook URLs beyond loopback.
    :param max_actors: actors tracked per playbook (least recently seen evicted first, counted).
    :param clock: the time source (tests).
    """

    def __init__(
        self,
        store: AutomationStore,
        *,
        playbooks: Sequence[Playbook] = (),
        allow: Allowlist | None = None,
        allow_http_webhooks: bool = False,
        max_actors: int = DEFAULT_MAX_ACTORS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.allow_http_webhooks = allow_http_webhooks
        self.max_actors = max_actors
        self.clock = clock
        self.webhooks = WebhookSender()
        self._lock = threading.RLock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._closing = False
        self._entries: dict[str, _Entry] = {pb.name: _Entry(pb, "file") for pb in playbooks}
        for definition in store.load_playbooks():
            name = str(definition.get("name"))
            if name in self._entries:
                logger.warning("playbook %r is in the playbooks file: the file's version wins over the one saved "
                               "through the API", name)
                store.delete_playbook(name)
                continue
            try:
                self._entries[name] = _Entry(parse_playbook(definition, allow_http_webhooks=True), "api")
            except PlaybookError as exc:  # saved by another version with other rules: keep going without it
                logger.error("stored playbook %r cannot be used: %s", name, exc)
        self._file_allow = allow or Allowlist()
        self._allow_entries = store.list_allow()
        self._allow = self._merge_allow()
        self._protected: list[_Network] = list(ALWAYS_PROTECTED)
        self._protected_text: set[str] = set()
        self._add_protected(store.load_protected())
        now = clock()
        self._active: dict[Hashable, Block] = {
            _block_key(b.kind, b.value): b for b in store.list_blocks(include_inactive=False, now=now)
        }
        # Agents keep their session across a collector restart and compare versions only, while the hot event names
        # may differ from the last run's (a changed playbooks file): every start is a new version for them.
        self._version = store.bump_actions_version()
        self._own_versions: set[int] = {self._version}  # versions this replica made, whose notification is to come
        self._listening = getattr(store, "listen", None) is not None  # a store shared by replicas
        self._payload: tuple[int, float, dict[str, Any]] | None = None
        self._escalation: dict[tuple[str, Hashable], list[float]] = {}
        self._counters: dict[str, PlaybookCounter] = {}
        # A store shared by replicas counts in the database (each replica sees only part of the events).
        self._shared = bool(getattr(store, "shared_counters", False))
        self._pruned_at = 0.0
        self.counting_failures = 0  # batches whose shared counting failed (the database went away meanwhile)
        self._by_event: dict[str, list[PlaybookCounter]] = {}
        for firing in store.list_firings(playbook=None, since=now - ESCALATION_WINDOW, limit=100_000, after=None):
            if any(r.get("status") == "taken" and r.get("block_id") for r in firing.responses):
                self._escalation.setdefault((firing.playbook, actor_key(firing.actor_kind, firing.actor_value)),
                                            []).append(firing.at)
        self._starting = True  # shared hits are topped up, not replaced: the definitions are those stored
        for name in list(self._entries):
            self._start_counter(name)
        self._starting = False
        listen = getattr(store, "listen", None)
        if listen is not None:  # a store shared by replicas (PostgreSQL): hear of the other replicas' changes
            listen(self._remote_change)

    def _remote_change(self, version: int, resync: bool = False) -> None:
        """The actions version moved in the shared store (another replica changed blocks or playbooks), or the
        listener (re)connected (``resync``: changes may have been missed): reload them, then wake the long-polls of
        this replica's agents. Called from the store's listener thread."""
        with self._lock:
            if version in self._own_versions and not resync:  # this replica's own change, already announced
                self._own_versions.discard(version)
                return
            # Reloaded under the lock, so a change made here meanwhile cannot be overwritten by an older list.
            blocks = self.store.list_blocks(include_inactive=False, now=self.clock())
            stored = {str(d.get("name")): d for d in self.store.load_playbooks()}
            self._active = {_block_key(b.kind, b.value): b for b in blocks}
            changed = [name for name, e in self._entries.items() if e.source == "api" and name not in stored]
            for name in changed:
                del self._entries[name]
            for name, definition in stored.items():
                entry = self._entries.get(name)
                if entry is not None and (entry.source == "file" or entry.playbook.to_json() == definition):
                    continue
                try:
                    self._entries[name] = _Entry(parse_playbook(definition, allow_http_webhooks=True), "api")
                except PlaybookError as exc:
                    logger.error("stored playbook %r cannot be used: %s", name, exc)
                    continue
                changed.append(name)
            for name in changed:
                self._start_counter(name)
            self._payload = None
            if len(self._own_versions) > 1000:  # announced while the listener was away: never heard back
                self._own_versions.clear()
        self._changed(version, own=False)

    # --- playbooks --------------------------------------------------------------------------------------------

    def _start_counter(self, name: str) -> None:
        """(Re)build one playbook's counters from stored events within its window, honouring past firings."""
        self._counters.pop(name, None)
        entry = self._entries.get(name)
        if entry is not None and entry.playbook.enabled and self._shared:
            self._counters[name] = self._start_shared_counter(entry.playbook)
        elif entry is not None and entry.playbook.enabled:
            pb = entry.playbook
            counter = PlaybookCounter(pb, self.max_actors)
            now = self.clock()
            for firing in self.store.list_firings(playbook=name, since=now - max(pb.cooldown, pb.window),
                                                  limit=100_000, after=None)[::-1]:
                key = actor_key(firing.actor_kind, firing.actor_value)
                counter.consumed[key] = firing.at
                counter.fired(key, firing.at)
            for chunk in self.store.scan_events(pb.events, now - pb.window, now + MAX_FUTURE_SKEW):
                for event in chunk:
                    if not event.blocked and counter.matches(event):
                        candidate = counter.observe(event, now)
                        if candidate is not None:  # crossed while the collector was down: respond now
                            counter.fired(candidate.key, now)
                            self._respond(candidate)
            self._counters[name] = counter
        by_event: dict[str, list[PlaybookCounter]] = {}
        for counter in self._counters.values():
            for event_name in counter.playbook.events:
                by_event.setdefault(event_name, []).append(counter)
        self._by_event = by_event

    def _start_shared_counter(self, pb: Playbook) -> PlaybookCounter:
        """A playbook's shared hits rebuilt from the stored events of its window; the actors are counted at their
        next event (counting here, under this replica's lock, could wait on another replica's actor lock held by a
        thread that waits for this lock)."""
        counter = PlaybookCounter(pb, self.max_actors)
        now = self.clock()
        hits: list[tuple[str, str, float, str, str | None]] = []
        for chunk in self.store.scan_events(pb.events, now - pb.window, now + MAX_FUTURE_SKEW):
            for event in chunk:
                if not event.blocked and counter.matches(event):
                    found = self._shared_hit(pb, event, now)
                    if found is not None:
                        hits.append(found[0])
        store: Any = self.store
        if self._starting:  # other replicas may be writing this playbook's hits meanwhile: only add the missing
            store.add_hits(hits)
        else:  # a changed definition: the old one's hits must not count
            store.replace_hits(pb.name, hits)
        return counter

    @staticmethod
    def _shared_hit(pb: Playbook, event: EventRecord, now: float) -> tuple[tuple[str, str, float, str, str | None],
                                                                           Hashable, str, Any] | None:
        ts = min(event.ts, now)  # a little clock skew ahead of the collector counts as now
        if ts < now - pb.window:
            return None
        found = actor_of(pb.actor, event, pb.prefix)
        if found is None:
            return None
        key, kind, value = found
        distinct: str | None = None
        if pb.distinct is not None:
            other = actor_of(pb.distinct, event)
            if other is None:
                return None
            distinct = actor_text(other[0])
        return (pb.name, actor_text(key), ts, event.id, distinct), key, kind, value

    def _observe_shared(self, events: Sequence[EventRecord]) -> int:
        """:meth:`observe` with a store shared by replicas: hits stored, then each touched actor counted (and fired
        at most once across replicas) under its lock in the database."""
        now = self.clock()
        with self._lock:
            by_event = self._by_event
        hits: list[tuple[str, str, float, str, str | None]] = []
        touched: dict[tuple[str, str], tuple[Playbook, Hashable, str, Any]] = {}
        for event in events:
            counters = by_event.get(event.name)
            if counters is None or event.blocked:
                continue
            for counter in counters:
                if counter.matches(event):
                    found = self._shared_hit(counter.playbook, event, now)
                    if found is not None:
                        hit, key, kind, value = found
                        hits.append(hit)
                        touched[(hit[0], hit[1])] = (counter.playbook, key, kind, value)
        if not hits:
            return 0
        store: Any = self.store
        store.add_hits(hits)
        fired = 0
        # One query per playbook finds the actors with enough hits in the window; only those are locked and counted
        # exactly (a batch of a thousand addresses must not cost a thousand locked transactions).
        by_playbook: dict[str, list[str]] = {}
        for name, actor in touched:
            by_playbook.setdefault(name, []).append(actor)
        likely: set[tuple[str, str]] = set()
        for name, actors in by_playbook.items():
            pb = touched[(name, actors[0])][0]
            likely.update((name, a) for a in store.over_threshold(name, actors, now - pb.window, pb.threshold,
                                                                  distinct=pb.distinct is not None))
        for (name, actor), (pb, key, kind, value) in touched.items():
            if (name, actor) not in likely:
                continue
            with store.hit_lock(pb.name, actor, now=now, window=pb.window, threshold=pb.threshold,
                                distinct=pb.distinct is not None, cooldown=pb.cooldown,
                                escalation_window=ESCALATION_WINDOW) as hc:
                if hc.count < pb.threshold or hc.in_cooldown:
                    continue
                with self._lock:
                    self._escalation[(pb.name, key)] = hc.blocking_firings
                    self._respond(Candidate(pb, key, kind, value, now, hc.count, hc.event_ids))
                fired += 1
        if now - self._pruned_at > _PRUNE_SECONDS:
            self._pruned_at = now
            with self._lock:
                longest = max((c.playbook.window for c in self._counters.values()), default=0.0)
            store.prune_hits(now - longest - MAX_FUTURE_SKEW)
        return fired

    def list_playbooks(self) -> list[dict[str, Any]]:
        """Every playbook as JSON, with ``source`` ("file"/"api"), ``overridden`` and its counter statistics."""
        with self._lock:
            out = []
            for name in sorted(self._entries):
                entry = self._entries[name]
                counter = self._counters.get(name)
                out.append({
                    **entry.playbook.to_json(), "source": entry.source, "overridden": entry.overridden,
                    "stats": {"actors": counter.actors() if counter else 0,
                              "evictions": counter.evictions if counter else 0},
                })  # fmt: skip
            return out

    def get_playbook(self, name: str) -> dict[str, Any] | None:
        return next((pb for pb in self.list_playbooks() if pb["name"] == name), None)

    def put_playbook(self, name: str, body: object) -> tuple[bool, dict[str, Any]]:
        """Create or replace a playbook: (created, the stored playbook). :raises PlaybookError: it is invalid."""
        playbook = parse_playbook(body, allow_http_webhooks=self.allow_http_webhooks, name=name)
        with self._lock:
            previous = self._entries.get(name)
            created = previous is None
            if previous is not None and previous.source == "file":
                self._entries[name] = _Entry(playbook, "file", overridden=True)
                version = self.store.bump_actions_version()
                logger.warning("playbook %r from the playbooks file changed through the API: the file's version "
                               "comes back when the collector restarts", name)
            else:
                self._entries[name] = _Entry(playbook, "api")
                version = self.store.save_playbook(name, playbook.to_json(), self.clock())
            self._start_counter(name)
            self._changed(version)
        shown = self.get_playbook(name)
        assert shown is not None  # noqa: S101 - just stored under the lock
        return created, shown

    def patch_playbook(self, name: str, changes: object) -> dict[str, Any] | None:
        """Change ``enabled`` / ``dry_run`` only; None when there is no such playbook.

        :raises PlaybookError: other keys, or values that are not booleans.
        """
        if not isinstance(changes, dict) or not changes or set(changes) - {"enabled", "dry_run"}:
            raise PlaybookError(name, [("playbook", "PATCH takes only enabled and/or dry_run (PUT replaces it)")])
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return None
            body = {**entry.playbook.to_json(), **changes}
        self.put_playbook(name, body)
        return self.get_playbook(name)

    def delete_playbook(self, name: str) -> bool:
        with self._lock:
            entry = self._entries.pop(name, None)
            if entry is None:
                return False
            if entry.source == "file":
                logger.warning("playbook %r from the playbooks file deleted through the API: it comes back when the "
                               "collector restarts (remove it from the file to delete it for good)", name)
                version = self.store.bump_actions_version()
            else:
                version = self.store.delete_playbook(name)
            self._start_counter(name)
            self._changed(version)
            return True

    def hot_events(self) -> list[str]:
        """Names of the events that feed a playbook taking actions (enabled, not a dry run)."""
        with self._lock:
            return sorted({n for e in self._entries.values() if e.playbook.acts for n in e.playbook.events})

    # --- ingest -----------------------------------------------------------------------------------------------

    def observe(self, events: Sequence[EventRecord]) -> int:
        """Count newly stored events; respond to every threshold reached. Return the number of firings.

        Called from ingest's worker threads, after the batch is stored. Events an agent flagged ``blocked`` (tracked
        while the request was being refused) never count.
        """
        if not self._by_event:
            return 0
        if self._shared:
            try:
                return self._observe_shared(events)
            except Exception:  # the batch is stored and acknowledged whatever happens to its counting
                self.counting_failures += 1
                logger.exception("counting %d stored events in the shared store failed; they do not count", len(events))
                return 0
        candidates: list[Candidate] = []
        with self._lock:
            by_event = self._by_event
            now = self.clock()
            for event in events:
                counters = by_event.get(event.name)
                if counters is None or event.blocked:
                    continue
                for counter in counters:
                    if counter.matches(event):
                        candidate = counter.observe(event, now)
                        if candidate is not None:
                            counter.fired(candidate.key, now)
                            candidates.append(candidate)
            for candidate in candidates:
                self._respond(candidate)
        return len(candidates)

    def _escalated(self, pb: Playbook, key: Hashable, duration: float | None, escalate: float | None,
                   cap: float | None, now: float) -> float | None:
        if duration is None or escalate is None:
            return duration
        history = [t for t in self._escalation.get((pb.name, key), []) if now - t < ESCALATION_WINDOW]
        self._escalation[(pb.name, key)] = history
        if not history:
            return duration
        longer = duration * escalate ** len(history)
        return min(longer, cap) if cap is not None else (None if longer > 365 * 86400 else longer)

    def _respond(self, c: Candidate) -> None:
        pb = c.playbook
        firing_id = new_id("f")
        responses: list[dict[str, Any]] = []
        blocked = False
        for r in pb.responses:
            result: dict[str, Any] = {"action": r.action, "status": "taken", "reason": "", "block_id": None}
            if pb.dry_run:
                result.update(status="dry_run", reason="dry run: recorded, no action taken")
            elif r.action in ("block_ip", "block_user"):
                duration = self._escalated(pb, c.key, r.duration, r.escalate, r.max_duration, c.at)
                try:
                    block, note = self._make_block(
                        "ip" if r.action == "block_ip" else "user", c.value, duration,
                        f"playbook {pb.name}: {c.count} {'distinct ' + str(pb.distinct) if pb.distinct else 'events'}"
                        f" within {format_duration(pb.window)}", pb.name, firing_id,
                    )
                    result.update(block_id=block.id, reason=note or f"blocked for {format_duration(duration)}")
                    blocked = True
                except BlockRefused as exc:
                    result.update(status="skipped", reason=str(exc))
            elif r.action == "webhook" and r.url is not None:
                payload = {"type": "security_response", "firing_id": firing_id, "playbook": pb.name,
                           "actor": {"kind": c.kind, "value": c.value}, "at": _time(c.at), "count": c.count,
                           "event_ids": c.event_ids}
                if not self.webhooks.submit(r.url, payload):
                    result.update(status="skipped", reason="too many webhook deliveries pending")
            elif r.action == "log":
                logger.warning("playbook %s fired for %s %s: %d events", pb.name, c.kind, c.value, c.count)
            responses.append(result)
        if blocked:
            self._escalation.setdefault((pb.name, c.key), []).append(c.at)
        self.store.insert_firing(Firing(firing_id, pb.name, c.kind, c.value, c.at, c.count, c.event_ids, responses))
        logger.info("playbook %s fired for %s (%d events): %s", pb.name, c.kind, c.count,
                    ", ".join(f"{r['action']} {r['status']}" for r in responses))

    # --- blocks -----------------------------------------------------------------------------------------------

    def _add_protected(self, networks: Sequence[str]) -> list[str]:
        added = []
        for text in networks:
            if text in self._protected_text or not isinstance(text, str) or text.strip() == "*":
                continue
            try:
                network = ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                continue
            self._protected.append(network)
            self._protected_text.add(text)
            added.append(text)
        return added

    def note_trusted_proxies(self, networks: object) -> None:
        """An agent's trusted proxies (sent at login): never blocked, since blocking one blocks everyone behind it."""
        if not isinstance(networks, list):
            return
        with self._lock:
            added = self._add_protected([n for n in networks[:256] if isinstance(n, str)])
        if added:
            self.store.save_protected(added, self.clock())

    def _merge_allow(self) -> Allowlist:
        networks = list(self._file_allow.networks)
        users = list(self._file_allow.users)
        for entry in self._allow_entries:
            if entry.kind == "ip":
                networks.append(ipaddress.ip_network(entry.value, strict=False))
            else:
                users.append(user_key(entry.value))
        return Allowlist(tuple(networks), tuple(users))

    def _refusal(self, kind: str, value: Any) -> str | None:
        if kind == "user":
            return "this user is on the allowlist" if user_key(value) in self._allow.users else None
        network = ipaddress.ip_network(value, strict=False)
        for allowed in self._allow.networks:
            if network.version == allowed.version and network.overlaps(allowed):
                return f"{value} is on the allowlist ({allowed})"
        for protected in self._protected:
            if network.version == protected.version and network.overlaps(protected):
                what = ("a trusted proxy of an app" if str(protected) in self._protected_text or
                        protected.with_prefixlen in self._protected_text else "loopback, unspecified or multicast")
                return f"{value} covers {protected}, {what}: never blocked (blocking it would block everyone behind it)"
        return None

    def _make_block(self, kind: str, value: Any, duration: float | None, reason: str, playbook: str | None,
                    firing_id: str | None) -> tuple[Block, str]:
        kind, value = normalize_block_value(kind, value)
        with self._lock:
            refusal = self._refusal(kind, value)
            if refusal is not None:
                raise BlockRefused("value", refusal)
            now = self.clock()
            expires = None if duration is None else now + duration
            key = _block_key(kind, value)
            existing = self._active.get(key)
            if existing is not None and existing.active(now):
                if existing.expires_at is None or (expires is not None and existing.expires_at >= expires):
                    return existing, f"already blocked by {existing.id} until {_time(existing.expires_at) or 'lifted'}"
                version = self.store.set_block_expiry(existing.id, expires)
                block = Block(existing.id, existing.kind, existing.value, existing.reason, existing.playbook,
                              existing.created_at, expires, None, existing.firing_id)
                self._active[key] = block
                self._changed(version)
                return block, f"extended {existing.id} to {_time(expires) or 'permanent'}"
            block = Block(new_id("b"), kind, value, reason[:MAX_REASON], playbook, now, expires, None, firing_id)
            version = self.store.insert_block(block)
            self._active[key] = block
            self._changed(version)
            return block, ""

    def create_block(self, body: object) -> Block:
        """A manual block from the admin API: ``{"kind", "value", "duration" (default "1h"), "reason"}``.

        :raises BlockRefused: a field is wrong, or the value is allowlisted or protected.
        """
        if not isinstance(body, dict):
            raise BlockRefused("body", "the body must be a JSON object with kind, value, duration and reason")
        unknown = set(body) - {"kind", "value", "duration", "reason"}
        if unknown:
            raise BlockRefused(sorted(unknown)[0], f"unknown fields {sorted(unknown)}; known: kind, value, duration, "
                                                   "reason")
        try:
            duration = parse_duration(body.get("duration", "1h"), permanent=True)
        except ValueError as exc:
            raise BlockRefused("duration", f"duration {exc}") from None
        if duration is not None and duration < 60:
            raise BlockRefused("duration", "duration must be at least 1m")
        reason = body.get("reason", "manual block")
        if not isinstance(reason, str) or not reason.strip():
            raise BlockRefused("reason", "reason must be a non-empty string")
        block, _ = self._make_block(str(body.get("kind")), body.get("value"), duration, reason.strip(), None, None)
        return block

    def lift_block(self, block_id: str) -> Block | None:
        """Lift an active block (it reaches agents as fast as a block); None when no such active block."""
        with self._lock:
            block, version = self.store.lift_block(block_id, self.clock())
            if block is None:
                return None
            key = _block_key(block.kind, block.value)
            if self._active.get(key, block).id == block.id:
                self._active.pop(key, None)
            self._changed(version)
            return block

    def list_blocks(self, *, include_inactive: bool = False) -> list[Block]:
        return self.store.list_blocks(include_inactive=include_inactive, now=self.clock())

    # --- allowlist --------------------------------------------------------------------------------------------

    def allowlist_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "file": self._file_allow.to_json(),
                "entries": [{"id": e.id, "kind": e.kind, "value": e.value, "created_at": _time(e.created_at)}
                            for e in self._allow_entries],
            }

    def add_allow(self, body: object) -> AllowEntry:
        """Allowlist an IP/CIDR or a user (``{"kind", "value"}``); active blocks it covers are lifted.

        :raises BlockRefused: naming the bad field.
        """
        if not isinstance(body, dict) or set(body) - {"kind", "value"}:
            raise BlockRefused("body", "the body must be a JSON object with kind and value only")
        kind, value = normalize_block_value(body.get("kind"), body.get("value"))
        entry = AllowEntry(new_id("a"), kind, value, self.clock())
        with self._lock:
            self.store.add_allow(entry)
            self._allow_entries.append(entry)
            self._allow = self._merge_allow()
            covered = [b for b in self._active.values() if b.kind == kind and self._refusal(b.kind, b.value)]
        for block in covered:
            self.lift_block(block.id)
        return entry

    def remove_allow(self, entry_id: str) -> bool:
        with self._lock:
            if not self.store.remove_allow(entry_id):
                return False
            self._allow_entries = [e for e in self._allow_entries if e.id != entry_id]
            self._allow = self._merge_allow()
            return True

    # --- what agents enforce ----------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    def actions(self) -> dict[str, Any]:
        """``{"actions_version", "actions", "hot_events"}`` for agents (protocol: "Actions"); cached per version
        and rebuilt at least every minute so expired blocks leave the list."""
        now = self.clock()
        with self._lock:
            cached = self._payload
            if cached is not None and cached[0] == self._version and now - cached[1] < 60:
                return cached[2]
            actions = [
                {"id": b.id, "action": "block_ip" if b.kind == "ip" else "block_user", "value": b.value,
                 "expires_at": _time(b.expires_at)}
                for b in self._active.values() if b.active(now)
            ]  # fmt: skip
            payload = {"actions_version": self._version, "actions": actions, "hot_events": self.hot_events()}
            self._payload = (self._version, now, payload)
            return payload

    def _changed(self, version: int, own: bool = True) -> None:
        with self._lock:
            if own and self._listening:
                self._own_versions.add(version)
            # max: with replicas, a version heard from another one may already be newer than this change's
            self._version = max(self._version, version)
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that request's loop is gone
                pass

    @property
    def closing(self) -> bool:
        """The server is stopping (:meth:`release_waiters` was called)."""
        return self._closing

    def release_waiters(self) -> None:
        """The server is stopping: answer every held long-poll now, and later ones at once."""
        with self._lock:
            self._closing = True
        self._changed(self._version)

    async def wait_for_change(self, held: int, wait: float) -> None:
        """Return when the actions version differs from ``held``, or after ``wait`` seconds (at once when the
        server is stopping)."""
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            if self._version != held or self._closing:
                return
            self._waiters.add(waiter)
        try:
            with anyio.move_on_after(wait):
                await event.wait()
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    # --- backtest ---------------------------------------------------------------------------------------------

    def backtest(self, playbook: object, since: float, until: float) -> dict[str, Any]:
        """Replay stored events of ``[since, until)`` through a playbook; take no action.

        Bounded: at most :data:`MAX_BACKTEST_EVENTS` events and :data:`BACKTEST_SECONDS` seconds (``truncated``
        then says so and ``scanned_until`` where it stopped), :data:`MAX_BACKTEST_FIRINGS` firings listed.

        :raises PlaybookError: the playbook is invalid.
        """
        pb = parse_playbook(playbook, allow_http_webhooks=True)
        deadline = time.monotonic() + BACKTEST_SECONDS
        scanned = 0
        truncated = False
        last_ts: float | None = None

        def events() -> Iterator[EventRecord]:
            nonlocal scanned, truncated, last_ts
            for chunk in self.store.scan_events(pb.events, since, until, fields=pb.fields):
                for event in chunk:
                    scanned += 1
                    last_ts = event.ts
                    yield event
                if scanned >= MAX_BACKTEST_EVENTS or time.monotonic() > deadline:
                    truncated = True
                    return

        firings: list[dict[str, Any]] = []
        total = 0
        for candidate in replay(pb, events(), max_actors=self.max_actors):
            total += 1
            if len(firings) < MAX_BACKTEST_FIRINGS:
                firings.append({"actor": {"kind": candidate.kind, "value": candidate.value},
                                "at": _time(candidate.at), "count": candidate.count,
                                "event_ids": candidate.event_ids})
        return {
            "firings": firings, "firings_total": total, "events_scanned": scanned, "truncated": truncated,
            "scanned_until": _time(last_ts) if truncated else None,
        }  # fmt: skip

    # --- lifecycle --------------------------------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        return {"webhooks": {"sent": self.webhooks.sent, "failed": self.webhooks.failed,
                             "dropped": self.webhooks.dropped}}

    def close(self) -> None:
        self.webhooks.close()


def parse_file_tables(tables: Mapping[str, Any], *, allow_http_webhooks: bool) -> tuple[list[Playbook], Allowlist]:
    """The ``[[playbook]]`` and ``[allow]`` tables of a playbooks file.

    :raises PlaybookError: the first invalid playbook (every problem of it), a duplicate name, or a bad allowlist.
    """
    from .model import parse_allowlist

    unknown = set(tables) - {"playbook", "allow"}
    if unknown:
        raise PlaybookError(None, [("file", f"unknown tables {sorted(unknown)}; known: [[playbook]], [allow]")])
    items = tables.get("playbook", [])
    if not isinstance(items, list):
        raise PlaybookError(None, [("playbook", "must be an array of tables: [[playbook]]")])
    playbooks: list[Playbook] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        try:
            playbook = parse_playbook(item, allow_http_webhooks=allow_http_webhooks)
        except PlaybookError as exc:
            if exc.name is None:
                exc.name = f"#{index + 1}"
                exc.args = (str(PlaybookError(exc.name, exc.errors)),)
            raise
        if playbook.name in seen:
            raise PlaybookError(playbook.name, [("name", "is used by another playbook in the file")])
        seen.add(playbook.name)
        playbooks.append(playbook)
    allow = parse_allowlist(tables["allow"]) if "allow" in tables else Allowlist()
    return playbooks, allow


def load_playbooks_file(path: str, *, allow_http_webhooks: bool = False) -> tuple[list[Playbook], Allowlist]:
    """Read and validate a TOML playbooks file.

    :raises PlaybookError: invalid content (the message names the playbook, the field and the problem).
    :raises OSError: the file cannot be read.
    """
    import tomllib

    with open(path, "rb") as f:
        try:
            tables = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise PlaybookError(None, [("file", f"{path} is not valid TOML: {exc}")]) from None
    return parse_file_tables(tables, allow_http_webhooks=allow_http_webhooks)
