"""Playbook counters shared by replicas (filled in below)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._records import EventRecord


class HitTables:
    def _hits_init(self) -> None:
        pass

    def _store_hits(self, conn: Any, fresh: Sequence[EventRecord]) -> None:
        pass
