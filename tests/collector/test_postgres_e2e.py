"""Two ``sqreen-mw serve`` processes on one PostgreSQL database, an agent on each: an attacker's attempts split
across both collectors cross the threshold once → one firing, one block, pushed to the agents of both (their
long-polls answered); the block lifted through one collector → both agents hear of it."""

from __future__ import annotations

import gzip
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..postgres_server import require_psycopg
from ..support import ADMIN_TOKEN, API_KEY, Collector, read_line_matching, spawn, stop_process
from ..test_e2e_protect import PLAYBOOK
from ._helpers import event

require_psycopg()
ATTACKER = "203.0.113.88"


@contextmanager
def replica(url: str, playbooks: Path) -> Iterator[Collector]:
    proc = spawn([sys.executable, "-m", "sqreen_mw.collector.cli", "serve", "--db", url, "--api-key", API_KEY,
                  "--admin-token", ADMIN_TOKEN, "--host", "127.0.0.1", "--port", "0", "--playbooks", str(playbooks)])
    try:
        match = read_line_matching(proc, r"listening on (http://[\d.]+:\d+)", 30.0)
        yield Collector(match.group(1), proc)
    finally:
        stop_process(proc, signal.SIGTERM)


class Agent:
    """An app's side of the protocol, spoken over HTTP: login, batches, the push channel."""

    def __init__(self, collector: Collector) -> None:
        self.http = httpx.Client(base_url=collector.url, timeout=30)
        answer = self.http.post("/api/v1/agent/login", headers={"X-Api-Key": API_KEY}, json={"app_name": "shop"})
        answer.raise_for_status()
        self.sid = answer.json()["session_id"]
        self.version = int(answer.json()["actions_version"])
        self.pushed: list[dict[str, Any]] = []

    def attempt(self) -> None:
        data = event("sq.auth_track", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), ip=ATTACKER,
                     users={"email": "ann@example.com"})
        data["properties"] = {"success": False}
        answer = self.http.post("/api/v1/agent/batch", content=gzip.compress(json.dumps({"events": [data]}).encode()),
                                headers={"X-Session-Key": self.sid, "Content-Encoding": "gzip",
                                         "Content-Type": "application/json"})
        assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text

    def long_poll(self) -> threading.Thread:
        """Hold the push channel in a thread until the actions change (or 30 s)."""

        def poll() -> None:
            answer = self.http.get("/api/v1/agent/actions", params={"wait": "30"},
                                   headers={"X-Session-Key": self.sid, "X-Actions-Version": str(self.version)})
            self.pushed.append({**answer.json(), "after": time.monotonic()})
            self.version = int(answer.json()["actions_version"])

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        return thread


def _admin(collector: Collector, method: str, path: str) -> Any:
    with httpx.Client(base_url=collector.url, timeout=10,
                      headers={"Authorization": f"Bearer {collector.admin_token}"}) as api:
        response = api.request(method, path)
    response.raise_for_status()
    return response.json()


@pytest.mark.e2e
def test_two_replicas_one_firing_one_block_pushed_to_agents_of_both(postgres_url: str, tmp_path: Path) -> None:
    (tmp_path / "playbooks.toml").write_text(PLAYBOOK)  # threshold 3 within 1m, block_ip 10m
    with ExitStack() as stack:
        one = stack.enter_context(replica(postgres_url, tmp_path / "playbooks.toml"))
        two = stack.enter_context(replica(postgres_url, tmp_path / "playbooks.toml"))
        agents = [Agent(one), Agent(two)]
        for agent in agents:
            stack.callback(agent.http.close)
        agents[0].attempt()
        agents[1].attempt()  # 2 of 3: each collector has seen one
        assert _admin(one, "GET", "/api/v1/firings")["firings"] == []
        polls = [agent.long_poll() for agent in agents]
        time.sleep(0.5)  # both polls held
        crossed = time.monotonic()
        agents[0].attempt()  # the 3rd, through the first collector
        for poll in polls:
            poll.join(20)
        for agent in agents:
            (pushed,) = agent.pushed
            assert [a["value"] for a in pushed["actions"]] == [ATTACKER], pushed
            assert pushed["after"] - crossed < 3.0  # pushed by NOTIFY, not the 30 s wait
        for _ in range(3):  # more attempts through both, within the cooldown: nothing new
            agents[1].attempt()
            agents[0].attempt()
        firings = _admin(two, "GET", "/api/v1/firings")["firings"]
        assert len(firings) == 1 and firings == _admin(one, "GET", "/api/v1/firings")["firings"]
        assert firings[0]["count"] == 3 and firings[0]["actor"] == {"kind": "ip", "value": ATTACKER}
        (block,) = _admin(two, "GET", "/api/v1/blocks")["blocks"]
        assert block["value"] == ATTACKER and _admin(one, "GET", "/api/v1/blocks")["blocks"] == [block]
        polls = [agent.long_poll() for agent in agents]
        time.sleep(0.5)
        lifted = time.monotonic()
        _admin(two, "DELETE", f"/api/v1/blocks/{block['id']}")
        for poll in polls:
            poll.join(20)
        for agent in agents:
            assert agent.pushed[-1]["actions"] == [] and agent.pushed[-1]["after"] - lifted < 3.0
        events = one.events(name="sq.auth_track")  # every attempt stored once, whichever collector took it
        assert len(events) == len({e["id"] for e in events}) == 9
