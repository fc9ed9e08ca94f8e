"""Reading an import file as a stream of rows: JSON Lines or CSV, plain or gzip, a path or ``-`` for stdin.

Nothing is loaded whole: rows come one at a time with their line number, so memory stays flat with file size.
A row is a ``dict`` in the JSON Lines shape (the ``track()`` fields), or the ``str`` reason it could not be read.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import json
import os
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, NoReturn

try:
    import orjson
except ImportError:  # pragma: no cover - exercised by the tests with orjson hidden
    orjson = None  # type: ignore[assignment]

FORMATS = ("jsonl", "csv")
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
#: A truncated gzip stream raises EOFError; a corrupt one BadGzipFile (an OSError) or zlib.error.
_READ_ERRORS = (EOFError, OSError, zlib.error)
_SINGLE_COLUMNS = {"id": "id", "name": "name", "timestamp": "timestamp"}
_REQUEST_COLUMNS = {"ip": "client_ip", "user_agent": "user_agent", "path": "path", "verb": "verb"}
_PREFIXES = {"prop.": "properties", "user.": "user_identifiers", "param.": "params"}
_TYPES = ("str", "int", "float", "bool")
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})

Row = tuple[int, dict[str, Any] | str]


class SourceError(Exception):
    """The input as a whole cannot be read (missing file, unknown CSV column, bad encoding): the import stops."""


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # one decoder: loads() with options builds one per call
# An integer literal of 19 digits or more may not fit in 64 bits, which orjson reads as a float: such a line goes
# to the stdlib. Digits become "0", everything else "x", so one substring search finds a run of 19.
_DIGITS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x78 for i in range(256))
_LONG_RUN = b"0" * 19


def _fast_decode(line: bytes) -> Any:
    """The row orjson reads from ``line`` when the stdlib would read the same, else None (the stdlib decides).

    orjson refuses what the stdlib reads differently or words differently (invalid UTF-8, a byte order mark, lone
    surrogates, NaN, 1e400, nesting past 1,024 levels): those lines take the stdlib's path and its messages.
    """
    if _LONG_RUN in line.translate(_DIGITS):
        return None
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


@dataclass
class Source:
    """An open input. ``position()`` and ``size`` (bytes of the file as stored, None for stdin) drive the ETA."""

    name: str
    format: str
    raw: IO[bytes]
    stream: IO[bytes]
    size: int | None
    _text: IO[str] | None = None
    _reader: Any = None  # csv.reader: its type is private to typeshed
    _columns: list[tuple[str, str, str, str]] = field(default_factory=list)
    # Read ahead by open_source() (check_start): JSON Lines up to the first non-blank line, CSV up to the first row
    # with a cell, given again by rows(); a read error met on the way is raised by rows(), where the others are.
    _head: list[bytes] | None = None
    _first_cells: tuple[int, list[str]] | None = None
    _deferred: SourceError | None = None

    def position(self) -> int:
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return 0

    def rows(self) -> Iterator[Row]:
        """``(line number, row)`` for each non-blank row."""
        return self._jsonl() if self.format == "jsonl" else self._csv()

    def close(self) -> None:
        if self._text is not None:
            self._text.close()
        self.stream.close()
        self.raw.close()

    def _read_error(self, exc: Exception, line: int) -> SourceError:
        if self.stream is self.raw:
            return SourceError(f"{self.name}: cannot read after line {line}: {exc}")
        what = "ends early" if isinstance(exc, EOFError) else f"is corrupt ({exc})"
        return SourceError(f"{self.name}: gzip data {what} after line {line}")

    def _jsonl(self) -> Iterator[Row]:
        decode = _DECODER.decode
        fast = _fast_decode if orjson is not None else None
        number = 0
        if self._deferred is not None:
            raise self._deferred
        try:
            lines: Iterator[bytes]
            if self._head is not None:  # read by check_start()
                lines = itertools.chain(self._head, self.stream)
            else:
                lines = iter(self.stream)
                first = next(lines, None)
                if first is not None:  # a UTF-8 byte order mark is skipped, as in a CSV
                    lines = itertools.chain((first.removeprefix(_BOM),), lines)
            for number, line in enumerate(lines, 1):
                if fast is not None:
                    row = fast(line)
                    if type(row) is dict:
                        yield number, row
                        continue
                if not line.strip():
                    continue
                try:
                    text = line.decode()
                except UnicodeDecodeError as exc:
                    yield number, f"line is not valid UTF-8: {exc}"
                    continue
                try:
                    row = decode(text)
                except ValueError as exc:
                    yield number, f"invalid JSON: {exc}"
                    continue
                except RecursionError:
                    yield number, "invalid JSON: nested too deep"
                    continue
                if type(row) is not dict:
                    yield number, f"row must be a JSON object, got {type(row).__name__}"
                    continue
                yield number, row
        except _READ_ERRORS as exc:  # raised by the file, not by the rows: the lines before were complete
            raise self._read_error(exc, number) from None

    def check_start(self) -> None:
        """Read the start of the input now, so that what would make every row fail stops the import before
        anything is sent: an input with no rows, a CSV header with an unknown column, a CSV file read as JSON Lines.

        :raises SourceError: naming the input and what is wrong.
        """
        if self.format == "csv":
            self.read_header()
            self._peek_csv_row()
        else:
            self._peek_jsonl()

    def _peek_jsonl(self) -> None:
        head: list[bytes] = []
        try:
            for line in self.stream:
                head.append(line if head else line.removeprefix(_BOM))  # a UTF-8 byte order mark is skipped
                if head[-1].strip():
                    break
        except _READ_ERRORS as exc:
            self._deferred = self._read_error(exc, len(head))
        self._head = head
        if self._deferred is not None:
            return
        if not head or not head[-1].strip():
            raise SourceError(f"{self.name} {'has only blank lines' if head else 'is empty'}: nothing to import")
        cells = _csv_header_cells(head[-1])
        if cells is not None:
            shown = ", ".join(cells[:4]) + (", ..." if len(cells) > 4 else "")
            raise SourceError(
                f"{self.name}: line {len(head)} is not JSON but a CSV header ({shown}): looks like CSV: "
                "use --format csv"
            )

    def _peek_csv_row(self) -> None:
        reader = self._reader
        number = start = reader.line_num + 1
        try:
            for cells in reader:
                number, start = start, reader.line_num + 1
                if any(cells):
                    self._first_cells = (number, cells)
                    return
        except _READ_ERRORS as exc:
            self._deferred = self._read_error(exc, reader.line_num)
            return
        except csv.Error as exc:
            self._deferred = SourceError(f"{self.name}: line {reader.line_num}: bad CSV: {exc}")
            return
        raise SourceError(f"{self.name} has a CSV header and no rows: nothing to import")

    def read_header(self) -> None:
        """CSV: read and check the header now, so a bad column stops the import before anything is sent."""
        if self.format != "csv":
            return
        self._text = io.TextIOWrapper(self.stream, encoding="utf-8-sig", errors=_MARK_BAD_UTF8, newline="")
        self._reader = csv.reader(self._text, strict=True)
        try:
            header = next(self._reader, None)
            blank = 0
            while header == []:  # blank lines before the header
                blank += 1
                header = next(self._reader, None)
        except csv.Error as exc:
            raise SourceError(f"{self.name}: cannot read the CSV header: {exc}") from None
        except _READ_ERRORS as exc:
            raise self._read_error(exc, 0) from None
        if header is None:
            raise SourceError(f"{self.name} {'has only blank lines' if blank else 'is empty'}: nothing to import")
        if header and _bad_utf8(header):
            raise SourceError(f"{self.name}: the CSV header is not valid UTF-8 ({_bad_utf8(header)})")
        if header and not any(_is_column(name) for name in header):  # a data row where the header should be
            shown = ", ".join(repr(cell) for cell in header[:3]) + (", ..." if len(header) > 3 else "")
            raise SourceError(
                f"the first line of a CSV file names its columns (name, timestamp, and any of id, ip, user_agent, "
                f"path, verb, prop.<key>, user.<key>, param.<key>); this one names none ({shown}): add a header line"
            )
        self._columns = [_column(name) for name in header or []]
        seen: set[tuple[str, str]] = set()
        for column in self._columns:
            if column[:2] in seen:
                raise SourceError(f"CSV column {column[2]!r} appears twice")
            seen.add(column[:2])
        missing = [name for name in ("name", "timestamp") if (name, "") not in seen]
        if missing:
            raise SourceError(f"the CSV header has no {' and no '.join(missing)} column: every event needs both")

    def _csv(self) -> Iterator[Row]:
        if self._reader is None:
            self.read_header()
        if self._deferred is not None:
            raise self._deferred
        reader, columns = self._reader, self._columns
        assert reader is not None  # noqa: S101 -- set by read_header
        try:
            start = reader.line_num + 1
            rows: Iterator[list[str]] = reader
            if self._first_cells is not None:  # read by check_start(): its line, then the reader's next
                start, first = self._first_cells
                rows = itertools.chain((first,), reader)
            for cells in rows:
                number, start = start, reader.line_num + 1
                if not any(cells):
                    continue
                if len(cells) != len(columns):
                    yield number, f"row has {len(cells)} cells, the header has {len(columns)} columns"
                    continue
                if _BAD_UTF8[0] and _bad_utf8(cells):  # some byte was not UTF-8 (in this file or another)
                    yield number, f"line is not valid UTF-8 ({_bad_utf8(cells)})"
                    continue
                try:
                    yield number, _csv_row(columns, cells)
                except ValueError as exc:
                    yield number, str(exc)
        except _READ_ERRORS as exc:
            raise self._read_error(exc, reader.line_num) from None
        except csv.Error as exc:
            raise SourceError(f"{self.name}: line {reader.line_num}: bad CSV: {exc}") from None


#: Bytes that are not UTF-8 become lone surrogates (as with "surrogateescape"), and are counted, so that a row holding
#: one is refused by line (as in JSON Lines) while a file without any pays for no search.
_MARK_BAD_UTF8 = "sqreen_mw.import.mark"
_BAD_UTF8 = [0]
_ESCAPE = codecs.lookup_error("surrogateescape")
_SURROGATE = re.compile("[\udc80-\udcff]")


def _mark_bad_utf8(exc: UnicodeError) -> tuple[str, int]:
    _BAD_UTF8[0] += 1
    text, end = _ESCAPE(exc)
    return str(text), end


codecs.register_error(_MARK_BAD_UTF8, _mark_bad_utf8)


def _bad_utf8(cells: list[str]) -> str:
    """``byte 0xe9 in column 3`` for the first byte of ``cells`` that was not UTF-8, else ""."""
    for column, cell in enumerate(cells, 1):
        match = _SURROGATE.search(cell)
        if match:
            return f"byte 0x{ord(match.group()) - 0xDC00:02x} in column {column}"
    return ""


def _is_column(header: str) -> bool:
    try:
        _column(header)
    except SourceError:
        return False
    return True


def _column(header: str) -> tuple[str, str, str, str]:
    """A CSV header cell as (field, key, header, type); raises SourceError naming an unknown column."""
    name, _, kind = header.strip().partition(":")
    kind = kind or "str"
    if name in _SINGLE_COLUMNS or name in _REQUEST_COLUMNS:
        if kind != "str":
            raise SourceError(f"CSV column {header!r}: only prop.<key> and param.<key> columns take a :type")
        return (_SINGLE_COLUMNS.get(name) or "request", _REQUEST_COLUMNS.get(name, ""), header, kind)
    for prefix, target in _PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            if kind not in _TYPES or (target == "user_identifiers" and kind not in ("str", "int")):
                allowed = "str or int" if target == "user_identifiers" else ", ".join(_TYPES)
                raise SourceError(f"CSV column {header!r}: unknown type {kind!r}, use {allowed}")
            return (target, name[len(prefix) :], header, kind)
    raise SourceError(
        f"unknown CSV column {header!r}: use id, name, timestamp, ip, user_agent, path, verb, prop.<key>, "
        "user.<key> or param.<key> (a prop./param./user. column may end with :int, :float or :bool)"
    )


def _convert(header: str, kind: str, cell: str) -> Any:
    if kind == "str":
        return cell
    text = cell.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ValueError(f"column {header!r} must be {'an' if kind == 'int' else 'a'} {kind}, got {cell!r}") from None
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"column {header!r} must be a bool (true/false), got {cell!r}")


def _csv_row(columns: list[tuple[str, str, str, str]], cells: list[str]) -> dict[str, Any]:
    # An empty cell means "not given": the key is left out (CSV cannot tell an empty string from nothing).
    row: dict[str, Any] = {}
    request: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for (target, key, header, kind), cell in zip(columns, cells, strict=True):
        if cell == "":
            continue
        if target == "request":
            request[key] = cell
        elif target == "params":
            params[key] = _convert(header, kind, cell)
        elif key:
            row.setdefault(target, {})[key] = _convert(header, kind, cell)
        else:
            row[target] = cell
    if params:
        request["params"] = params
    if request:
        row["request"] = request
    return row


#: A CSV header cell as people write them: a letter or "_", then letters, digits, spaces, ".", ":", "-" (no quotes,
#: braces or brackets, which a piece of a JSON object would show).
_HEADER_CELL = re.compile(r"[^\W\d][\w .:-]*")


def _csv_header_cells(line: bytes) -> list[str] | None:
    """The cells of ``line`` when it is not JSON but reads as a CSV header of two or more names, else None."""
    try:
        text = line.decode()
        _DECODER.decode(text)
    except (UnicodeDecodeError, RecursionError):
        return None
    except ValueError:
        pass
    else:
        return None
    try:
        cells = [cell.strip() for cell in next(csv.reader([text]), [])]
    except csv.Error:
        return None
    return cells if len(cells) >= 2 and all(_HEADER_CELL.fullmatch(cell) for cell in cells) else None


def guess_format(path: str) -> str:
    """``csv`` for ``*.csv`` and ``*.csv.gz``, else ``jsonl``."""
    name = path.lower().removesuffix(".gz")
    return "csv" if name.endswith(".csv") else "jsonl"


def open_source(path: str, format: str | None = None) -> Source:
    """Open ``path`` (``-`` is stdin); gzip is recognised by its magic bytes, whatever the name.

    :raises SourceError: the file cannot be opened, or the format is unknown.
    """
    fmt = format or guess_format(path)
    if fmt not in FORMATS:
        raise SourceError(f"unknown format {fmt!r}: use jsonl or csv")
    try:
        # stdin through its file descriptor: a binary buffer we can peek at, left open for the interpreter.
        buffered = open(sys.stdin.fileno(), "rb", closefd=False) if path == "-" else open(path, "rb")
        size = None if path == "-" else os.fstat(buffered.fileno()).st_size
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror}") from None
    stream: IO[bytes] = buffered
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        stream = gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
    source = Source("stdin" if path == "-" else path, fmt, buffered, stream, size)
    try:
        source.check_start()
    except SourceError:
        source.close()
        raise
    return source
