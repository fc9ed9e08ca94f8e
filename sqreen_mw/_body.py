"""Request bodies: a tee that records what the application reads, capped, and a parser for what was recorded.

The middleware never consumes a body the application needs. ASGI ``receive`` and WSGI ``wsgi.input`` are wrapped so
the chunks the application reads are also copied here, up to ``max_body_bytes``. When ``collect_body=True`` is asked
for a WSGI request whose body the application has not read yet, the body (if its ``Content-Length`` fits the cap) is
read into memory and replayed to the application on its next reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from ._schema import TRUNCATION_MARKER, representable

#: Default cap on a collected body, in bytes.
DEFAULT_MAX_BODY_BYTES = 10_000


def flat_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``[(k, v), ...]`` to a dict; a repeated key gets the list of its values."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            prev = out[key]
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out


#: What a non-finite float becomes on the wire (JSON has no such numbers): the text JavaScript prints for it.
NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def finite_or_text(value: float) -> float | str:
    """``value`` when finite, else ``"Infinity"``, ``"-Infinity"`` or ``"NaN"``."""
    if math.isfinite(value):
        return value
    return NON_FINITE.get(value, "NaN")


def jsonable(value: Any, depth: int = 0, max_depth: int = 20) -> Any:
    """A JSON-safe copy: containers copied (``max_depth`` levels, deeper ones replaced by ``TRUNCATION_MARKER``),
    non-finite floats as ``"Infinity"``/``"-Infinity"``/``"NaN"``, lone surrogates in text (keys too) as U+FFFD,
    other objects as their ``str()``.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return representable(value)
    if isinstance(value, float):
        return finite_or_text(value)
    if depth >= max_depth:
        return TRUNCATION_MARKER
    if isinstance(value, dict):
        return {representable(str(k)): jsonable(v, depth + 1, max_depth) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth + 1, max_depth) for v in value]
    try:
        return representable(str(value))
    except Exception as exc:  # an object whose __str__ raises: keep the event, say what it was
        return f"<{type(value).__name__} object whose str() raised {type(exc).__name__}>"


def _finite_float(text: str) -> float | str:
    return finite_or_text(float(text))


# NaN/Infinity kept as text (JSON has no such numbers), and so is what overflows a float (1e400). One decoder for every
# body: json.loads with these options would build one per call.
_BODY_JSON = json.JSONDecoder(parse_constant=str, parse_float=_finite_float)


def parse_body(content_type: str, data: bytes, complete: bool) -> Any:
    """Parse a recorded body: JSON and url-encoded forms when complete, else UTF-8 text (marked when cut)."""
    if not data:
        return None
    ctype = content_type.lower()
    if complete:
        if "json" in ctype:
            try:
                return _BODY_JSON.decode(data.decode(json.detect_encoding(data), "surrogatepass"))  # = json.loads
            except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses: keep as text
                pass
        elif ctype.startswith("application/x-www-form-urlencoded"):
            return flat_pairs(parse_qsl(data.decode("utf-8", "replace"), keep_blank_values=True))
    if ctype.startswith("multipart/"):
        return f"[multipart body, {len(data)} bytes{'' if complete else ' or more'}]"
    text = data.decode("utf-8", "replace")
    return text if complete else text + TRUNCATION_MARKER


class BodyTee:
    """Records the first ``limit`` bytes of a body as the application reads it."""

    __slots__ = ("_chunks", "_parsed", "_size", "ended", "limit", "overflow", "read_any")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.ended = False
        self.overflow = False
        self.read_any = False
        self._parsed: tuple[int, int, Any] | None = None

    def feed(self, data: bytes, ended: bool) -> None:
        self.read_any = True
        if data and not self.overflow:
            room = self.limit - self._size
            if len(data) > room:
                data = data[:room]
                self.overflow = True
            self._chunks.append(data)
            self._size += len(data)
        if ended:
            self.ended = True

    def prefetch(self) -> None:
        """Read the body now if the application has not (only where that is safe)."""

    def captured(self, max_bytes: int) -> tuple[bytes, bool]:
        """The recorded bytes (at most ``max_bytes``) and whether they are the whole body."""
        if not self.read_any:
            self.prefetch()
        data = b"".join(self._chunks)
        complete = self.ended and not self.overflow and len(data) <= max_bytes
        return data[:max_bytes], complete

    def parsed(self, content_type: str, max_bytes: int) -> Any:
        """:func:`parse_body` of the captured bytes, computed once per request (until more is read)."""
        cached = self._parsed
        if cached is not None and cached[0] == max_bytes and cached[1] == self._size:
            return cached[2]
        data, complete = self.captured(max_bytes)
        value = parse_body(content_type, data, complete)
        self._parsed = (max_bytes, self._size, value)
        return value


