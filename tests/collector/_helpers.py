"""Helpers shared by the collector tests."""

from __future__ import annotations

import gzip
import json
import uuid
from typing import Any

import httpx

API_KEY = "agent-key"
BOUND_KEY = "shop-key"
ADMIN = "admin-secret"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


async def login(client: httpx.AsyncClient, key: str = API_KEY, **body: Any) -> str:
    response = await client.post("/api/v1/agent/login", headers={"X-Api-Key": key}, json=body)
    assert response.status_code == 200, response.text
    session_id: str = response.json()["session_id"]
    return session_id


def event(
    name: Any = "login.failed",
    timestamp: Any = "2024-05-01T12:00:00Z",
    *,
    ip: str | None = "203.0.113.7",
    users: dict[str, str | int] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "name": name,
        "timestamp": timestamp,
        "properties": {"reason": "bad password", "attempt": 2},
        "user_identifiers": users,
        "request": None
        if ip is None
        else {"client_ip": ip, "user_agent": "curl/8", "path": "/login", "verb": "POST", "params": {"a": "1"}},
        "body": None,
    }
    data.update(extra)
    return data


async def send(client: httpx.AsyncClient, session_id: str, events: list[Any]) -> httpx.Response:
    """Post a gzip batch, as the SDK does."""
    return await client.post(
        "/api/v1/agent/batch",
        headers={"X-Session-Key": session_id, "Content-Encoding": "gzip", "Content-Type": "application/json"},
        content=gzip.compress(json.dumps({"events": events}).encode()),
    )


async def stored(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/events", headers=ADMIN_HEADERS, params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events
