"""The ``sqreen-mw`` command line.

Each subcommand is one ``_add_<name>(subparsers)`` function that declares its arguments and sets ``handler`` to
the function that runs it; add a command by writing such a pair and calling it from :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import Callable, Sequence

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8707
DEFAULT_DB = "sqreen-mw.db"
EXIT_USAGE = 2

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
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: use 0 to 65535")
    return int(text)


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    env = os.environ
    parser = subparsers.add_parser("serve", help="run the collector", description="Run the sqreen_mw collector.")
    parser.add_argument(
        "--db", default=env.get("SQREEN_COLLECTOR_DB", DEFAULT_DB),
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
    parser.add_argument("--host", default=env.get("SQREEN_COLLECTOR_HOST", DEFAULT_HOST))
    parser.add_argument(
        "--port", type=_port, default=env.get("SQREEN_COLLECTOR_PORT", str(DEFAULT_PORT)), help="0 picks a free port"
    )
    parser.add_argument("--heartbeat-delay", type=int, default=None, metavar="SECONDS", help="told to agents")
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
    )
    parser.add_argument("--port", type=_port, default=0, help="collector port (default: a free one)")
    parser.add_argument("--db", default=None, help="keep the events in this SQLite file (default: a temporary one)")
    parser.add_argument("--keep-running", action="store_true", help="keep the collector up afterwards (Ctrl-C)")
    parser.set_defaults(handler=_demo)


def _missing_extra(command: str) -> str | None:
    """Why ``command`` cannot run, when the collector extra is not installed."""
    for module in ("uvicorn", "python_multipart"):
        try:
            __import__(module)
        except ImportError:
            return f"sqreen-mw {command}: error: needs the collector extra: pip install 'sqreen_mw[collector]'"
    return None


def _demo(args: argparse.Namespace) -> int:
    missing = _missing_extra("demo")
    if missing:
        print(missing, file=sys.stderr)
        return EXIT_USAGE
    from ._demo import run_demo

    return run_demo(port=args.port, db=args.db, keep_running=args.keep_running)


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


def _serve(args: argparse.Namespace) -> int:
    missing = _missing_extra("serve")
    if missing:
        print(missing, file=sys.stderr)
        return EXIT_USAGE
    import uvicorn  # the collector extra: only `serve` needs it

    from . import create_app
    from .automation import Allowlist, Playbook, PlaybookError, load_playbooks_file
    from .postgres import StorageUnavailable, redact

    playbooks: list[Playbook] = []
    allow: Allowlist | None = None
    if args.playbooks:
        try:
            playbooks, allow = load_playbooks_file(args.playbooks, allow_http_webhooks=args.allow_http_webhooks)
        except OSError as exc:
            print(f"sqreen-mw serve: error: --playbooks {args.playbooks}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        except PlaybookError as exc:
            print(f"sqreen-mw serve: error: --playbooks {args.playbooks}: {exc}", file=sys.stderr)
            return EXIT_USAGE

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
        app = create_app(
            db_path=args.db, api_keys=api_keys, admin_token=args.admin_token, heartbeat_delay=args.heartbeat_delay,
            playbooks=playbooks, allow=allow, allow_http_webhooks=args.allow_http_webhooks, retention=retention,
        )
    except ValueError as exc:
        print(f"sqreen-mw serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StorageUnavailable as exc:
        print(f"sqreen-mw serve: error: {exc}", file=sys.stderr)
        return 1
    if args.admin_token is None:
        print("sqreen-mw serve: no --admin-token: the admin API answers 401", file=sys.stderr)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                _announce(self, args.host, redact(args.db))

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    try:
        asyncio.run(Server(config).serve())
    except SystemExit as exc:  # uvicorn exits on startup failures (port in use, ...) after logging why
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:  # Ctrl-C: uvicorn shut down cleanly, then re-raised it
        return 0
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sqreen-mw``.

    :param argv: arguments without the program name (default: ``sys.argv[1:]``).
    :return: the process exit code.
    """
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
