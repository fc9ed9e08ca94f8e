"""Webhook responses against a real HTTP receiver on loopback: payload, retries with backoff, no retry on refusal."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sqreen_mw.collector.automation.webhooks import WebhookSender

from ..support import serve_in_thread


def receiver(statuses: list[int]) -> tuple[Starlette, list[tuple[float, dict[str, Any]]]]:
    got: list[tuple[float, dict[str, Any]]] = []

    async def hook(request: Request) -> Response:
        got.append((time.monotonic(), json.loads(await request.body())))
        return JSONResponse({}, status_code=statuses.pop(0) if statuses else 200)

    return Starlette(routes=[Route("/hook", hook, methods=["POST"])]), got


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_retried_with_backoff_until_delivered() -> None:
    app, got = receiver([503, 500, 200])
    sender = WebhookSender(first_delay=0.1)
    with serve_in_thread(app) as url:
        assert sender.submit(f"{url}/hook", {"type": "security_response", "playbook": "p"})
        wait_for(lambda: sender.sent == 1)
    sender.close()
    assert [body["playbook"] for _, body in got] == ["p", "p", "p"]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(got)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # 0.1 s, then doubled
    assert sender.failed == 0


def test_a_refusing_receiver_is_not_retried() -> None:
    app, got = receiver([400])
    sender = WebhookSender(first_delay=0.05)
    with serve_in_thread(app) as url:
        sender.submit(f"{url}/hook", {"n": 1})
        wait_for(lambda: sender.failed == 1)
    sender.close()
    assert len(got) == 1 and sender.sent == 0


def test_full_queue_drops_and_counts() -> None:
    sender = WebhookSender(max_pending=1, first_delay=0.05)
    sender._stop.set()  # no thread starts: the queue only fills
    assert sender.submit("http://127.0.0.1:9/x", {}) is True
    assert sender.submit("http://127.0.0.1:9/x", {}) is False
    assert sender.dropped == 1


def test_a_firing_posts_its_webhook(db: str) -> None:
    import uuid

    from sqreen_mw._schema import format_timestamp
    from sqreen_mw.collector import open_storage
    from sqreen_mw.collector._wire import parse_batch
    from sqreen_mw.collector.automation import Automation, parse_playbook

    app, got = receiver([])
    with serve_in_thread(app) as url:
        playbook = parse_playbook({"name": "hook", "event": "card.declined", "actor": "user", "threshold": 2,
                                   "window": "1m", "response": [{"action": "webhook", "url": f"{url}/hook"}]})
        storage = open_storage(db)
        automation = Automation(storage, playbooks=[playbook])
        events = [{"id": str(uuid.uuid4()), "name": "card.declined", "timestamp": format_timestamp(time.time()),
                   "user_identifiers": {"id": 42}} for _ in range(2)]
        records = parse_batch(json.dumps({"events": events}).encode(), None, app="a", received_at=time.time(),
                              max_bytes=2**20, max_events=100)
        assert automation.observe(storage.store_events(records)) == 1
        wait_for(lambda: len(got) == 1)
        automation.close()
        storage.close()
    payload = got[0][1]
    assert payload["type"] == "security_response" and payload["playbook"] == "hook"
    assert payload["actor"] == {"kind": "user", "value": {"id": 42}} and payload["count"] == 2
    assert sorted(payload["event_ids"]) == sorted(e["id"] for e in events)
