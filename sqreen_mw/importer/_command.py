"""The ``import`` subcommand: arguments, the read-validate-batch loop and the summary."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

from .._config import _url as parse_url
from .._config import resolve
from .._exceptions import ConfigurationError, InvalidEvent
from .._scrub import Scrubber
from .._transport import AUTH, OK, RETRY
from ._delivery import Batch, Sender, Tally, describe_lines
from ._events import EventMaker
from ._interrupts import Interrupts, ignoring_sigint
from ._progress import make_progress
from ._session import Session
from ._source import FORMATS, Source, SourceError, open_source

EXIT_OK = 0
#: Some row was not stored: rejected, not delivered, or not read (``--max-errors``, a collector that stayed away).
EXIT_NOT_DELIVERED = 1
EXIT_USAGE = 2
#: Largest batch the collector accepts by default (protocol v1: 10,000 events).
MAX_BATCH = 10_000
#: Batches sent at once. The SQLite collector commits the batches that queue while a transaction runs together with
#: it, so four in flight store in fewer, larger transactions: on 1,000,000 rows, 25,900 events/s against 20,900
#: with two (3 December 2026), for up to 9 batches held in memory instead of 5.
DEFAULT_IN_FLIGHT = 4


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use a positive integer")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use 0 or a positive integer")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use a positive number of seconds")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``import`` arguments on ``parser``."""
    parser.add_argument("file", metavar="FILE", help="JSON Lines or CSV file, '-' for stdin; may be gzip-compressed")
    parser.add_argument("--format", choices=FORMATS, help="default: csv for *.csv[.gz], else jsonl")
    parser.add_argument("--url", help="collector base URL (default: SQREEN_URL, else http://127.0.0.1:8707)")
    parser.add_argument("--token", help="the app's API key on the collector (default: SQREEN_TOKEN)")
    parser.add_argument("--app", help="app name, unless the API key names one (default: SQREEN_APP_NAME)")
    parser.add_argument("--max-errors", type=_count, default=None, metavar="N",
                        help="stop once more than N rows were rejected (default: no limit)")
    parser.add_argument("--batch-size", type=_positive_int, default=2000, metavar="N", help="events per request")
    parser.add_argument("--in-flight", type=_positive_int, default=DEFAULT_IN_FLIGHT, metavar="N",
                        help=f"batches sent at once (default {DEFAULT_IN_FLIGHT})")
    parser.add_argument("--gzip", choices=("auto", "always", "never"), default="auto",
                        help="compress batches (auto: unless the collector is on loopback)")
    parser.add_argument("--retry-for", type=_seconds, default=300.0, metavar="SECONDS",
                        help="give up when the collector refuses or misses a batch for this long (default 300)")
    parser.add_argument("--progress-every", type=_seconds, default=5.0, metavar="SECONDS",
                        help="seconds between progress lines when stderr is not a terminal (default 5)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress, and no summary unless some row was not stored")


