"""Playbook counters shared by replicas: the ``playbook_hits`` table, counted per actor in SQL.

Each replica counts in memory only the events it received, so with several replicas an attacker who spreads his
attempts across them would stay under every replica's threshold. With PostgreSQL, automation writes one hit per
fresh matching event (playbook, actor, ts, event id, distinct value; the conditions are still evaluated in Python)
and counts the touched actors in SQL. A firing is decided under ``pg_advisory_xact_lock`` keyed by (playbook,
actor), held until the firing is stored: the replica that waited then sees that firing (the events it consumed and
the cooldown it started) and does not fire again. Hits older than the longest window are deleted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["HitCount", "HitTables"]

# (playbook, actor text, ts, event id, distinct value text or None)
Hit = tuple[str, str, float, str, str | None]

_INSERT_HITS = """
INSERT INTO playbook_hits (playbook, actor, ts, event_id, distinct_value)
SELECT * FROM unnest(%b::text[], %b::text[], %b::float8[], %b::text[], %b::text[]) ON CONFLICT DO NOTHING
"""
_LAST_FIRING = "SELECT max(at) FROM firings WHERE playbook = %s AND actor_key = %s"
# The first ``threshold`` hits (or distinct values) after the last firing: the events that crossed the threshold,
# as the in-memory counter, which fires at the event that crosses it, names them.
_COUNT = """
SELECT ts, event_id FROM playbook_hits WHERE playbook = %s AND actor = %s AND ts >= %s AND ts > %s
ORDER BY ts, event_id LIMIT %s
"""
_COUNT_DISTINCT = """
SELECT ts, event_id FROM (
    SELECT DISTINCT ON (distinct_value) ts, event_id FROM playbook_hits
    WHERE playbook = %s AND actor = %s AND ts >= %s AND ts > %s AND distinct_value IS NOT NULL
    ORDER BY distinct_value, ts, event_id
) AS first_seen ORDER BY ts, event_id LIMIT %s
"""
_BLOCKING_FIRINGS = """
SELECT at FROM firings WHERE playbook = %s AND actor_key = %s AND at > %s AND responses LIKE '%%"block_id":"b\\_%%'
ORDER BY at
"""


@dataclass(frozen=True, slots=True)
class HitCount:
    """What the shared counter says about one actor, under its lock: the count (capped at the threshold) and the
    counted events, oldest first; the times of its recent firings that blocked (escalation); and whether it is in
    its cooldown."""

    count: int
    event_ids: list[str]
    blocking_firings: list[float]
    in_cooldown: bool


def _columns(hits: Sequence[Hit]) -> list[list[Any]]:
    return [list(column) for column in zip(*hits, strict=True)]


class HitTables:
    """The shared-counter methods of :class:`~.storage.PostgresStorage`."""

    #: Tells automation to count in the store rather than in memory.
    shared_counters = True
    _tx: Callable[[], Any]

    def add_hits(self, hits: Sequence[Hit]) -> None:
        """Store hits (one multi-row insert; a hit already stored is skipped)."""
        if hits:
            with self._tx() as conn:
                conn.execute(_INSERT_HITS, _columns(hits))

    def replace_hits(self, playbook: str, hits: Sequence[Hit]) -> None:
        """Make ``hits`` the playbook's hits (its definition changed, or it is new)."""
        with self._tx() as conn:
            conn.execute("DELETE FROM playbook_hits WHERE playbook = %s", (playbook,))
            if hits:
                conn.execute(_INSERT_HITS, _columns(hits))

    def over_threshold(self, playbook: str, actors: Sequence[str], since: float, threshold: int, *,
                       distinct: bool) -> list[str]:
        """The actors with at least ``threshold`` hits (or distinct values) since ``since``, firings not considered:
        the only ones worth counting exactly under their lock."""
        measure = "count(DISTINCT distinct_value)" if distinct else "count(*)"
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT actor FROM playbook_hits WHERE playbook = %s AND actor = ANY(%s) AND ts >= %s"  # noqa: S608
                f" GROUP BY actor HAVING {measure} >= %s", (playbook, list(actors), since, threshold),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def prune_hits(self, before: float) -> int:
        """Delete hits older than ``before`` (beyond every playbook's window); return how many."""
        with self._tx() as conn:
            return int(conn.execute("DELETE FROM playbook_hits WHERE ts < %s", (before,)).rowcount)

    @contextlib.contextmanager
    def hit_lock(
        self, playbook: str, actor: str, *, now: float, window: float, threshold: int, distinct: bool,
        cooldown: float, escalation_window: float,
    ) -> Iterator[HitCount]:
        """Lock (playbook, actor) across replicas and count its hits; the lock is held until the block ends, so a
        firing stored meanwhile (through any connection) is seen by the next holder."""
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{playbook}\x1f{actor}",))
            last = conn.execute(_LAST_FIRING, (playbook, actor)).fetchone()[0]
            consumed = float("-inf") if last is None else float(last)
            rows = conn.execute(_COUNT_DISTINCT if distinct else _COUNT,
                                (playbook, actor, now - window, consumed, threshold)).fetchall()
            blocking = [float(r[0]) for r in conn.execute(_BLOCKING_FIRINGS,
                                                          (playbook, actor, now - escalation_window))]
            yield HitCount(len(rows), [str(r[1]) for r in rows], blocking,
                           last is not None and now - float(last) < cooldown)
