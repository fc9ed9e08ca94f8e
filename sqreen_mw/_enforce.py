"""Enforcement: the client's current blocks, the checks the adapters and ``identify()`` run, their reports.

The flusher thread hands each new actions payload to :meth:`Enforcer.set_actions`, which builds an immutable
:class:`~sqreen_mw._blocking.Actions` and swaps it in (one attribute assignment); request threads read
:attr:`Enforcer.actions` without a lock. A request pays for client-IP resolution only when the snapshot holds an IP
block (``actions.has_ip_blocks``), and ``identify()`` for a user lookup only when it holds a user block.

Each refusal flags the request context (``ctx.blocked``: events tracked in that request are sent with
``"blocked": true``, which the collector never counts toward a playbook), is counted (``statistics()["blocked"]``)
and reported as ``sq.action.block_ip`` / ``sq.action.block_user`` at most once per actor per minute.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._block_response import BlockResponse
from ._blocking import EMPTY, Actions, Block, build_actions, user_key
from ._context import RequestContext
from ._ip import ClientIPResolver

logger = logging.getLogger("sqreen_mw")

Report = Callable[[str, dict[str, str], Mapping[str, Any] | None, RequestContext | None], None]

__all__ = ["Enforcer", "ReportLimiter", "enforcement_event"]


class Enforcer:
    """The blocks one client enforces.

    :param resolver: the client's IP resolver: its trusted proxies are never blocked.
    :param response: the block response (rendered once).
    :param report: records an enforcement event ``(name, properties, user, ctx)``.
    """

    __slots__ = ("_limiter", "_never_blocked", "_report", "actions", "counts", "resolver", "response")

    def __init__(self, resolver: ClientIPResolver, response: BlockResponse, report: Report) -> None:
        self.resolver = resolver
        self.response = response
        self._report = report
        self._never_blocked = resolver.networks
        self._limiter = ReportLimiter()
        self.actions: Actions = EMPTY
        self.counts = {"ip": 0, "user": 0}

    def set_actions(self, payload: Mapping[str, Any]) -> Actions:
        """Swap in the actions of a collector answer (``actions_version``, ``actions``, ``hot_events``)."""
        version = payload.get("actions_version")
        actions = build_actions(payload.get("actions"), version if type(version) is int else -1,
                                payload.get("hot_events") or (), never_blocked=self._never_blocked, now=time.time())
        self.actions = actions
        return actions

    def refuse_ip(self, ctx: RequestContext) -> Block | None:
        """The block on the request's client IP, or ``None``; a refusal flags ``ctx``, is counted and reported.

        Called by the adapters when ``actions.has_ip_blocks``; never raises (a fault is logged, the request served).
        """
        try:
            address = ctx.client_ip(self.resolver)
            block = self.actions.ip_block(address)
            if block is None:
                return None
            ctx.blocked = block
            self.counts["ip"] += 1
            self._reported(block, address, address, None, ctx)
            return block
        except Exception as exc:  # enforcement must never break the app: serve the request
            logger.error("sqreen_mw block check failed: %s: %s", type(exc).__name__, exc)
            return None

    def user_block(self, user: Mapping[str, Any]) -> Block | None:
        """The block on exactly these identifiers, or ``None`` (cheap when no user is blocked)."""
        actions = self.actions
        return actions.user_block(user) if actions.has_user_blocks else None

    def refuse_user(self, block: Block, user: Mapping[str, Any], ctx: RequestContext | None) -> None:
        """Flag the request of a blocked user, count and report it (``identify()`` then raises ``UserBlocked``)."""
        if ctx is not None:
            ctx.blocked = block
        self.counts["user"] += 1
        try:
            self._reported(block, user_key(user), user, user, ctx)
        except Exception as exc:
            logger.error("sqreen_mw could not report a blocked user: %s: %s", type(exc).__name__, exc)

    def _reported(self, block: Block, key: Any, actor: Any, user: Mapping[str, Any] | None,
                  ctx: RequestContext | None) -> None:
        if self._limiter.allow((block.kind, key), time.monotonic()):
            name, properties = enforcement_event(block, actor)
            self._report(name, properties, user, ctx)

    def too_late(self, ctx: RequestContext) -> None:
        """A user was refused after the response started: it is let finish (the next request is refused)."""
        logger.warning("sqreen_mw refused a blocked user (block %s) but the response had already started: it was "
                       "let finish; call identify() before the response starts to refuse it",
                       getattr(ctx.blocked, "id", "?"))

    def statistics(self) -> dict[str, Any]:
        """Refusals by kind, reports left out by the rate limit, the actions version held."""
        return {"blocked": dict(self.counts), "block_reports_suppressed": self._limiter.suppressed,
                "actions_version": self.actions.version}


def enforcement_event(block: Block, actor: str | Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The name and properties of the event that reports one enforcement: ``sq.action.block_ip`` with the client IP,
    or ``sq.action.block_user`` with the identifier map as compact JSON text (properties hold scalars only)."""
    if block.kind == "ip":
        return "sq.action.block_ip", {"block_id": block.id, "actor": str(actor)}
    text = actor if isinstance(actor, str) else json.dumps(dict(actor), sort_keys=True, separators=(",", ":"))
    return "sq.action.block_user", {"block_id": block.id, "actor": text}


class ReportLimiter:
    """At most one enforcement event per actor per ``interval`` seconds, so a flood cannot fill the queue.

    Memory is bounded: at most ``max_actors`` actors are remembered. When that many were reported within the last
    ``interval``, further new actors are not reported until the oldest entry ages out (counted in ``suppressed``,
    like the repeats of known actors).

    :param interval: seconds between two reports of one actor.
    :param max_actors: how many actors are remembered at most.
    """

    __slots__ = ("_full_until", "_lock", "_seen", "interval", "max_actors", "suppressed")

    def __init__(self, interval: float = 60.0, max_actors: int = 10_000) -> None:
        self.interval = interval
        self.max_actors = max_actors
        self.suppressed = 0
        self._seen: dict[Any, float] = {}
        self._full_until = float("-inf")
        self._lock = threading.Lock()  # request threads share it; held for a few dict operations, never across I/O

    def allow(self, actor: Any, now: float) -> bool:
        """Whether to report ``actor`` (hashable) now; ``now`` is ``time.monotonic()``."""
        with self._lock:
            last = self._seen.get(actor)
            if last is not None and now - last < self.interval:
                self.suppressed += 1
                return False
            if last is None and len(self._seen) >= self.max_actors:
                if now < self._full_until:
                    self.suppressed += 1
                    return False
                horizon = now - self.interval
                self._seen = {key: at for key, at in self._seen.items() if at > horizon}
                if len(self._seen) >= self.max_actors:  # all still fresh: sweep again when the oldest ages out
                    self._full_until = min(self._seen.values()) + self.interval
                    self.suppressed += 1
                    return False
            self._seen[actor] = now
            return True
