"""The ``sqreen-mw`` command line.

Each subcommand is one ``_add_<name>(subparsers)`` function that declares its arguments and sets ``handler`` to
the function that runs it; add a command by writing such a pair and calling it from :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from .._version import __version__
from ._server import HEADER_TIMEOUT, MAX_CONNECTIONS

#: Same as the collector's (``_http.BODY_READ_TIMEOUT``), which needs starlette, not imported for ``--help``.
BODY_READ_TIMEOUT = 30.0

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8707
DEFAULT_DB = "sqreen-mw.db"
EXIT_USAGE = 2
EXIT_FAILURE = 1

Handler = Callable[[argparse.Namespace], int]


def parse_api_keys(values: Sequence[str]) -> dict[str, str]:
    """``KEY`` or ``APP=KEY`` strings to the ``key -> app name`` mapping of :func:`create_app` ("" = unbound).

    The first ``=`` separates the app name, so a key containing ``=`` must be given as ``APP=KEY``.

    :raises ValueError: an empty key or app name.
    """
    keys: dict[str, str] = {}
    for value in values:
        app, sep, key = value.strip().partition("=")
        if not sep:
            app, key = "", app
        if not key or (sep and not app):
            raise ValueError(f"invalid API key {value!r}: use KEY or APP=KEY")
        keys[key] = app
    return keys


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: use 0 to 65535")
    return int(text)


def _whole_seconds(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 9 or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use a whole number of seconds, at least 1")
    return int(text)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use a number of seconds above 0")
    return value


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 9 or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use a whole number, at least 1")
    return int(text)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every default in ``--help``, except of secrets (a token from the environment must not be printed)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.dest in ("admin_token", "api_key") or action.default is None or action.default is False:
            return action.help  # a secret; or nothing worth showing ("default: None", "default: False")
        return super()._get_help_string(action)


def _env_port(parser: argparse.ArgumentParser, variable: str, fallback: int) -> int:
    # Read here rather than through argparse's type=, whose error would blame --port for the variable's value.
    text = os.environ.get(variable)
    if text is None:
        return fallback
    try:
        return _port(text.strip())
    except argparse.ArgumentTypeError as exc:
        parser.set_defaults(env_error=f"environment variable {variable}: {exc}")
        return fallback


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    env = os.environ
    parser = subparsers.add_parser(
        "serve", help="run the collector", description="Run the sqreen_mw collector.", formatter_class=_Help
    )
    parser.add_argument(
        "--db",
        default=env.get("SQREEN_COLLECTOR_DB", DEFAULT_DB),
        help="SQLite database file, or postgresql://user@host/db shared by replicas (also SQREEN_COLLECTOR_DB)",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="[APP=]KEY",
        help="accepted agent API key, repeatable; APP=KEY names the app (also SQREEN_COLLECTOR_API_KEYS)",
    )
    parser.add_argument(
        "--admin-token",
        default=env.get("SQREEN_COLLECTOR_ADMIN_TOKEN"),
        help="bearer token of the admin API (also SQREEN_COLLECTOR_ADMIN_TOKEN); without it the admin API is off",
    )
    parser.add_argument(
        "--host",
        default=env.get("SQREEN_COLLECTOR_HOST", DEFAULT_HOST),
        help="address to listen on (also SQREEN_COLLECTOR_HOST)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=_env_port(parser, "SQREEN_COLLECTOR_PORT", DEFAULT_PORT),
        help="port to listen on, 0 picks a free one (also SQREEN_COLLECTOR_PORT)",
    )
    parser.add_argument(
        "--heartbeat-delay",
        type=_whole_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds between heartbeats told to agents (none: the agents' own default, 60)",
    )
    parser.add_argument(
        "--header-timeout",
        type=_positive_seconds,
        default=HEADER_TIMEOUT,
        metavar="SECONDS",
        help="time a connection has to send its request headers (slow clients are cut off)",
    )
    parser.add_argument(
        "--body-timeout",
        type=_positive_seconds,
        default=BODY_READ_TIMEOUT,
        metavar="SECONDS",
        help="time a request has to send its body once the headers are in (longer: 408)",
    )
    parser.add_argument(
        "--max-connections",
        type=_count,
        default=MAX_CONNECTIONS,
        metavar="N",
        help="open connections at most; more are closed, and requests beyond it answered 503",
    )
    parser.add_argument(
        "--playbooks",
        default=env.get("SQREEN_COLLECTOR_PLAYBOOKS"),
        metavar="FILE",
        help="TOML file of playbooks and allowlist, validated at start (also SQREEN_COLLECTOR_PLAYBOOKS)",
    )
    parser.add_argument(
        "--allow-http-webhooks", action="store_true", help="accept plain-http webhook URLs beyond loopback"
    )
    parser.add_argument(
        "--retention", default=env.get("SQREEN_COLLECTOR_RETENTION"), metavar="DURATION",
        help='delete events older than this, e.g. "90d" (also SQREEN_COLLECTOR_RETENTION); default: keep all',
    )
    parser.set_defaults(handler=_serve)


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a collector, an instrumented shop and scripted traffic including an attack",
        description="Run a collector and a demo shop instrumented with sqreen_mw on loopback, drive shoppers and a "
        "credential-stuffing attacker through it, and print what the collector received.",
        formatter_class=_Help,
    )
    parser.add_argument("--port", type=_port, default=0, help="collector port; 0 picks a free one")
    parser.add_argument("--db", default=None, help="keep the events in this SQLite file (none: a temporary one)")
    parser.add_argument(
        "--no-wait", action="store_true", help="exit at the end (default: keep the collector up to explore, Ctrl-C)"
    )
    parser.set_defaults(handler=_demo)


def _missing_extra(command: str) -> str | None:
    """Why ``command`` cannot run, when the collector extra is not installed."""
    for module in ("uvicorn", "python_multipart"):
        try:
            __import__(module)
        except ImportError:
            return (
                f"sqreen-mw {command}: error: needs the collector extra: pip install 'sqreen_mw[collector]'"
                " (from a checkout: pip install -e '.[collector]')"
            )
    return None


def _fail(command: str, message: str, code: int = EXIT_FAILURE) -> int:
    print(f"sqreen-mw {command}: error: {message}", file=sys.stderr)
    return code


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port (bound here so that a busy port is one clear line, not a traceback).

    :raises OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto is TCP. Without it, a
    # response's body (written after its headers) waits for the client's delayed ACK: ~40 ms per answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart at once after a stop
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_error(exc: OSError, host: str, port: int, flag: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use (another collector?): stop it, or choose another with {flag}"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}: check --host and {flag}"


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the with-blocks: temporary files are removed, servers stopped


def _demo(args: argparse.Namespace) -> int:
    missing = _missing_extra("demo")
    if missing:
        print(missing, file=sys.stderr)
        return EXIT_USAGE
    if args.port:
        try:
            _bind("127.0.0.1", args.port).close()
        except OSError as exc:
            return _fail("demo", _bind_error(exc, "127.0.0.1", args.port, "--port (0 picks a free one)"))
    from ._demo import run_demo

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return run_demo(port=args.port, db=args.db, keep_running=not args.no_wait)
    except sqlite3.Error as exc:
        return _fail("demo", f"cannot open the database --db {args.db}: {exc}: check that its directory exists")


def _add_import(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..importer import add_arguments, run

    parser = subparsers.add_parser(
        "import",
        help="import past events from a JSON Lines or CSV file",
        description="Send past events from a JSON Lines or CSV file (or '-' for stdin, gzip or not) to the collector; "
        "rows without an id get one derived from their content, so importing a file twice stores nothing twice.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def _add_migrate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="create or upgrade the collector's database schema",
        description="Create the collector's tables, or bring an older schema to this version's, then exit "
        "(serve does the same on start; this runs it once, e.g. before rolling out replicas).",
    )
    parser.add_argument("--db", default=os.environ.get("SQREEN_COLLECTOR_DB", DEFAULT_DB),
                        help="SQLite file or postgresql:// URL (also SQREEN_COLLECTOR_DB)")
    parser.set_defaults(handler=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    from . import open_storage
    from .postgres import StorageUnavailable

    try:
        open_storage(args.db).close()
    except (ValueError, StorageUnavailable) as exc:  # SchemaError is a ValueError
        print(f"sqreen-mw migrate: error: {exc}", file=sys.stderr)
        return 1
    print("sqreen-mw migrate: schema up to date", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``sqreen-mw`` argument parser with all its subcommands."""
    parser = argparse.ArgumentParser(prog="sqreen-mw", description="sqreen_mw collector and tools")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_serve(subparsers)
    _add_demo(subparsers)
    _add_import(subparsers)
    _add_migrate(subparsers)
    return parser


