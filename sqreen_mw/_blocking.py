"""The blocks this process enforces: an immutable snapshot built from the collector's ``actions`` list.

The flusher builds a new :class:`Actions` whenever the collector sends a new actions version and swaps it onto the
client in one attribute assignment; request threads read that attribute and call :meth:`Actions.ip_block` /
:meth:`Actions.user_block` without a lock: the blocks of a snapshot never change (only its answer cache, through
atomic dict operations).

IP lookup: every IPv4 and IPv6 network is an integer range (IPv6 keys are offset by 2**32 so both families share one
sorted list), the ranges are flattened at build time into disjoint segments, and finding an address is one
bisection over their starts (C code, ~log2(2n) integer comparisons) after parsing the address text with
``inet_pton``. Each snapshot remembers the answer per address text (bounded), so a returning client costs one dict
lookup whatever the number of blocks; only an address new to the snapshot pays the parse and the bisection. CIDR
blocks are either nested or disjoint, so each segment is covered by a known set of blocks; it keeps the one that
expires last: when that one has expired, every block covering the segment has.

Expiry (``expires_at``) is checked at lookup time against ``time.time()``, so a block ends on time even when no newer
list arrives (collector down). Loopback, unspecified and the app's own trusted proxies (DESIGN §4) are carved out of
the segments at build time: no action list can block them (blocking the load balancer blocks everyone).

Entries the SDK cannot use (not an object, no id, a value that is not a network or identifier map, a bad
``expires_at``) are skipped and counted in :attr:`Actions.invalid`, with one warning per list built; unknown
``action`` kinds are ignored (forward compatibility).
"""

from __future__ import annotations

import heapq
import logging
import socket
import time
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._ip import parse_network

logger = logging.getLogger("sqreen_mw")

__all__ = ["EMPTY", "NEVER_BLOCKED", "Actions", "Block", "address_key", "build_actions", "user_key"]

#: Networks no action can block, whatever the list says: loopback and the unspecified addresses.
NEVER_BLOCKED: tuple[str, ...] = ("127.0.0.0/8", "0.0.0.0/32", "::1/128", "::/128")

_V6_OFFSET = 1 << 32  # IPv6 keys follow every IPv4 key: one sorted list serves both families
_MAPPED_LO = 0xFFFF_0000_0000
_MAPPED_HI = 0xFFFF_FFFF_FFFF
_CACHE_SIZE = 8192  # addresses remembered per snapshot (about 1 MiB at most)
_NOT_AN_ADDRESS = -1  # sorts before every segment: bisect finds nothing


@dataclass(frozen=True, slots=True)
class Block:
    """One enforced action.

    :param id: the action's id on the collector (``b_...``), reported in enforcement events.
    :param kind: ``"ip"`` or ``"user"``.
    :param value: the CIDR (canonical, e.g. ``"203.0.113.0/24"``) or the identifier map.
    :param expires_at: epoch seconds after which the block no longer applies, or ``None`` (permanent).
    """

    id: str
    kind: str
    value: Any
    expires_at: float | None

    def active(self, now: float) -> bool:
        """Whether the block still applies at ``now`` (epoch seconds)."""
        return self.expires_at is None or now < self.expires_at


def address_key(text: str) -> int:
    """The integer key of an address in the shared IPv4/IPv6 key space, or -1 when ``text`` is not an address.

    Accepts what :class:`~sqreen_mw._ip.ClientIPResolver` returns (canonical IPv4 or IPv6 text); IPv4-mapped IPv6
    becomes the IPv4 key.
    """
    return _parse_key(text)


def _parse_key(text: str) -> int:
    try:
        if ":" in text:
            value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
            if _MAPPED_LO <= value <= _MAPPED_HI:
                return value - _MAPPED_LO
            return value + _V6_OFFSET
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError, TypeError):
        return _NOT_AN_ADDRESS


def _range(cidr: str) -> tuple[int, int, str] | None:
    """(first key, last key, canonical CIDR) of a network, or ``None`` when ``cidr`` is not one."""
    # Fast path for the collector's canonical "address/prefix" (a 10,000-block list builds in tens of ms, and the
    # flusher thread holds the GIL meanwhile); anything unusual goes through ipaddress.
    text, slash, plen = cidr.partition("/")
    if (plen.isascii() and plen.isdigit() and len(plen) <= 3) or not slash:
        family, bits = (socket.AF_INET6, 128) if ":" in text else (socket.AF_INET, 32)
        prefix = int(plen) if slash else bits
        try:
            value = int.from_bytes(socket.inet_pton(family, text), "big")
        except (OSError, ValueError):
            value = -1
        # (IPv4-mapped and IPv4-compatible spellings are left to ipaddress, which unmaps or prints them its way)
        if prefix <= bits and (value >> 32 if bits == 128 else value) > 0 and not _MAPPED_LO <= value <= _MAPPED_HI:
            host = (1 << (bits - prefix)) - 1
            start = value & ~host
            canonical = f"{socket.inet_ntop(family, start.to_bytes(bits // 8, 'big'))}/{prefix}"
            if bits == 128:
                return start + _V6_OFFSET, start + host + _V6_OFFSET, canonical
            return start, start + host, canonical
    net = parse_network(cidr)
    if net is None:
        return None
    start = int(net.network_address)
    end = int(net.broadcast_address)
    if net.version == 6:
        start, end = start + _V6_OFFSET, end + _V6_OFFSET
    return start, end, str(net)


