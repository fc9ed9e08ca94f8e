"""Folding the rollup shards of past hours into one row per key.

Every batch adds to one of :data:`~._explorer.SHARDS` rows per rollup key, so that concurrent batches seldom wait
for each other on the current minute's and hour's rows; the views sum the shards. Once an hour is over, nothing
contends for its rows any more, and its shards are folded into shard 0: the overview of a long range then reads one
row per key instead of up to eight. A fold moves the counts of a bounded range of hours in one transaction (readers
see the counts before or after it, never half), under an advisory lock that one replica at a time holds (the others
skip), and records in ``meta`` how far it got, so each hour is read once. An event that arrives after its hour was
folded (an old batch retried late, an import) adds to a shard row again: still counted, just not folded.
"""

from __future__ import annotations

from typing import Any

from .._sqlite_rollups import KIND_APP, KIND_IP, KIND_LOGIN, KIND_NAME, KIND_USER

__all__ = ["FOLD_EVERY", "fold_rollups"]

#: Seconds between two folds by one replica (checked after a stored batch).
FOLD_EVERY = 60.0
_LOCK_KEY = 0x5371_6D77_0002  # pg_advisory_xact_lock key of folds ("Sqmw", 2)
_MAX_HOURS = 6  # hours folded per transaction at most, so a first fold of a large database is many short ones
# Every kind of explorer_hour: the primary key's first column, so that an hour range is an index walk per kind.
_KINDS = [KIND_NAME, KIND_IP, KIND_USER, KIND_APP, KIND_LOGIN]
_META_KEY = "rollups_folded_hour"

# The shard rows are locked in key order and those a batch in flight holds are skipped (left for a later fold, or
# for ever if the range is then behind the mark): a fold never waits for a batch, so it cannot deadlock with one.
_FOLD_MINUTES = """
WITH moved AS (
    DELETE FROM explorer_minute WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM explorer_minute WHERE minute >= %s AND minute < %s AND shard <> 0
        ORDER BY minute, name, shard FOR UPDATE SKIP LOCKED
    )) RETURNING minute, name, n
)
INSERT INTO explorer_minute (minute, name, n, shard)
SELECT minute, name, sum(n), 0 FROM moved GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (minute, name, shard) DO UPDATE SET n = explorer_minute.n + excluded.n
"""
_FOLD_HOURS = """
WITH moved AS (
    DELETE FROM explorer_hour WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM explorer_hour WHERE kind = ANY(%s) AND hour >= %s AND hour < %s AND shard <> 0
        ORDER BY kind, hour, value, shard FOR UPDATE SKIP LOCKED
    )) RETURNING kind, hour, value, n
)
INSERT INTO explorer_hour (kind, hour, value, n, shard)
SELECT kind, hour, value, sum(n), 0 FROM moved GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
ON CONFLICT (kind, hour, value, shard) DO UPDATE SET n = explorer_hour.n + excluded.n
"""


def fold_rollups(conn: Any, now: float) -> int | None:
    """Fold the shards of the hours that ended before the previous one (``now`` in epoch seconds), up to
    ``_MAX_HOURS`` of them, in the caller's transaction; return the hour folded up to, or None when another replica
    is folding (or there is nothing to fold)."""
    if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)).fetchone()[0]:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = %s", (_META_KEY,)).fetchone()
    start = int(row[0]) if row else conn.execute("SELECT min(hour) FROM explorer_hour WHERE kind = 0").fetchone()[0]
    end = int(now // 3600) - 1  # the hour before the current one may still receive batches in flight
    if start is None or start >= end:
        return None
    end = min(end, int(start) + _MAX_HOURS)
    # Minutes first, then hours, each in key order: as a batch adds to them (_explorer.COUNT_FRESH).
    conn.execute(_FOLD_MINUTES, (start * 60, end * 60))
    conn.execute(_FOLD_HOURS, (_KINDS, start, end))
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (_META_KEY, end),
    )
    return end