def _announce(server: object, host: str, db: str) -> None:
    # uvicorn binds in startup(); with --port 0 the real port is only known from the bound socket.
    servers = getattr(server, "servers", [])
    port = servers[0].sockets[0].getsockname()[1] if servers and servers[0].sockets else None
    shown = f"[{host}]" if ":" in host else host
    print(f"sqreen-mw collector listening on http://{shown}:{port} (db: {db})", flush=True)


#: Allocations between two young-generation collections in ``serve`` (Python's default: 700).
GC_YOUNG_THRESHOLD = 20_000


def _tune_gc() -> None:
    """Collect garbage less often in the ``serve`` process (its own process: an app embedding the collector keeps its
    settings). Decoding a 2,000-event batch allocates ~30,000 objects that live until the batch is stored: at the
    default threshold they were traversed by dozens of collections each, and promoted to the older generations that
    every full collection walks again, ~8,000 instructions an event (callgrind). What start-up loaded is frozen out
    of the collections altogether."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _log_traffic() -> None:
    # Logins, batches and refused keys at INFO, so the terminal shows traffic arriving (uvicorn's own: warnings).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("sqreen_mw.collector")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _serve(args: argparse.Namespace) -> int:
    missing = _missing_extra("serve")
    if missing:
        print(missing, file=sys.stderr)
        return EXIT_USAGE
    import uvicorn  # the collector extra: only `serve` needs it

    from . import create_app
    from ._server import server_config
    from .automation import Allowlist, Playbook, PlaybookError, load_playbooks_file
    from .postgres import StorageUnavailable, redact

    playbooks: list[Playbook] = []
    allow: Allowlist | None = None
    if args.playbooks:
        try:
            playbooks, allow = load_playbooks_file(args.playbooks, allow_http_webhooks=args.allow_http_webhooks)
        except OSError as exc:
            return _fail("serve", f"--playbooks {args.playbooks}: {exc.strerror or exc}", EXIT_USAGE)
        except PlaybookError as exc:
            return _fail("serve", f"--playbooks {args.playbooks}: {exc}", EXIT_USAGE)

    retention = None
    if args.retention:
        from .automation.model import parse_duration

        try:
            retention = parse_duration(args.retention)
        except ValueError as exc:
            print(f"sqreen-mw serve: error: --retention {exc}", file=sys.stderr)
            return EXIT_USAGE
    specs = list(args.api_key)
    specs += [spec for spec in os.environ.get("SQREEN_COLLECTOR_API_KEYS", "").split(",") if spec.strip()]
    try:
        api_keys = parse_api_keys(specs)
        if not api_keys:
            raise ValueError("no API key: pass --api-key KEY (or APP=KEY), or set SQREEN_COLLECTOR_API_KEYS")
    except ValueError as exc:
        return _fail("serve", str(exc), EXIT_USAGE)
    if args.admin_token is not None and not args.admin_token.strip():
        return _fail("serve", "--admin-token (or SQREEN_COLLECTOR_ADMIN_TOKEN) must not be empty", EXIT_USAGE)
    port_flag = "--port (or SQREEN_COLLECTOR_PORT; 0 picks a free one)"
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        return _fail("serve", _bind_error(exc, args.host, args.port, port_flag))
    try:
        app = create_app(
            db_path=args.db,
            api_keys=api_keys,
            admin_token=args.admin_token,
            heartbeat_delay=args.heartbeat_delay,
            body_timeout=args.body_timeout,
            playbooks=playbooks,
            allow=allow,
            allow_http_webhooks=args.allow_http_webhooks,
            retention=retention,
        )
    except ValueError as exc:  # SchemaError: names the file
        sock.close()
        return _fail("serve", str(exc), EXIT_USAGE)
    except StorageUnavailable as exc:
        sock.close()
        return _fail("serve", str(exc))
    except sqlite3.Error as exc:
        sock.close()
        return _fail(
            "serve", f"cannot open the database --db {args.db}: {exc}: check that its directory exists and is writable"
        )
    if args.admin_token is None:
        print("sqreen-mw serve: no --admin-token: the admin API answers 401 and the explorer is off", file=sys.stderr)
    _log_traffic()
    _tune_gc()

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                _announce(self, args.host, redact(args.db))
                if playbooks:
                    print("playbooks: " + ", ".join(f"{p.name}{' (dry run)' if p.dry_run else ''}"
                                                   f"{'' if p.enabled else ' (disabled)'}" for p in playbooks),
                          flush=True)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            # uvicorn waits for open requests before it stops: answer the agents' held long-polls now.
            app.state.automation.release_waiters()

    config = server_config(
        app, args.host, args.port, header_timeout=args.header_timeout, max_connections=int(args.max_connections)
    )
    try:
        asyncio.run(Server(config).serve(sockets=[sock]))
    except SystemExit as exc:  # uvicorn exits on startup failures after logging why
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:  # Ctrl-C: uvicorn shut down cleanly, then re-raised it
        return 0
    finally:
        sock.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sqreen-mw``.

    :param argv: arguments without the program name (default: ``sys.argv[1:]``).
    :return: the process exit code.
    """
    args = build_parser().parse_args(argv)
    env_error: str | None = getattr(args, "env_error", None)
    if env_error is not None:
        return _fail(args.command, env_error, EXIT_USAGE)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
