"""The collector's server against slow clients, and the CLI's one-line errors, with real processes and sockets."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import ADMIN_TOKEN, API_KEY, output_of, read_line_matching, spawn, start_collector, stop_process

CLI = [sys.executable, "-m", "sqreen_mw.collector.cli"]


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes (or resets) the connection within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_half_sent_headers_and_bodies_are_cut_off(tmp_path: Path) -> None:
    extra = ["--header-timeout", "1", "--body-timeout", "1"]
    with start_collector(tmp_path / "c.db", extra=extra) as collector:
        started = time.monotonic()
        # Headers never finished: the connection is closed after --header-timeout.
        heads = [_connect(collector.url) for _ in range(20)]
        for sock in heads:
            sock.sendall(b"POST /api/v1/agent/login HTTP/1.1\r\nHost: x\r\n")
        # A body never finished: 408 after --body-timeout.
        with _connect(collector.url) as body:
            body.sendall(
                b"POST /api/v1/agent/login HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + API_KEY.encode()
                + b"\r\nContent-Length: 100\r\n\r\n{"
            )  # fmt: skip
            body.settimeout(10)
            assert body.recv(4096).startswith(b"HTTP/1.1 408"), "the half-sent body was not refused"
        assert all(_closed_within(sock, 10) for sock in heads)
        assert time.monotonic() - started < 15
        for sock in heads:
            sock.close()
        assert httpx.get(f"{collector.url}/healthz", timeout=10).status_code == 200  # still serving


def test_connections_beyond_the_limit_are_closed(tmp_path: Path) -> None:
    with start_collector(tmp_path / "c.db", extra=["--max-connections", "5", "--header-timeout", "30"]) as collector:
        held = [_connect(collector.url) for _ in range(5)]
        time.sleep(0.5)  # the server accepted them all
        extra = _connect(collector.url)
        assert _closed_within(extra, 10)
        for sock in held:
            sock.close()
        extra.close()
        deadline = time.monotonic() + 10
        while True:  # the slots free up once the server sees the closes
            try:
                if httpx.get(f"{collector.url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_serve_logs_logins_batches_and_refused_keys_never_the_key(tmp_path: Path) -> None:
    with start_collector(tmp_path / "c.db") as collector:
        assert (
            httpx.post(f"{collector.url}/api/v1/agent/login", headers={"X-Api-Key": "typo-secret"}).status_code == 401
        )
        sid = httpx.post(f"{collector.url}/api/v1/agent/login", headers={"X-Api-Key": API_KEY}, json={}).json()
        batch = {"events": []}
        answer = httpx.post(
            f"{collector.url}/api/v1/agent/batch", headers={"X-Session-Key": sid["session_id"]}, json=batch
        )
        assert answer.status_code == 200
        assert collector.process is not None
        read_line_matching(collector.process, r"INFO batch \(app 'default'\): 0 event\(s\) accepted, 0 duplicate", 10)
        out = output_of(collector.process)
    assert "login refused from 127.0.0.1: missing or unknown API key" in out
    assert "INFO login: app 'default'" in out
    assert "typo-secret" not in out and sid["session_id"] not in out and ADMIN_TOKEN not in out


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_serve_and_demo_on_a_busy_port_say_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for args in (
            ["serve", "--api-key", "k", "--db", str(tmp_path / "x.db"), "--port", port],
            ["demo", "--port", port],
        ):
            result = _run(args)
            assert result.returncode == 1, result
            [line] = result.stderr.strip().splitlines()
            assert f"port {port} on 127.0.0.1 is already in use" in line and "--port" in line, line
            assert "Traceback" not in result.stdout + result.stderr


def test_serve_on_an_unopenable_database_names_the_file() -> None:
    result = _run(["serve", "--api-key", "k", "--db", "/nonexistent/dir/x.db", "--port", "0"])
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "cannot open the database --db /nonexistent/dir/x.db" in line and "directory exists" in line


def test_errors_name_the_flag_or_variable_typed() -> None:
    delay = _run(["serve", "--api-key", "k", "--heartbeat-delay", "-5"])
    assert delay.returncode == 2 and "argument --heartbeat-delay: invalid value '-5'" in delay.stderr
    assert "heartbeat_delay" not in delay.stderr
    env = subprocess.run(
        [*CLI, "serve", "--api-key", "k"], capture_output=True, text=True, timeout=60,
        env={"SQREEN_COLLECTOR_PORT": "abc", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert env.returncode == 2
    assert "environment variable SQREEN_COLLECTOR_PORT: invalid port 'abc'" in env.stderr
    assert "argument --port" not in env.stderr


def test_version_and_defaults_in_help() -> None:
    from sqreen_mw import __version__

    assert _run(["--version"]).stdout.strip() == f"sqreen-mw {__version__}"
    serve = _run(["serve", "--help"]).stdout
    for shown in ("(default: sqreen-mw.db)", "(default: 127.0.0.1)", "(default: 8707)", "(default: 10.0)"):
        assert shown in serve
    assert "(default: 0)" in _run(["demo", "--help"]).stdout


def test_demo_stopped_by_sigterm_removes_its_temporary_directory(tmp_path: Path) -> None:
    proc = spawn([*CLI, "demo"], env={"TMPDIR": str(tmp_path)})  # without --no-wait: runs until stopped
    try:
        read_line_matching(proc, r"keeps running", 90)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith("sqreen-mw-demo-")]
    finally:
        code = stop_process(proc, signal.SIGTERM, 30)
    assert code != -signal.SIGKILL, output_of(proc)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("sqreen-mw-demo-")], output_of(proc)
