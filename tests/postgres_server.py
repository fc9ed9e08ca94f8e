"""A throwaway PostgreSQL server for the tests: ``initdb`` into a temporary directory, ``pg_ctl start`` on a free
loopback port as an unprivileged user, one fresh database per test.

Tests that need it take the ``postgres_url`` fixture (a fresh, empty database's URL). Without a server binary on this
machine they skip, saying so; with ``SQREEN_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) that skip is a failure.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import free_port

REQUIRE_ENV = "SQREEN_REQUIRE_POSTGRES"
_SERVER_USER = "postgres"  # Debian's package creates it; used only when the tests run as root


def find_bin_dir() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


def unavailable(reason: str) -> None:
    """Skip the test, or fail it when the environment demands PostgreSQL."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_psycopg() -> None:
    """At a test module's top: skip the module without psycopg (fail it when PostgreSQL is required)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get(REQUIRE_ENV) == "1":
            missing = f"{REQUIRE_ENV}=1 but psycopg is not installed: pip install 'sqreen_mw[postgres]'"
            raise RuntimeError(missing) from None
        pytest.skip("psycopg is not installed: pip install 'sqreen_mw[postgres]'", allow_module_level=True)


class PostgresServer:
    """One running server; :meth:`new_database` hands out fresh databases on it."""

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="sqreen_mw-pg-"))
        self.data = self.root / "data"
        self._run_as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            pw = pwd.getpwnam(_SERVER_USER)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._run_as = ["runuser", "-u", _SERVER_USER, "--"]
        self.user = _SERVER_USER if self._run_as else pwd.getpwuid(os.geteuid()).pw_name
        self._names = itertools.count(1)

    def _run(self, *args: str, timeout: float = 120.0) -> None:
        subprocess.run([*self._run_as, *args], check=True, capture_output=True, timeout=timeout)

    def start(self) -> None:
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                  "--no-instructions", "-E", "UTF8", "--locale=C")
        self._pg_start()

    def _pg_start(self) -> None:
        # Throwaway data: durability settings off, so the tests measure the collector rather than the disk
        # (durable=True keeps PostgreSQL's defaults: the benchmark's production-like run).
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root}"
                   " -c max_connections=200 -c shared_buffers=128MB")
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "immediate") -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """Stop and start again on the same port, data kept (a database outage)."""
        self.stop("fast")
        self._pg_start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


_server: PostgresServer | None = None
_failure: str | None = None


def server() -> PostgresServer:
    """The session's server, started on first use (skips or fails the test when there is none)."""
    global _server, _failure
    if _server is not None:
        return _server
    if _failure is None:
        bin_dir = find_bin_dir()
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _failure = "psycopg is not installed: pip install 'sqreen_mw[postgres]'"
        if bin_dir is None:
            _failure = "no PostgreSQL server binary (initdb) on this machine: apt-get install postgresql"
        elif _failure is None:
            candidate = PostgresServer(bin_dir)
            try:
                candidate.start()
            except (subprocess.SubprocessError, OSError, KeyError) as exc:
                detail = getattr(exc, "stderr", b"") or b""
                _failure = f"the PostgreSQL server did not start: {exc} {detail.decode(errors='replace')[-500:]}"
                candidate.cleanup()
                # A binary that exists but cannot start is a broken machine, never a reason to skip.
                pytest.fail(_failure, pytrace=False)
            else:
                _server = candidate
                import atexit

                atexit.register(candidate.cleanup)
                return candidate
    unavailable(_failure or "PostgreSQL unavailable")
    raise AssertionError("unreachable")


@pytest.fixture
def postgres_server() -> PostgresServer:
    """The session's PostgreSQL server."""
    return server()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server."""
    yield postgres_server.new_database()
