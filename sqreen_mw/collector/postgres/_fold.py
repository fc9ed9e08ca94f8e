"""Folding the rollup counts into one row per key.

Every batch appends its counts to the delta tables (:data:`~._explorer.DELTA_TABLES`); a fold moves all the deltas
committed so far into the keyed tables' shard 0, summed per key (a delete and an upsert in one transaction: a view,
one statement, reads each count once, as a delta or as a keyed row). Only folds write the keyed rows, one replica at
a time (an advisory lock; the others skip), so a fold waits for no batch and no batch for a fold, and a key seen in
many batches between two folds is counted up once.

Schema version 4's batches added to one of :data:`~._explorer.SHARDS` rows per rollup key instead (so that
concurrent batches seldom waited for each other on the current minute's and hour's rows); the views sum the shards.
Rows of shards other than 0 are folded into shard 0 once their hour is over: a bounded range of hours per
transaction, rows a batch in flight holds skipped, and ``meta`` records how far it got, so each hour is read once.
"""

from __future__ import annotations

from typing import Any

from .._sqlite_rollups import KIND_APP, KIND_IP, KIND_LOGIN, KIND_NAME, KIND_USER

__all__ = ["FOLD_CHECK", "FOLD_EVERY", "fold_rollups"]

#: Seconds between two folds, whichever replica makes them (``meta`` keeps the time of the last): the deltas of that
#: many seconds are what the overview reads besides the keyed rows; the longer, the more often a key seen by many
#: batches is counted up once for all of them.
FOLD_EVERY = 5.0
#: Seconds between two looks of a replica at whether a fold is due (after a stored batch).
FOLD_CHECK = 1.0
_LOCK_KEY = 0x5371_6D77_0002  # pg_advisory_xact_lock key of folds ("Sqmw", 2)
_MAX_HOURS = 6  # hours folded per transaction at most, so a first fold of a large database is many short ones
# Every kind of explorer_hour: the primary key's first column, so that an hour range is an index walk per kind.
_KINDS = [KIND_NAME, KIND_IP, KIND_USER, KIND_APP, KIND_LOGIN]
_META_KEY = "rollups_folded_hour"
_META_AT = "rollups_folded_at"  # epoch seconds of the last fold

# The shard rows are locked in key order and those a batch in flight holds are skipped (left for a later fold, or
# for ever if the range is then behind the mark): a fold never waits for a batch, so it cannot deadlock with one.
# The deltas a fold sees are those committed before its statement began; later ones wait for the next fold. Keys in
# order, as the folds of shards below (and the batches of schema version 4, if any replica still runs it) lock them.
_FOLD_MINUTE_DELTAS = """
WITH moved AS (DELETE FROM explorer_minute_delta RETURNING minute, name, n)
INSERT INTO explorer_minute (minute, name, n, shard)
SELECT minute, name, sum(n), 0 FROM moved GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (minute, name, shard) DO UPDATE SET n = explorer_minute.n + excluded.n
"""
_FOLD_HOUR_DELTAS = """
WITH moved AS (DELETE FROM explorer_hour_delta RETURNING kind, hour, value, n)
INSERT INTO explorer_hour (kind, hour, value, n, shard)
SELECT kind, hour, value, sum(n), 0 FROM moved GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
ON CONFLICT (kind, hour, value, shard) DO UPDATE SET n = explorer_hour.n + excluded.n
"""
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


def fold_rollups(conn: Any, now: float, every: float = 0.0) -> int | None:
    """Fold the deltas, then the shards of the hours that ended before the previous one (``now`` in epoch seconds),
    up to ``_MAX_HOURS`` of them, in the caller's transaction, unless the last fold (by any replica) was less than
    ``every`` seconds before ``now``; return the hour the shards are folded up to, or None when another replica is
    folding (or the last fold is too recent, or there were no shards to fold)."""
    if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)).fetchone()[0]:
        return None
    if every > 0:
        row = conn.execute("SELECT value FROM meta WHERE key = %s", (_META_AT,)).fetchone()
        if row is not None and 0 <= now - int(row[0]) < every:
            return None
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (_META_AT, int(now)),
    )
    conn.execute(_FOLD_MINUTE_DELTAS)
    conn.execute(_FOLD_HOUR_DELTAS)
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
