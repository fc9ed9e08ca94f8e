"""The canonical JSON of an imported event, and its scrubbing, at a few microseconds a row.

**Encoding.** The canonical form is pinned (``docs/import.md``: ids are derived from it, so it must never change):
sorted keys, no spaces, non-ASCII characters (and U+007F) as ``\\u`` escapes, floats as Python's ``repr``, which is
what the stdlib's encoder writes. orjson, when installed, writes the same bytes several times faster for almost
every event; where it would not (non-ASCII text, U+007F, a float between 1e-10 and 1e-4, which orjson spells
``0.00001`` or ``1e-7`` where Python writes ``1e-05`` and ``1e-07``, an integer beyond 64 bits) its output is
recognised and the stdlib writes the event instead. NaN and infinities are refused before either runs (orjson
would write ``null``).

**Scrubbing.** :class:`RowScrubber` gives exactly :meth:`Scrubber.scrub`'s result, remembering it per string: an
import repeats the same user agents, paths and property values on row after row, and the value rules cost
microseconds per string. Only flat objects (and one level of nested object, the request's ``params``) of plain
strings, numbers, booleans and nulls take this path; anything else (lists, deeper nesting, strings that hold JSON,
integers that could be card numbers) goes to :meth:`Scrubber.scrub` whole.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from .._schema import REDACTED
from .._scrub import Scrubber

try:
    import orjson
except ImportError:  # pragma: no cover - exercised by the tests with orjson hidden
    orjson = None  # type: ignore[assignment]

__all__ = ["FAST", "RowScrubber", "canonical", "stdlib_canonical"]

#: Whether orjson is in use.
FAST = orjson is not None
_stdlib_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False).encode
# orjson's spellings of floats in [1e-10, 1e-4): "0.0000..." or a one-digit negative exponent ("e-7").
_SHORT_EXPONENT = re.compile(rb"e-[0-9](?![0-9])")
#: Strings remembered by RowScrubber (bounded: cleared when full), and the longest remembered.
CACHE_SIZE = 16_384
CACHE_MAX_LENGTH = 512
_MIN_SCRUBBED = 5  # Scrubber leaves shorter strings as they are
_CARD_INTS = range(10**12, 10**19)  # Scrubber checks integers in this range for card numbers


def stdlib_canonical(value: Any) -> bytes:
    """The canonical JSON of ``value`` by the stdlib; raises ``ValueError`` on NaN or an infinity."""
    return _stdlib_encode(value).encode()


def _orjson_canonical(value: Any) -> bytes:
    try:
        out: bytes = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits, nesting past 254 levels
        return stdlib_canonical(value)
    if not out.isascii() or b"\x7f" in out or b"0.0000" in out or (b"e-" in out and _SHORT_EXPONENT.search(out)):
        return stdlib_canonical(value)
    return out


#: The canonical JSON of a value with finite numbers only (checked by the caller: orjson writes NaN as null).
canonical: Callable[[Any], bytes] = _orjson_canonical if FAST else stdlib_canonical


class RowScrubber:
    """:meth:`Scrubber.scrub` with its result remembered per string.

    :param scrubber: the rules (the SDK's settings).
    """

    __slots__ = ("_enabled", "_keys", "_scrub", "_sensitive", "_strings")

    def __init__(self, scrubber: Scrubber) -> None:
        self._scrub = scrubber.scrub
        self._sensitive = scrubber.is_sensitive_key
        self._enabled = scrubber.enabled
        self._strings: dict[str, str] = {}
        self._keys: dict[str, bool] = {}

    def scrub(self, value: Any) -> tuple[Any, bool]:
        """The scrubbed copy of ``value``, and whether it is known to hold finite numbers only."""
        if not self._enabled:
            return value, False
        if type(value) is dict:
            flat = self._flat(value, True)
            if flat is not None:
                return flat, True
        return self._scrub(value), False

    def _flat(self, value: dict[Any, Any], nested: bool) -> dict[str, Any] | None:
        # None: not the simple shape (or a value needing Scrubber's own walk): the caller scrubs it whole.
        out: dict[str, Any] = {}
        strings, keys = self._strings, self._keys
        for key, item in value.items():
            hidden = keys.get(key)
            if hidden is None:
                if type(key) is not str:
                    return None
                hidden = self._sensitive(key)
                if len(keys) >= CACHE_SIZE:
                    keys.clear()
                keys[key] = hidden
            if hidden:
                out[key] = REDACTED
                continue
            kind = type(item)
            if kind is str:
                done = strings.get(item)
                if done is None:
                    if len(item) >= _MIN_SCRUBBED:
                        first = item[0]
                        if first == "{" or first == "[" or first.isspace() or len(item) > CACHE_MAX_LENGTH:
                            return None  # JSON text is parsed and scrubbed at its depth: Scrubber's walk
                        done = self._scrub(item)
                    else:
                        done = item
                    if len(strings) >= CACHE_SIZE:
                        strings.clear()
                    strings[item] = done
                item = done
            elif kind is dict:
                if not nested:
                    return None
                item = self._flat(item, False)
                if item is None:
                    return None
            elif kind is int:
                if item in _CARD_INTS:
                    return None
            elif kind is float:
                if not math.isfinite(item):
                    return None
            elif kind is not bool and item is not None:
                return None
            out[key] = item
        return out
