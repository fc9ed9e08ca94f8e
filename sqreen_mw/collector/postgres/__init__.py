"""PostgreSQL storage for the collector: several replicas share one database (``sqreen-mw serve --db postgresql://``).

This package's top level imports nothing optional: :mod:`.storage` needs the ``postgres`` extra (psycopg 3 and
psycopg_pool) and is imported only when a ``postgresql://`` URL is given.
"""

from __future__ import annotations

import re

__all__ = ["RETRY_AFTER_SECONDS", "StorageUnavailable", "UnstorableText", "is_postgres_url", "redact"]

#: What a collector whose database is unreachable tells agents to wait before retrying.
RETRY_AFTER_SECONDS = 5


# One exception for every store: the database cannot take the request now (the collector answers 503).
from .._records import StorageUnavailable  # noqa: E402


class UnstorableText(ValueError):
    """A value PostgreSQL's text cannot hold (a NUL character in an event's name, id, app or client IP; inside the
    JSON fields it is escaped and fine): the collector answers 422, nothing of the batch is stored."""


def is_postgres_url(db: str) -> bool:
    """Whether ``db`` names a PostgreSQL database (``postgresql://`` or ``postgres://``) rather than a SQLite file."""
    return db.startswith(("postgresql://", "postgres://"))


def redact(db: str) -> str:
    """``db`` without the password a URL may carry, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", db)
