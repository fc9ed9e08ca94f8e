"""Events for the explorer tests, sent through the real ingest API as an agent would."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from typing import Any

import httpx

from tests.support import Collector

XSS = (
    "<script>window.__xss = 1; alert(1)</script>",
    '"><img src=x onerror="window.__xss = 2; alert(2)">',
    "<svg onload=alert(3)></svg>",
    "javascript:alert(4)",
    "</script><script>alert(5)</script>",
    "{{7*7}}<b id=injected>bold</b>",
    "' onmouseover='alert(6)",
    "<iframe src=javascript:alert(7)></iframe>",
    "<style>body{display:none}</style>",
)


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def event(name: str, ts: float, *, ip: str | None = None, user: dict[str, Any] | None = None,
          properties: dict[str, Any] | None = None, path: str = "/login", agent: str = "curl/8",
          body: Any = None) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "name": name,
        "timestamp": iso(ts),
        "properties": properties or {},
        "user_identifiers": user,
        "request": None if ip is None else {
            "client_ip": ip, "user_agent": agent, "path": path, "verb": "POST", "params": {"q": path},
        },
        "body": body,
    }


def agent_login(collector: Collector, **body: Any) -> str:
    answer = httpx.post(f"{collector.url}/api/v1/agent/login", headers={"X-Api-Key": collector.api_key},
                        json={"app_name": "shop", "hostname": "web-1", "pid": 4242, "sdk_version": "0.1.0", **body},
                        timeout=10)
    answer.raise_for_status()
    return str(answer.json()["session_id"])


def send(collector: Collector, session: str, events: list[dict[str, Any]]) -> None:
    answer = httpx.post(
        f"{collector.url}/api/v1/agent/batch",
        headers={"X-Session-Key": session, "Content-Encoding": "gzip", "Content-Type": "application/json"},
        content=gzip.compress(json.dumps({"events": events}).encode()), timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == len(events), answer.text


def heartbeat(collector: Collector, session: str, stats: dict[str, Any]) -> None:
    answer = httpx.post(f"{collector.url}/api/v1/agent/heartbeat", headers={"X-Session-Key": session},
                        json={"stats": stats}, timeout=10)
    answer.raise_for_status()


def shop_traffic(now: float) -> list[dict[str, Any]]:
    """A small story: a credential-stuffing IP, a real user, orders."""
    out = []
    for i in range(30):
        out.append(event("sq.auth_track", now - 600 + i, ip="198.51.100.9",
                         user={"email": f"victim{i % 6}@example.com"}, properties={"success": False}))
    for i in range(5):
        out.append(event("sq.auth_track", now - 300 + i, ip="203.0.113.5", user={"email": "alice@example.com"},
                         properties={"success": True}))
        out.append(event("order.placed", now - 200 + i, ip="203.0.113.5", user={"email": "alice@example.com"},
                         properties={"item": "book", "quantity": i + 1}, path="/checkout"))
    return out