Message = MutableMapping[str, Any]


class ASGIBodyTee(BodyTee):
    """Wraps an ASGI ``receive`` callable."""

    __slots__ = ("_receive",)

    def __init__(self, receive: Callable[[], Awaitable[Message]], limit: int) -> None:
        # Created for every request with a body: the fields are set here rather than through super().__init__.
        self.limit = limit
        self._chunks = []
        self._size = 0
        self.ended = self.overflow = self.read_any = False
        self._parsed = None
        self._receive = receive

    async def receive(self) -> Message:
        message = await self._receive()
        self.record(message)
        return message

    def record(self, message: Message) -> None:
        """Record what a message the server gave ``receive()`` holds of the body (the compiled tee's reference)."""
        if message["type"] == "http.request":
            self.read_any = True
            body = message.get("body")
            if body:
                size = self._size + len(body)
                if size <= self.limit and not self.overflow:  # the common case, inline
                    self._chunks.append(body)
                    self._size = size
                else:
                    self.feed(body, False)
            if not message.get("more_body"):
                self.ended = True


class WSGIInput(BodyTee):
    """Stands in for ``environ["wsgi.input"]``: the application reads through it, the tee records."""

    __slots__ = ("_buffer", "_prefetched", "_remaining", "_rewound", "_stream")

    def __init__(self, stream: Any, content_length: int | None, limit: int) -> None:
        self.limit = limit  # (fields set here rather than through super().__init__: one per request with a body)
        self._chunks = []
        self._size = 0
        self.ended = self.overflow = self.read_any = False
        self._parsed = None
        self._stream = stream
        self._remaining = content_length
        self._prefetched = False
        self._rewound = False  # prefetched, then the stream moved back: the app reads it itself, already recorded
        self._buffer = b""  # prefetched bytes not yet handed to the application

    def _from_buffer(self, size: int) -> bytes:
        # After a prefetch the whole body is in the buffer: never touch the stream again (it may block at EOF).
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _seen(self, data: bytes) -> bytes:
        if self._remaining is not None:
            self._remaining -= len(data)
        if not self._rewound:
            self.feed(data, not data or self._remaining == 0)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if self._prefetched:
            return self._from_buffer(-1 if size is None else size)
        data: bytes = self._stream.read() if size is None or size < 0 else self._stream.read(size)
        # _seen(data), inline: most bodies are read in one call
        remaining = self._remaining
        if remaining is not None:
            self._remaining = remaining = remaining - len(data)
        if not self._rewound:
            total = self._size + len(data)
            if data and total <= self.limit and not self.overflow:  # feed(), its common case
                self.read_any = True
                self._chunks.append(data)
                self._size = total
                if remaining == 0:
                    self.ended = True
            else:
                self.feed(data, not data or remaining == 0)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        size = -1 if size is None else size
        if self._prefetched:
            end = self._buffer.find(b"\n") + 1 or len(self._buffer)
            return self._from_buffer(end if size < 0 else min(end, size))
        return self._seen(self._stream.readline() if size < 0 else self._stream.readline(size))

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def _tell(self) -> int | None:
        # Where a seekable stream stands (BytesIO of test clients, spooled files), else None.
        try:
            if not self._stream.seekable():
                return None
            return int(self._stream.tell())
        except Exception:  # no seekable()/tell(), or a stream that says seekable and is not
            return None

    def prefetch(self) -> None:
        if self._remaining is None or not 0 < self._remaining <= self.limit:
            return
        start, length = self._tell(), self._remaining
        chunks = []
        while self._remaining > 0:  # a read may return less than asked (raw streams)
            chunk = self._stream.read(self._remaining)
            if not chunk:
                break
            chunks.append(chunk)
            self._remaining -= len(chunk)
        data = b"".join(chunks)
        self.feed(data, self._remaining == 0)
        if start is not None:
            try:
                self._stream.seek(start)
            except Exception:  # noqa: S110 - cannot move back: replay from the buffer below
                pass
            else:  # the server's stream is as it was: the app (and whoever reads it later) reads it directly
                self._remaining = length
                self._rewound = True
                return
        self._buffer = data
        self._prefetched = True

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()
