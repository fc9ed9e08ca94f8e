"""``sqreen-mw serve --playbooks``: validated at start (the collector does not start on an error), then live."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ..support import start_collector

GOOD = """
[allow]
ips = ["198.51.100.0/24"]

[[playbook]]
name = "credential-stuffing"
event = "sq.auth_track"
where = { success = false }
actor = "ip"
threshold = 10
window = "5m"

[[playbook.response]]
action = "block_ip"
duration = "15m"
"""


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sqreen_mw.collector.cli", "serve", "--api-key", "k", "--port", "0", *args],
        capture_output=True, text=True, timeout=30, check=False,
    )


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (GOOD.replace('window = "5m"', 'window = "5 minutes"'), "playbook 'credential-stuffing': window: must be a"),
        (GOOD.replace("threshold = 10", "threshold = 0"), "playbook 'credential-stuffing': threshold: must be"),
        (GOOD.replace('"198.51.100.0/24"', '"not-an-ip"'), "allow.ips[0]"),
        (GOOD + GOOD.split("[[playbook]]", 1)[1].join(["[[playbook]]", ""]), "used by another playbook"),
        ("[[playbook]\n", "not valid TOML"),
    ],
)
def test_invalid_playbooks_file_stops_the_collector(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "playbooks.toml"
    path.write_text(content)
    result = serve("--db", str(tmp_path / "x.db"), "--playbooks", str(path))
    assert result.returncode == 2
    assert needle in result.stderr and str(path) in result.stderr
    assert "listening" not in result.stdout


def test_missing_playbooks_file(tmp_path: Path) -> None:
    result = serve("--db", str(tmp_path / "x.db"), "--playbooks", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "missing.toml" in result.stderr and "No such file" in result.stderr


def test_file_playbooks_are_served(tmp_path: Path) -> None:
    path = tmp_path / "playbooks.toml"
    path.write_text(GOOD)
    with start_collector(tmp_path / "events.db", extra=["--playbooks", str(path)]) as collector:
        playbooks = collector._get("/api/v1/playbooks")["playbooks"]
        assert [(p["name"], p["source"], p["threshold"]) for p in playbooks] == [("credential-stuffing", "file", 10)]


def test_the_example_playbooks_file_is_valid() -> None:
    from sqreen_mw.collector.automation import load_playbooks_file

    from ..support import ROOT

    playbooks, _ = load_playbooks_file(str(ROOT / "examples" / "playbooks.toml"))
    assert [p.name for p in playbooks] == ["credential-stuffing", "password-spraying", "distributed-stuffing",
                                           "card-testing"]


def test_stopping_answers_held_long_polls_at_once(tmp_path: Path) -> None:
    import signal
    import threading
    import time

    import httpx

    from ..support import API_KEY, stop_process

    with start_collector(tmp_path / "events.db") as collector:
        with httpx.Client(base_url=collector.url, timeout=60) as http:
            sid = http.post("/api/v1/agent/login", headers={"X-Api-Key": API_KEY}, json={}).json()["session_id"]
            version = http.get("/api/v1/agent/actions", headers={"X-Session-Key": sid}).json()["actions_version"]
            answers: list[int] = []

            def poll() -> None:
                response = http.get("/api/v1/agent/actions", params={"wait": "60"},
                                    headers={"X-Session-Key": sid, "X-Actions-Version": str(version)})
                answers.append(response.status_code)

            thread = threading.Thread(target=poll)
            thread.start()
            time.sleep(0.5)
            started = time.monotonic()
            assert collector.process is not None
            code = stop_process(collector.process, signal.SIGTERM, timeout=10)
            thread.join(10)
    assert answers == [503] and code in (0, -signal.SIGTERM)  # sent away: reconnect after Retry-After
    assert time.monotonic() - started < 5  # not the 60 s the poll asked to wait
