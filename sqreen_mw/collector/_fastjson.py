"""JSON for the collector's ingest path: orjson when it is installed (the ``collector`` extra), else the stdlib.

Both give the same values: where orjson would differ from :mod:`json` (it reads an integer beyond 64 bits as a
float, refuses lone surrogates, a byte order mark, NaN, nesting past 1024 levels) it is not used and the stdlib
decides, with its own error messages. Stored text differs only in spelling (orjson writes non-ASCII characters as
UTF-8 where the stdlib writes ``\\u`` escapes): both read back to the same value.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - exercised by the tests with orjson hidden
    orjson = None  # type: ignore[assignment]

__all__ = ["FAST", "SCAN", "dumps", "loads", "loads_scanned", "stdlib_dumps", "stdlib_loads"]

#: Whether orjson is in use.
FAST = orjson is not None
# An integer literal of 19 digits or more may not fit in 64 bits, which orjson would turn into a float: such a body
# goes to the stdlib. Digits become "0", everything else "x", so one substring search finds a run of 19.
_DIGITS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x78 for i in range(256))
_LONG_RUN = b"0" * 19


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def stdlib_loads(raw: bytes) -> Any:
    """:func:`json.loads` refusing ``NaN`` and ``Infinity``; raises ``ValueError`` or ``RecursionError``."""
    return json.loads(raw, parse_constant=_no_constant)


#: ``raw.translate(SCAN)`` serves both the collector's value count and :func:`loads_scanned`: ``{``, ``[`` and ``,``
#: become ``{``, digits ``0``, every other byte ``x``.
SCAN = bytes(0x7B if i in b"{[," else 0x30 if 0x30 <= i <= 0x39 else 0x78 for i in range(256))


def loads_scanned(raw: bytes, scanned: bytes) -> Any:
    """:func:`loads` of ``raw`` given ``raw.translate(SCAN)`` (the digit runs are read from it, not scanned again)."""
    if FAST and _LONG_RUN not in scanned:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the stdlib decides, and words the error
    return stdlib_loads(raw)


def _fast_loads(raw: bytes) -> Any:
    return loads_scanned(raw, raw.translate(_DIGITS))


def _make_stdlib_dumps() -> Callable[[Any], str]:
    # JSONEncoder.encode() builds a C encoder on every call; for small objects that is most of the cost, so build it
    # once (2x faster on ingest). ensure_ascii keeps lone surrogates (valid JSON, invalid UTF-8) storable.
    slow = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - Python without the _json accelerator
        return slow
    c_encode = make(None, None, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)

    def encode(value: Any) -> str:
        return "".join(c_encode(value, 0))

    sample = {"k": [1, 2.5, "\u00e9\ud800", None, True, {"n": -0.0}]}
    return encode if encode(sample) == slow(sample) else slow


stdlib_dumps = _make_stdlib_dumps()


def _fast_dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # a lone surrogate, an integer beyond 64 bits: the stdlib's escaped text
        return stdlib_dumps(value)


#: Decode a JSON document (bytes); raises ``ValueError`` (bad JSON, NaN, Infinity) or ``RecursionError``.
loads: Callable[[bytes], Any] = _fast_loads if FAST else stdlib_loads
#: Compact JSON text of a value already validated (finite numbers only: orjson would write NaN as null).
dumps: Callable[[Any], str] = _fast_dumps if FAST else stdlib_dumps
