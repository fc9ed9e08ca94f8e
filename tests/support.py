"""Test support: run real servers (the collector, apps under uvicorn/gunicorn) on loopback with bounded waits."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

API_KEY = "test-api-key"
ADMIN_TOKEN = "test-admin-token"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_line_matching(proc: subprocess.Popen[str], pattern: str, timeout: float) -> re.Match[str]:
    """Poll the process's output file until a line matches, within ``timeout`` seconds."""
    log = _LOGS[proc.pid]
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        match = re.search(pattern, text)
        if match:
            return match
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no line matching {pattern!r} in {timeout}s (exit={proc.poll()}); output:\n{text}")
        time.sleep(0.05)


def output_of(proc: subprocess.Popen[str]) -> str:
    """Everything the process printed so far (stdout and stderr)."""
    return _LOGS[proc.pid].read_text(errors="replace")


def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Signal the process (group) and wait for it; kill it if it does not exit in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stacks = _stacks_of(proc.pid)  # what it was waiting on, before it is killed
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
            printed = _LOGS[proc.pid].read_text(errors="replace")[-3000:] if proc.pid in _LOGS else ""
            raise AssertionError(f"process {proc.args!r} did not exit within {timeout}s of signal {sig}\n"
                                 f"--- its output, last lines:\n{printed}\n--- its threads:\n{stacks}") from None
    return int(proc.returncode)


def record_in_request(client: Any, ctx: Any, properties: dict[str, Any]) -> tuple[Any, ...]:
    """The record one ``client.track("e", properties=...)`` queues while ``ctx`` is the bound request.

    A first call outside the request makes the properties' keys known, so that this one is the common call (the
    compiled one, when it is built); the queue is left empty.
    """
    from sqreen_mw._context import current_context

    client.track("e", properties=dict.fromkeys(properties, 0))
    client.queue.take(1)
    client.queue.done()
    token = current_context.set(ctx)
    try:
        client.track("e", properties=properties)
    finally:
        current_context.reset(token)
    (record,) = client.queue.take(1)
    client.queue.done()
    return record  # type: ignore[no-any-return]


def all_slots(cls: type) -> list[str]:
    """Every ``__slots__`` name of ``cls`` and its bases (to compare two instances field by field)."""
    return [name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())]


def _stacks_of(pid: int) -> str:
    """The Python stacks of a live process, when py-spy is installed (a diagnosis aid, never required)."""
    spy = shutil.which("py-spy")
    if spy is None:
        return "(py-spy not installed)"
    try:
        return subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=20,
                              check=False).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"(py-spy failed: {exc})"


_LOGS: dict[int, Path] = {}
_LOG_DIR = Path(tempfile.mkdtemp(prefix="sqreen_mw-tests-"))
atexit.register(shutil.rmtree, _LOG_DIR, True)


def spawn(args: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start a process whose output goes to a file (a pipe nobody reads could fill up and block the server)."""
    fd, name = tempfile.mkstemp(prefix="server-", suffix=".log", dir=_LOG_DIR)
    try:
        proc = subprocess.Popen(
            list(args),
            stdout=fd,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=str(cwd or ROOT),
            start_new_session=True,  # its own process group: stop_process signals the server and its workers
        )
    finally:
        os.close(fd)
    _LOGS[proc.pid] = Path(name)
    return proc


@dataclass
class Collector:
    url: str
    process: subprocess.Popen[str] | None = None
    api_key: str = API_KEY
    admin_token: str = ADMIN_TOKEN

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10.0) as admin:
            response = admin.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def events(self, **filters: Any) -> list[dict[str, Any]]:
        """Every stored event matching the filters, newest first (follows the cursor)."""
        out: list[dict[str, Any]] = []
        params = {"limit": 1000, **filters}
        while True:
            body = self._get("/api/v1/events", params)
            out.extend(body["events"])
            if not body["next"]:
                return out
            params["cursor"] = body["next"]

    def agents(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/agents")["agents"])

    def wait_for(
        self, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0, **filters: Any
    ) -> list[dict[str, Any]]:
        """Poll the events until ``check(events)`` holds; return them (fail with what was seen after ``timeout``)."""
        deadline = time.monotonic() + timeout
        events = self.events(**filters)
        while not check(events) and time.monotonic() < deadline:
            time.sleep(0.1)
            events = self.events(**filters)
        return events


@contextlib.contextmanager
def start_collector(db: Path, port: int = 0, extra: Sequence[str] = ()) -> Iterator[Collector]:
    proc = spawn(
        [
            sys.executable, "-m", "sqreen_mw.collector.cli", "serve", "--db", str(db), "--api-key", API_KEY,
            "--admin-token", ADMIN_TOKEN, "--host", "127.0.0.1", "--port", str(port), *extra,
        ]
    )
    try:
        match = read_line_matching(proc, r"listening on (http://[\d.]+:\d+)", 20.0)
        collector = Collector(match.group(1), proc)
        yield collector
    finally:
        stop_process(proc, signal.SIGTERM)


def serve_in_thread(app: Any, port: int = 0) -> contextlib.AbstractContextManager[str]:
    """Serve an ASGI app with a real uvicorn server on loopback, in a thread of the test process."""
    from sqreen_mw.collector._demo import serve_in_thread as serve

    return serve(app, port, lifespan="off")


class FaultyProxy:
    """A real HTTP hop in front of the collector that answers the first batch requests with scripted failures."""

    def __init__(self, upstream: str, batch_faults: Sequence[tuple[Any, ...]]) -> None:
        """``batch_faults``: (status, headers) or (status, headers, JSON body) answered to the first batches."""
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.upstream = upstream
        self.batch_faults = list(batch_faults)
        self.log: list[tuple[float, str, int]] = []  # (monotonic time, path, status answered)
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])

    async def _handle(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, Response

        body = await request.body()
        path = request.url.path
        if path.endswith("/batch") and self.batch_faults:
            status, headers, *payload = self.batch_faults.pop(0)
            self.log.append((time.monotonic(), path, status))
            return JSONResponse(payload[0] if payload else {"error": "injected fault"}, status_code=status,
                                headers=headers)
        keep = {k: v for k, v in request.headers.items()
                if k in ("x-api-key", "x-session-key", "content-type", "content-encoding", "authorization")}
        async with httpx.AsyncClient(base_url=self.upstream, timeout=10) as upstream:
            answer = await upstream.request(request.method, path, content=body, headers=keep,
                                            params=dict(request.query_params))
        self.log.append((time.monotonic(), path, answer.status_code))
        return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"))