def _error(message: str) -> int:
    print(f"sqreen-mw import: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _origin(given: str | None, variable: str, option: str) -> str:
    """Where a setting came from, as resolve() picks it: the option, else the environment variable, else the
    default."""
    if given is not None and given.strip():
        return f"from {option}"
    if os.environ.get(variable, "").strip():
        return f"from {variable}"
    return f"the default: pass {option} or set {variable}"


def run(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """Run an import; :return: 0 when every row is stored (or already was), 1 when some is not, 2 on usage errors.

    A Ctrl-C at any point, start-up included, ends with the same account: the summary, the line after which the
    import stopped, and exit code 1 (or, once the summary is out, the code it gave).
    """
    out = out or sys.stdout
    started = time.monotonic()
    result = _Result()
    try:
        with Interrupts() as interrupts:
            return _start(args, out, interrupts, result)
    except KeyboardInterrupt:
        if result.code is not None:  # while logging out, after the summary
            return result.code
        with ignoring_sigint():  # before the first row: the account of nothing done, as a Ctrl-C later gives
            return _summary(args, Tally(), 0, 0, "interrupted", 0, time.monotonic() - started, out)


@dataclass
class _Result:
    code: int | None = None  # set once the summary is printed


def _start(args: argparse.Namespace, out: IO[str], interrupts: Interrupts, result: _Result) -> int:
    if args.batch_size > MAX_BATCH:
        return _error(f"--batch-size must be at most {MAX_BATCH} (the collector's limit)")
    url = args.url if args.url and args.url.strip() else None  # an empty --url is not given, as SQREEN_URL=""
    try:
        if url is not None:
            parse_url("--url", url)  # named as the user wrote it (resolve() would say "url")
        settings = resolve({"token": args.token, "url": url, "app_name": args.app})
        scrubber = Scrubber(
            enabled=settings["strip_sensitive_data"],
            sensitive_keys=settings["sensitive_keys"],
            sensitive_values=settings["sensitive_values"],
        )
    except ConfigurationError as exc:
        return _error(str(exc))
    if not settings["token"]:
        return _error("no API key: pass --token KEY or set SQREEN_TOKEN")
    try:
        source = open_source(args.file, args.format)
    except SourceError as exc:
        return _error(str(exc))
    try:
        session = Session(
            settings["url"], settings["token"], settings["app_name"], settings["request_timeout"], gzip=args.gzip
        )
    except BaseException:
        source.close()
        raise
    where = f"{settings['url']} ({_origin(url, 'SQREEN_URL', '--url')})"
    try:
        login = session.login()
        if login.kind == AUTH:
            key = _origin(args.token, "SQREEN_TOKEN", "--token")
            return _error(f"the collector at {where} refused the API key ({key}): {login.reason}")
        if login.kind != OK:
            network = login.kind == RETRY and login.reason.startswith(("Connect", "Timeout", "ReadTimeout"))
            hint = "is the collector (sqreen-mw serve) running there?" if network else "is it a sqreen-mw collector?"
            return _error(f"cannot log in to the collector at {where}: {login.reason}; {hint}")
        return _import(args, source, session, EventMaker(scrubber, session.app), out, interrupts, result)
    finally:
        try:
            _log_out(session, interrupts)  # a Ctrl-C cuts it short (a collector that does not answer): it expires
        except KeyboardInterrupt:
            if result.code is None:
                raise
        finally:
            source.close()


def _log_out(session: Session, interrupts: Interrupts) -> None:
    """Log out and close the session on a helper thread, while this one waits for it or for a Ctrl-C.

    A ``KeyboardInterrupt`` raised by the signal handler lands wherever this thread is, which during a request is
    often a weakref callback or a finalizer: Python prints it there ("Exception ignored in ...") and goes on, and
    the wait for a collector that does not answer would not be cut short. Held, the handler only notes the Ctrl-C,
    and the wait, polling for it, raises ``KeyboardInterrupt`` here instead. The session is then left to the helper,
    which closes it once the request ends (or the process exits).
    """

    def log_out() -> None:
        try:
            session.logout()
        finally:
            session.close()

    helper = threading.Thread(target=log_out, name="sqreen-mw-import-logout", daemon=True)
    with interrupts.held():
        helper.start()
        while helper.is_alive() and not interrupts.pending:
            helper.join(0.05)


def _import(
    args: argparse.Namespace, source: Source, session: Session, maker: EventMaker, out: IO[str],
    interrupts: Interrupts | None = None, result: _Result | None = None,
) -> int:
    if interrupts is None:
        interrupts = Interrupts()  # not entered: a Ctrl-C is raised wherever it lands, as Python does
    if result is None:
        result = _Result()
    progress = make_progress(source.size, quiet=args.quiet, every=args.progress_every)
    tally = Tally()

    def reject(line: int, reason: str) -> None:
        progress.message(f"line {line}: {reason}")

    sender = Sender(
        session, tally, reject, in_flight=args.in_flight, retry_for=args.retry_for, on_retry=progress.retrying
    )
    rows = local_rejected = 0
    last_line = 0
    stopped: str | None = None
    events: list[bytes] = []
    lines: list[int] = []
    make, limit, size = maker.make, args.max_errors, args.batch_size
    started = time.monotonic()
    try:
        # A row counts as handled (rows, last_line) only once it is in the batch or rejected: a Ctrl-C anywhere in
        # between leaves it among the "later lines" that the summary says were not imported.
        for line, row in source.rows():
            if isinstance(row, str):
                reason = row
            else:
                try:
                    event = make(row)
                except InvalidEvent as exc:
                    reason = str(exc)
                else:
                    events.append(event)
                    lines.append(line)
                    last_line = line
                    rows += 1
                    if len(events) >= size:
                        # Queued and replaced by the next, or neither: a Ctrl-C in between would send it twice.
                        with interrupts.held():
                            if sender.put(Batch(events, lines), interrupts.is_pending):
                                events, lines = [], []
                        progress.update(rows, source.position(), local_rejected + tally.rejected)
                        if sender.failure:
                            stopped = sender.failure
                            break
                    continue
            local_rejected += 1
            last_line = line
            rows += 1
            progress.message(f"line {line}: {reason}")
            if limit is not None and local_rejected + tally.rejected > limit:
                stopped = f"more than {limit} rejected rows (--max-errors)"
                break
    except SourceError as exc:
        stopped = str(exc)
    except KeyboardInterrupt:
        interrupts.handled()
        stopped = "interrupted"
        del events[len(lines) :]  # interrupted between the two appends: that row was not handled
        if lines and lines[-1] > last_line:  # appended, but interrupted before it was counted
            last_line = lines[-1]
            rows += 1
    try:
        if stopped != "interrupted":
            if events:
                with interrupts.held():
                    if sender.put(Batch(events, lines), interrupts.is_pending):
                        events, lines = [], []
            sender.close()
    except KeyboardInterrupt:  # while waiting for the collector: what is not delivered yet is named, now
        interrupts.handled()
        stopped = stopped or "interrupted"
        interrupted = True
    else:
        interrupted = stopped == "interrupted"
    # Another Ctrl-C from here on would only lose the account of what was and was not delivered: it is kept for
    # the logout that follows, which it cuts short.
    with interrupts.deferred():
        if interrupted:
            sender.stop("interrupted", leftover=Batch(events, lines))
        progress.close(rows, source.position(), local_rejected + tally.rejected, done=stopped is None)
        elapsed = time.monotonic() - started
        result.code = _summary(args, tally, rows, local_rejected, stopped, last_line, elapsed, out, session.named_app)
    return result.code


def _summary(
    args: argparse.Namespace, tally: Tally, rows: int, local_rejected: int, stopped: str | None, last_line: int,
    elapsed: float, out: IO[str], app: str | None = None,
) -> int:
    rejected = local_rejected + tally.rejected
    undelivered = sorted(line for lines, _ in tally.undelivered for line in lines)
    if not args.quiet or rejected or undelivered or stopped:  # quiet silences progress, not problems
        print(
            f"{rows} rows read in {elapsed:.1f} s ({rows / max(elapsed, 1e-9):.0f} rows/s): {tally.sent} sent, "
            f"{tally.stored} stored, {tally.duplicates} duplicates, {rejected} rejected, "
            f"{len(undelivered)} not delivered, {tally.retries} retries" + (f" (app {app})" if app else ""),
            file=out, flush=True,
        )  # fmt: skip
    for lines, reason in sorted(tally.undelivered, key=lambda item: min(item[0])):  # in file order
        print(f"sqreen-mw import: lines {describe_lines(lines)} not delivered: {reason}", file=sys.stderr)
    if stopped:
        print(f"sqreen-mw import: stopped after line {last_line}: {stopped}; later lines were not imported",
              file=sys.stderr)
    if rejected:
        print(f"sqreen-mw import: {rejected} rejected rows (listed above by line) were not imported", file=sys.stderr)
    return EXIT_NOT_DELIVERED if rejected or undelivered or stopped else EXIT_OK
