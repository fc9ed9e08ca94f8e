"""Imported history never fires a playbook, and a backtest replays it: the real ``sqreen-mw import`` into the real
collector running a playbook, on loopback."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from sqreen_mw._schema import format_timestamp

from .support import start_collector
from .test_e2e_protect import ATTACKER, BYSTANDER
from .test_e2e_protect import PLAYBOOK as PLAYBOOK_TOML
from .test_import import run_import, summary

pytestmark = pytest.mark.e2e

# The end-to-end protection test's playbook (3 failed logins from one IP within a minute: block it), also as the
# JSON a backtest takes.
PLAYBOOK: dict[str, Any] = tomllib.loads(PLAYBOOK_TOML)["playbook"][0]


def attempt(at: float, ip: str, success: bool = False) -> dict[str, Any]:
    return {"name": "sq.auth_track", "timestamp": format_timestamp(at), "properties": {"success": success},
            "user_identifiers": {"email": "ann@example.com"},
            "request": {"client_ip": ip, "user_agent": "curl/8.5", "path": "/login", "verb": "POST"}}


def test_imported_attempts_fire_nothing_and_a_backtest_replays_them(tmp_path: Path) -> None:
    (tmp_path / "playbooks.toml").write_text(PLAYBOOK_TOML)
    base = time.time() - 2 * 86400  # two days ago: far outside the one-minute window
    rows = [attempt(base + 5 * i, ATTACKER) for i in range(5)]  # five failures within 25 s: over the threshold
    rows += [attempt(base + 1, BYSTANDER), attempt(base + 2, BYSTANDER, success=True)]
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with start_collector(tmp_path / "events.db", extra=["--playbooks", str(tmp_path / "playbooks.toml")]) as collector:
        result = run_import(collector, str(path))
        assert result.returncode == 0, result.stderr
        assert summary(result)["stored"] == len(rows)
        with httpx.Client(base_url=collector.url, timeout=10,
                          headers={"Authorization": f"Bearer {collector.admin_token}"}) as admin:
            assert admin.get("/api/v1/firings").json()["firings"] == []
            assert admin.get("/api/v1/blocks", params={"all": 1}).json()["blocks"] == []
            stored = sorted(collector.events(name="sq.auth_track", ip=ATTACKER), key=lambda e: e["timestamp"])
            assert len(stored) == 5
            answer = admin.post("/api/v1/playbooks/backtest", json={
                "playbook": PLAYBOOK, "since": format_timestamp(base - 60), "until": format_timestamp(time.time())})
            assert answer.status_code == 200, answer.text
            replay = answer.json()
            assert replay["events_scanned"] == len(rows)
            first = replay["firings"][0]
            assert first["actor"] == {"kind": "ip", "value": ATTACKER} and first["count"] == 3
            assert first["event_ids"] == [e["id"] for e in stored[:3]]
            assert {f["actor"]["value"] for f in replay["firings"]} == {ATTACKER}
            # The replay took no action either.
            assert admin.get("/api/v1/firings").json()["firings"] == []
            assert admin.get("/api/v1/blocks", params={"all": 1}).json()["blocks"] == []