def user_key(identifiers: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """The lookup key of an identifier map: integers and their decimal text are the same identifier."""
    return frozenset((k, v if type(v) is str else str(v)) for k, v in identifiers.items())


def _expiry(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expires_at must be an ISO 8601 string or null, got {type(value).__name__}")
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


_MISS = Block("", "", None, None)  # "not looked up yet" in an answer cache


class Actions:
    """An immutable set of blocks, as built by :func:`build_actions`.

    Attributes: ``version`` (the collector's ``actions_version``, ``-1`` for none yet), ``hot_events`` (names sent
    at once), ``has_ip_blocks`` / ``has_user_blocks`` (so a request pays for client-IP resolution only when some IP
    block exists), ``invalid`` (entries skipped), ``blocks`` (every usable block, in list order).
    """

    __slots__ = ("_found", "_owners", "_starts", "_users", "blocks", "has_ip_blocks", "has_user_blocks", "hot_events",
                 "invalid", "version")

    def __init__(self, version: int, ip_blocks: Iterable[tuple[int, int, Block]], user_blocks: Iterable[Block],
                 hot_events: Iterable[str], invalid: int, never_blocked: Iterable[tuple[int, int]]) -> None:
        ranges: list[tuple[int, int, Block | None]] = list(ip_blocks)
        self.version = version
        self.hot_events = frozenset(hot_events)
        self.invalid = invalid
        users: dict[frozenset[tuple[str, str]], Block] = {}
        for block in user_blocks:
            key = user_key(block.value)
            if key not in users or _later(block, users[key]):
                users[key] = block
        self.blocks = (*(r[2] for r in ranges if r[2] is not None), *users.values())
        self._users = users
        self.has_ip_blocks = bool(ranges)
        self.has_user_blocks = bool(users)
        if ranges:
            ranges.extend((start, end, None) for start, end in never_blocked)
            self._starts, self._owners = _segments(ranges)
        else:
            self._starts, self._owners = [], []
        # address text -> covering block or None, for this snapshot's segments; a returning client costs one dict
        # lookup instead of a parse and a bisection. Bounded; dict operations are atomic, so no lock.
        self._found: dict[str | None, Block | None] = {}

    def ip_block(self, address: str | None, now: float | None = None) -> Block | None:
        """The active block covering ``address`` (canonical text, as the resolver returns it), or ``None``.

        :param now: epoch seconds, default ``time.time()`` (read only when a block covers the address); a block
            whose ``expires_at`` is past no longer applies.
        """
        block = self._found.get(address, _MISS)
        if block is _MISS:
            block = self._find(address)
        if block is None:
            return None
        expires_at = block.expires_at
        if expires_at is not None and (time.time() if now is None else now) >= expires_at:
            return None
        return block

    def _find(self, address: str | None) -> Block | None:
        if address is None:
            return None
        i = bisect_right(self._starts, _parse_key(address)) - 1
        block = self._owners[i] if i >= 0 else None
        found = self._found
        if len(found) >= _CACHE_SIZE:  # a flood of distinct addresses cannot grow it
            found.clear()
        found[address] = block
        return block

    def user_block(self, identifiers: Mapping[str, Any] | None, now: float | None = None) -> Block | None:
        """The active block on exactly these identifiers (same keys, same values), or ``None``.

        :param now: epoch seconds, default ``time.time()``.
        """
        if not identifiers or not self._users:
            return None
        block = self._users.get(user_key(identifiers))
        if block is None or not block.active(time.time() if now is None else now):
            return None
        return block

    def __repr__(self) -> str:
        return f"<Actions version={self.version} blocks={len(self.blocks)} hot_events={len(self.hot_events)}>"


def _later(a: Block, b: Block) -> bool:
    if a.expires_at is None:
        return b.expires_at is not None
    return b.expires_at is not None and a.expires_at > b.expires_at


def _segments(ranges: list[tuple[int, int, Block | None]]) -> tuple[list[int], list[Block | None]]:
    """Disjoint segments (sorted starts, owners) covering every range; a segment's owner is None (not blocked:
    outside every block, or inside an exemption) or the covering block that expires last."""
    # (position, order, index): removals (order 0) apply before additions (order 1) at the same position.
    points: list[tuple[int, int, int]] = []
    for i, (start, end, _) in enumerate(ranges):
        points.append((start, 1, i))
        points.append((end + 1, 0, i))
    points.sort()
    heap: list[tuple[int, float, int]] = []  # (class, -expiry, range index): the top owns the segment
    live: set[int] = set()
    starts: list[int] = []
    owners: list[Block | None] = []
    n = len(points)
    j = 0
    while j < n:
        pos = points[j][0]
        while j < n and points[j][0] == pos:
            _, order, i = points[j]
            if order:
                live.add(i)
                owner = ranges[i][2]
                # exemptions first, then permanent blocks, then the block that expires last
                if owner is None:
                    heapq.heappush(heap, (0, 0.0, i))
                elif owner.expires_at is None:
                    heapq.heappush(heap, (1, 0.0, i))
                else:
                    heapq.heappush(heap, (2, -owner.expires_at, i))
            else:
                live.discard(i)
            j += 1
        while heap and heap[0][2] not in live:
            heapq.heappop(heap)
        owner = ranges[heap[0][2]][2] if heap else None
        if owners and owners[-1] is owner:
            continue  # the same owner goes on: one segment
        starts.append(pos)
        owners.append(owner)
    return starts, owners


def build_actions(
    payload: Any,
    version: int = -1,
    hot_events: Any = (),
    *,
    never_blocked: Iterable[str] = (),
    now: float | None = None,
) -> Actions:
    """An :class:`Actions` snapshot from a protocol ``actions`` list (docs/protocol.md, "Actions").

    :param payload: the ``actions`` list; anything else counts as empty (and is logged).
    :param version: the ``actions_version`` the list came with.
    :param hot_events: the ``hot_events`` names; non-string entries are ignored.
    :param never_blocked: CIDRs that no block may cover (the app's trusted proxies), on top of
        :data:`NEVER_BLOCKED`.
    :param now: when given, blocks already expired at ``now`` are left out (expiry is checked at lookup anyway).
    :return: the snapshot; it never raises on bad input.
    """
    problems: list[str] = []
    ip_blocks: list[tuple[int, int, Block]] = []
    user_blocks: list[Block] = []
    if not isinstance(payload, list):
        if payload is not None:
            problems.append(f"actions must be a list, got {type(payload).__name__}")
        payload = []
    for index, entry in enumerate(payload):
        try:
            found = _block(entry)
        except (ValueError, TypeError) as exc:
            problems.append(f"actions[{index}]: {exc}")
            continue
        if found is None:
            continue
        block, where = found
        if now is not None and not block.active(now):
            continue
        if where is None:
            user_blocks.append(block)
        else:
            ip_blocks.append((where[0], where[1], block))
    exempt: list[tuple[int, int]] = []
    for cidr in (*NEVER_BLOCKED, *never_blocked):
        span = _range(cidr)
        if span is not None:
            exempt.append(span[:2])
    names = [name for name in hot_events if isinstance(name, str)] if isinstance(hot_events, list | tuple) else []
    if problems:
        logger.warning("sqreen_mw skipped %d unusable action(s) of version %s: %s", len(problems), version,
                       "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else ""))
    return Actions(version, ip_blocks, user_blocks, names, len(problems), exempt)


def _block(entry: Any) -> tuple[Block, tuple[int, int] | None] | None:
    if not isinstance(entry, Mapping):
        raise TypeError(f"an action must be an object, got {type(entry).__name__}")
    kind = entry.get("action")
    if kind not in ("block_ip", "block_user"):
        return None  # a kind this SDK does not know: ignored, not an error
    action_id = entry.get("id")
    if not isinstance(action_id, str) or not action_id:
        raise ValueError(f"{kind} needs a non-empty string id, got {action_id!r}")
    expires_at = _expiry(entry.get("expires_at"))
    value = entry.get("value")
    if kind == "block_ip":
        found = _range(value) if isinstance(value, str) else None
        if found is None:
            raise ValueError(f"block_ip {action_id}: value must be an IP address or CIDR, got {value!r}")
        return Block(action_id, "ip", found[2], expires_at), found[:2]
    if (
        not isinstance(value, Mapping)
        or not value
        or not all(isinstance(k, str) and type(v) in (str, int) for k, v in value.items())
    ):
        raise ValueError(f"block_user {action_id}: value must be a non-empty map of str to str or int, got {value!r}")
    return Block(action_id, "user", dict(value), expires_at), None


EMPTY = build_actions([], -1)
