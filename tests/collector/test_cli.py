"""``sqreen-mw serve``: argument handling in-process, and the real server over loopback."""

from __future__ import annotations

import gzip
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sqreen_mw.collector.cli import build_parser, main, parse_api_keys
from tests.support import output_of, read_line_matching, spawn, stop_process

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0
LISTENING = re.compile(r"^sqreen-mw collector listening on http://127\.0\.0\.1:(\d+) \(db: (.+)\)$")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SQREEN_COLLECTOR_"):
            monkeypatch.delenv(name)


def test_parse_api_keys() -> None:
    assert parse_api_keys(["k1", "shop=k2", " blog=k3=="]) == {"k1": "", "k2": "shop", "k3==": "blog"}
    for bad in ("", "shop=", "=key"):
        with pytest.raises(ValueError, match="KEY or APP=KEY"):
            parse_api_keys([bad])


def test_serve_defaults(clean_env: None) -> None:
    args = build_parser().parse_args(["serve", "--api-key", "k"])
    assert (args.host, args.port, args.db, args.admin_token, args.heartbeat_delay) == (
        "127.0.0.1", 8707, "sqreen-mw.db", None, None,
    )  # fmt: skip


def test_serve_reads_environment(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQREEN_COLLECTOR_DB", "from-env.db")
    monkeypatch.setenv("SQREEN_COLLECTOR_HOST", "0.0.0.0")
    monkeypatch.setenv("SQREEN_COLLECTOR_PORT", "9000")
    monkeypatch.setenv("SQREEN_COLLECTOR_ADMIN_TOKEN", "adm")
    args = build_parser().parse_args(["serve"])
    assert (args.db, args.host, args.port, args.admin_token) == ("from-env.db", "0.0.0.0", 9000, "adm")


def test_no_api_key_exits_2(clean_env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["serve", "--db", str(tmp_path / "x.db")]) == 2
    err = capsys.readouterr().err
    assert "no API key" in err
    assert "--api-key" in err
    assert not (tmp_path / "x.db").exists()


def test_bad_api_key_exits_2(clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--api-key", "shop="]) == 2
    assert "KEY or APP=KEY" in capsys.readouterr().err


def test_bad_port_is_a_usage_error(clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--api-key", "k", "--port", "http"])
    assert exc.value.code == 2
    assert "invalid port" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["serve", "demo", "import", "migrate"])
def test_help_shows_real_defaults_only(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--help" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real `sqreen-mw serve` on a free loopback port; yields (base URL, db path)."""
    db = tmp_path / "events.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQREEN_COLLECTOR_")}
    env.update(SQREEN_COLLECTOR_API_KEYS="env-key", SQREEN_COLLECTOR_ADMIN_TOKEN="adm1n")
    command = [sys.executable, "-m", "sqreen_mw.collector.cli", "serve", "--db", str(db), "--port", "0",
               "--api-key", "shop=cli-key", "--heartbeat-delay", "5"]  # fmt: skip
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        try:
            line = lines.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no 'listening' line within {STARTUP_TIMEOUT}s (exit code {proc.poll()})")
        match = LISTENING.match(line.rstrip("\n"))
        assert match, line
        assert match.group(2) == str(db)
        assert int(match.group(1)) > 0
        yield f"http://127.0.0.1:{match.group(1)}", db
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.e2e
def test_real_server_login_batch_and_read_back(server: tuple[str, Path]) -> None:
    base, db = server
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        login = http.post("/api/v1/agent/login", headers={"X-Api-Key": "cli-key"}, json={"app_name": "ignored"})
        assert login.status_code == 200
        assert login.json()["app"] == "shop"
        assert login.json()["heartbeat_delay"] == 5
        env_login = http.post("/api/v1/agent/login", headers={"X-Api-Key": "env-key"}, json={"app_name": "blog"})
        assert env_login.json()["app"] == "blog"
        assert http.post("/api/v1/agent/login", headers={"X-Api-Key": "nope"}).status_code == 401

        sent = {
            "id": str(uuid.uuid4()),
            "name": "login.failed",
            "timestamp": "2024-05-01T12:00:00Z",
            "properties": {"attempt": 3},
            "user_identifiers": {"email": "eve@example.com"},
            "request": {"client_ip": "198.51.100.9", "user_agent": "x", "path": "/login", "verb": "POST", "params": {}},
            "body": None,
        }
        batch = http.post(
            "/api/v1/agent/batch",
            headers={"X-Session-Key": login.json()["session_id"], "Content-Encoding": "gzip"},
            content=gzip.compress(json.dumps({"events": [sent]}).encode()),
        )
        assert batch.status_code == 200
        assert batch.json() == {"accepted": 1, "duplicates": 0}

        assert http.get("/api/v1/events").status_code == 401
        admin = {"Authorization": "Bearer adm1n"}
        events = http.get("/api/v1/events", headers=admin, params={"user": "eve@example.com"})
        assert events.status_code == 200
        [got] = events.json()["events"]
        assert (got["id"], got["app"], got["timestamp"]) == (sent["id"], "shop", "2024-05-01T12:00:00.000000Z")
        assert got["request"]["client_ip"] == "198.51.100.9"
    assert db.exists()


@pytest.mark.parametrize("command", ["serve", "demo"])
@pytest.mark.parametrize("module", ["uvicorn", "python_multipart"])
def test_missing_collector_extra_is_explained(
    command: str, module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
    assert main([command, "--db", str(tmp_path / "x.db"), "--api-key", "k"] if command == "serve" else [command]) == 2
    assert "pip install 'sqreen_mw[collector]'" in capsys.readouterr().err


def test_ctrl_c_stops_serve_cleanly(tmp_path: Path) -> None:
    proc = spawn([sys.executable, "-m", "sqreen_mw.collector.cli", "serve", "--db", str(tmp_path / "c.db"),
                  "--api-key", "k", "--admin-token", "a", "--port", "0"])
    try:
        read_line_matching(proc, r"listening on", STARTUP_TIMEOUT)
        code = stop_process(proc, signal.SIGINT)
    finally:
        stop_process(proc, signal.SIGKILL)
    assert code == 0
    assert "Traceback" not in output_of(proc)
