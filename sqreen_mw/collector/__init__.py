"""The embedded sqreen_mw collector: a Starlette app that receives agent events into SQLite or PostgreSQL.

Run it with ``sqreen-mw serve`` (see :mod:`sqreen_mw.collector.cli`), or build the ASGI app yourself with
:func:`create_app`. The wire protocol is documented in ``docs/protocol.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._api import AdminApi
from ._http import BODY_READ_TIMEOUT, JSON, http_error, storage_unavailable
from ._ingest import PROTOCOL_VERSION, AgentEndpoints
from ._records import StorageUnavailable
from ._retention import Retention
from ._sqlite import SQLiteStorage
from .automation import Allowlist, Automation, Playbook
from .automation.api import AutomationApi
from .postgres import UnstorableText

if TYPE_CHECKING:
    from .postgres.storage import PostgresStorage

__all__ = ["PROTOCOL_VERSION", "create_app", "open_storage"]


async def _healthz(request: Request) -> Response:
    return JSON({"status": "ok"})


async def _unstorable(request: Request, exc: Exception) -> Response:
    return JSON({"error": str(exc)}, status_code=422)


def open_storage(db: str) -> SQLiteStorage | PostgresStorage:
    """The store ``db`` names: a ``postgresql://`` URL opens :class:`~.postgres.storage.PostgresStorage` (the
    ``postgres`` extra), anything else is a SQLite file.

    :raises ValueError: the URL needs the ``postgres`` extra, which is not installed.
    """
    from .postgres import is_postgres_url

    if not is_postgres_url(db):
        return SQLiteStorage(db)
    try:
        from .postgres.storage import PostgresStorage
    except ImportError:
        raise ValueError("a postgresql:// database needs the postgres extra: "
                         "pip install 'sqreen_mw[postgres]'") from None
    return PostgresStorage(db)


def create_app(
    *,
    db_path: str,
    api_keys: Mapping[str, str],
    admin_token: str | None,
    max_body_bytes: int = 10 * 1024 * 1024,
    max_batch_events: int = 10_000,
    heartbeat_delay: int | None = None,
    playbooks: Sequence[Playbook] = (),
    allow: Allowlist | None = None,
    allow_http_webhooks: bool = False,
    max_parallel_batches: int = 2,
    body_timeout: float = BODY_READ_TIMEOUT,
    retention: float | None = None,
) -> Starlette:
    """Build the collector ASGI app, opening (or creating) its SQLite database.

    The database is closed by the app's lifespan shutdown, or with ``app.state.storage.close()`` when the app is
    driven without lifespan (e.g. through ``httpx.ASGITransport``).

    :param db_path: SQLite database file, or a ``postgresql://`` URL (several replicas may share that database).
    :param api_keys: API key -> app name accepted at agent login; an empty name lets the agent name its app
        (login ``app_name``, else ``"default"``).
    :param admin_token: bearer token of the admin API; None disables that API (every call answers 401).
    :param max_body_bytes: largest batch body, compressed and once decompressed (larger: 413).
    :param max_batch_events: most events per batch (more: 413).
    :param heartbeat_delay: seconds between heartbeats told to agents at login; None lets them use their default.
    :param playbooks: the playbooks of the ``--playbooks`` file (see :func:`.automation.load_playbooks_file`).
    :param allow: the file's allowlist.
    :param allow_http_webhooks: accept plain-http webhook URLs beyond loopback in API-made playbooks.
    :param max_parallel_batches: most batches decoded at once, bounding memory (~40 MB each at most); a batch
        waiting more than 5 s for a slot is answered 503 with ``Retry-After``.
    :param body_timeout: seconds a client has to send its body once the headers are in (longer: 408).
    :param retention: seconds events are kept; older ones are deleted at start and hourly (by the lifespan);
        None keeps everything.
    :raises ValueError: no API key, an empty key or admin token, or a limit below 1.
    :return: the Starlette application; ``app.state.storage`` is its storage, ``app.state.agents`` its
        :class:`~sqreen_mw.collector._ingest.AgentEndpoints`, ``app.state.automation`` its
        :class:`~.automation.Automation` (playbooks, blocks, firings).
    """
    if not api_keys:
        raise ValueError("create_app() needs at least one API key in api_keys")
    if any(not key for key in api_keys):
        raise ValueError("api_keys must not contain an empty key")
    if admin_token is not None and not admin_token.strip():
        raise ValueError("admin_token must be a non-empty string, or None to disable the admin API")
    if max_body_bytes < 1 or max_batch_events < 1 or max_parallel_batches < 1:
        raise ValueError("max_body_bytes, max_batch_events and max_parallel_batches must be at least 1")
    if not body_timeout > 0:
        raise ValueError("body_timeout must be a positive number of seconds")
    if retention is not None and retention <= 0:
        raise ValueError("retention must be a positive number of seconds, or None to keep every event")
    if heartbeat_delay is not None and heartbeat_delay < 1:
        raise ValueError("heartbeat_delay must be at least 1 second, or None")

    storage = open_storage(db_path)
    try:
        automation = Automation(storage, playbooks=playbooks, allow=allow, allow_http_webhooks=allow_http_webhooks)
    except BaseException:
        storage.close()
        raise
    agents = AgentEndpoints(
        storage,
        api_keys,
        automation=automation,
        heartbeat_delay=heartbeat_delay,
        max_body_bytes=max_body_bytes,
        max_batch_events=max_batch_events,
        max_parallel_batches=max_parallel_batches,
        body_timeout=body_timeout,
    )
    admin = AdminApi(storage, admin_token)
    from .explorer import Explorer  # jinja2 (the collector extra): not needed by `sqreen-mw import`

    explorer = Explorer(storage, admin_token, automation=automation, heartbeat_delay=heartbeat_delay)

    sweeper = None if retention is None else Retention(storage, retention)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if sweeper is not None:
            sweeper.start()
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.stop()
            automation.close()
            storage.close()

    app = Starlette(
        routes=[
            Route("/healthz", _healthz, methods=["GET"]),
            *agents.routes(),
            *admin.routes(),
            *AutomationApi(automation, storage, admin_token).routes(),
            *explorer.routes(),
        ],
        exception_handlers={
            HTTPException: http_error, StorageUnavailable: storage_unavailable, UnstorableText: _unstorable,
        },
        lifespan=lifespan,
    )
    app.state.storage = storage
    app.state.agents = agents
    app.state.automation = automation
    app.state.retention = sweeper
    return app
