from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from sqreen_mw.collector import create_app

from ..postgres_server import postgres_server, postgres_url  # noqa: F401 - fixtures
from ._helpers import ADMIN, API_KEY, BOUND_KEY


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The collector's database, once per store: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "events.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def app(db: str) -> Iterator[Starlette]:
    app = create_app(
        db_path=db,
        api_keys={API_KEY: "", BOUND_KEY: "shop"},
        admin_token=ADMIN,
        max_body_bytes=64 * 1024,
        max_batch_events=50,
        heartbeat_delay=30,
    )
    yield app
    app.state.storage.close()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://collector") as client:
        yield client
