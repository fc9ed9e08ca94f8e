"""Webhook responses: a JSON POST per firing, from a daemon thread, retried with backoff.

The firing happens on the ingest path, which must not wait for someone else's server: the payload goes into a bounded
queue and one thread delivers it (5 attempts, 1 s doubling to 16 s, each with a 5 s timeout). A full queue drops the
payload, logged and counted; so is a webhook that still fails after its last attempt.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any

import httpx

logger = logging.getLogger("sqreen_mw.collector")

ATTEMPTS = 5
TIMEOUT = 5.0


class WebhookSender:
    """Delivers webhook payloads in the background. ``sent``/``failed``/``dropped`` count them."""

    def __init__(self, max_pending: int = 1000, *, first_delay: float = 1.0) -> None:
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(max_pending)
        self._first_delay = first_delay
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = self.failed = self.dropped = 0

    def submit(self, url: str, payload: dict[str, Any]) -> bool:
        """Queue a POST of ``payload`` to ``url``; False (logged, counted) when the queue is full."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode()
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="sqreen_mw-webhooks", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait((url, body))
        except queue.Full:
            self.dropped += 1
            logger.error("webhook to %s dropped: %d deliveries already pending", _host(url), self._queue.maxsize)
            return False
        return True

    def _run(self) -> None:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client:
            while not self._stop.is_set():
                item = self._queue.get()
                if item is None:
                    return
                self._deliver(client, *item)

    def _deliver(self, client: httpx.Client, url: str, body: bytes) -> None:
        delay = self._first_delay
        reason = ""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = client.post(url, content=body, headers={"Content-Type": "application/json",
                                                                   "User-Agent": "sqreen-mw-collector"})
                if response.status_code < 300:
                    self.sent += 1
                    return
                reason = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    break  # the receiver refuses this payload: retrying will not help
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt < ATTEMPTS and self._stop.wait(delay):
                break
            delay *= 2
        self.failed += 1
        logger.error("webhook to %s failed after %d attempt(s): %s", _host(url), attempt, reason)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (pending deliveries get ``timeout`` seconds to finish)."""
        deadline = time.monotonic() + timeout
        thread = self._thread
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            self._stop.set()
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()


def _host(url: str) -> str:
    # Never log a webhook's full URL: its path or query often is the secret (Slack, Discord).
    try:
        return httpx.URL(url).host or "?"
    except Exception:
        return "?"
