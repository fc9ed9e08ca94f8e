"""The event schema shared by the SDK and the collector: limits, validators and wire payload types.

Validators raise :class:`InvalidEvent` with a message naming the argument, the rule and the value given.
They are on the hot path of ``track()``: the common case (a small dict of plain scalars) takes one loop.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypedDict

from ._exceptions import InvalidEvent
from ._native import speedups

MAX_NAME_LENGTH = 255
MAX_PROPERTIES = 16
MAX_KEY_LENGTH = 255
#: Longer string property values are cut to this many characters, the last ones being TRUNCATION_MARKER.
MAX_STRING_LENGTH = 4096
TRUNCATION_MARKER = "...[truncated]"
RESERVED_PREFIX = "sq."
REDACTED = "[REDACTED]"

Scalar = str | int | float | bool | None
Properties = dict[str, Scalar]
UserIdentifiers = dict[str, str | int]

_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
#: Integers must fit in 64 bits (what JSON consumers and SQLite keep exactly).
MIN_INT, MAX_INT = -(2**63), 2**63 - 1
#: Timestamps later than now plus this many seconds (clock skew between app servers and the collector) are refused,
#: by the SDK and the collector alike: a far-future event would sit at the top of every newest-first page forever.
MAX_FUTURE_SKEW = 3600.0
_MIN_TS = datetime(1, 1, 1, tzinfo=UTC).timestamp()
_MAX_TS = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC).timestamp()


def _show(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > 256:  # repr of a huge int is slow, or refused
        return f"an int of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception as exc:  # an object whose __repr__ raises must give InvalidEvent, not that exception
        return f"<{type(value).__name__} object whose repr() raised {type(exc).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _as_str(arg: str, value: str) -> str:
    # A str subclass may override __str__; a failing one is the caller's bad value, reported as InvalidEvent.
    try:
        return str.__str__(value)
    except Exception as exc:  # pragma: no cover - str.__str__ of a str does not fail
        raise InvalidEvent(f"{arg} could not be read as text: {type(exc).__name__}") from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def representable(text: str) -> str:
    """``text`` with each lone surrogate (not UTF-8 encodable, refused by the collector) replaced by U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def _has_lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def check_name(name: object, *, allow_reserved: bool = False) -> str:
    """Return ``name`` if it is a valid event name, else raise :class:`InvalidEvent`."""
    if type(name) is not str:
        if not isinstance(name, str):
            raise InvalidEvent(f"event_name must be a str, got {type(name).__name__} {_show(name)}")
        name = _as_str("event_name", name)
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidEvent(f"event_name must be 1 to {MAX_NAME_LENGTH} characters long, got {len(name)}: {_show(name)}")
    if not allow_reserved and name.startswith(RESERVED_PREFIX):
        raise InvalidEvent(f"event_name must not start with {RESERVED_PREFIX!r} (reserved for sqreen_mw), got {name!r}")
    if _has_lone_surrogate(name):  # the collector refuses such names: refuse them here, where the bug is
        raise InvalidEvent(f"event_name must be valid Unicode, got a lone surrogate in {_show(name)}")
    if "\x00" in name:  # nor can a database's text column hold a NUL (PostgreSQL refuses it)
        raise InvalidEvent(f"event_name must not contain a NUL character, got {_show(name)}")
    return name


def _scalar(arg: str, key: str, value: object) -> Scalar:
    # Slow path of check_properties: subclasses of the JSON scalars, non-finite floats, long strings.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise InvalidEvent(f"{arg}[{key!r}] must fit in 64 bits (-2**63 to 2**63-1), got {_show(value)}")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent(f"{arg}[{key!r}] must be a finite number (JSON has no NaN/Infinity), got {value!r}")
        return float(value)
    if isinstance(value, str):
        value = _as_str(f"{arg}[{key!r}]", value)
        if len(value) > MAX_STRING_LENGTH:
            return value[: MAX_STRING_LENGTH - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
        return value
    if value is None:
        return None
    raise InvalidEvent(
        f"{arg}[{key!r}] must be a str, int, float, bool or None, got {type(value).__name__} {_show(value)}"
    )


def _bad_key(arg: str, key: object) -> InvalidEvent:
    if not isinstance(key, str):
        return InvalidEvent(f"{arg} keys must be str, got {type(key).__name__} {_show(key)}")
    return InvalidEvent(f"{arg} keys must be 1 to {MAX_KEY_LENGTH} characters long, got {_show(key)}")


#: Property keys that passed the key checks (plain ``str``, 1 to ``MAX_KEY_LENGTH`` characters), each with its part of
#: the event's size estimate; bounded.
_KNOWN_KEYS: dict[str, int] = {}
_MAX_KNOWN_KEYS = 4096
_common_properties = None if speedups is None else speedups.check_common_properties  # the loop below, compiled


def check_properties(properties: object, arg: str = "properties") -> tuple[Properties, int]:
    """Validate and copy event properties.

    :return: the copy and an estimate of its size in bytes (for the queue's byte bound).
    :raises InvalidEvent: not a mapping, more than 16 entries, a key that is not a short ``str``, a value that is not
        a JSON scalar.
    """
    if _common_properties is not None:
        checked = _common_properties(properties, _KNOWN_KEYS)
        if checked is not None:
            return checked
    elif type(properties) is dict and len(properties) <= MAX_PROPERTIES:
        # The common case: keys validated before (their size estimate cached), plain scalar values in range.
        known = _KNOWN_KEYS
        size = 0
        try:
            for key, value in properties.items():
                if type(key) is not str:  # (a str subclass equal to a known key: the checks below say what is wrong)
                    break
                size += known[key]
                tv = type(value)
                if tv is str:
                    if len(value) > MAX_STRING_LENGTH:
                        break
                    size += len(value)
                elif tv is int:
                    if not MIN_INT <= value <= MAX_INT:
                        break
                elif tv is float:
                    if not math.isfinite(value):
                        break
                elif tv is not bool and value is not None:
                    break
            else:
                return properties.copy(), size
        except KeyError:  # a key not seen yet
            pass
    if type(properties) is not dict:
        if not isinstance(properties, Mapping):
            raise InvalidEvent(f"{arg} must be a mapping, got {type(properties).__name__} {_show(properties)}")
        properties = dict(properties)
    if len(properties) > MAX_PROPERTIES:
        raise InvalidEvent(
            f"{arg} may have at most {MAX_PROPERTIES} entries, got {len(properties)}: {sorted(map(str, properties))}"
        )
    out: Properties = {}
    size = 0
    for key, value in properties.items():
        if type(key) is not str or not key or len(key) > MAX_KEY_LENGTH:
            raise _bad_key(arg, key)
        tv = type(value)
        if tv is str:
            if len(value) > MAX_STRING_LENGTH:
                value = _scalar(arg, key, value)
            size += len(value)
        elif tv not in _SCALAR_TYPES or (tv is float and not math.isfinite(value)) or (
            tv is int and not MIN_INT <= value <= MAX_INT
        ):
            value = _scalar(arg, key, value)
        out[key] = value
        size += len(key) + 100
    if len(_KNOWN_KEYS) < _MAX_KNOWN_KEYS:
        for key in out:  # every key of out passed the checks above
            _KNOWN_KEYS[key] = len(key) + 100
    return out, size


def _common_user_py(user_identifiers: object) -> UserIdentifiers | None:
    # The common case of check_user_identifiers: a dict of ASCII str keys and values (nothing to repair, no NUL,
    # within bounds) or 64-bit ints, which the checks would copy unchanged whatever the flags; None for the others.
    if type(user_identifiers) is not dict or not 0 < len(user_identifiers) <= MAX_PROPERTIES:
        return None
    for key, value in user_identifiers.items():
        if type(key) is not str or not 0 < len(key) <= MAX_KEY_LENGTH or not key.isascii():
            return None
        if type(value) is str:
            if len(value) > MAX_STRING_LENGTH or not value.isascii() or "\x00" in value:
                return None
        elif type(value) is not int or not MIN_INT <= value <= MAX_INT:
            return None
    return dict(user_identifiers)


_common_user: Callable[[object], UserIdentifiers | None] = (
    _common_user_py if speedups is None else speedups.check_common_user)  # the loop above, compiled


def check_user_identifiers(
    user_identifiers: object, arg: str = "user_identifiers", *, repair: bool = False, truncate: bool = False
) -> UserIdentifiers:
    """Validate and copy a user identifier map (``str`` keys, ``str`` or ``int`` values, at least one entry).

    With ``repair`` (the SDK), lone surrogates in keys and values, and NUL characters in values, become U+FFFD: the
    collector stores valid Unicode only, values in a text column, and identifiers often come from request data;
    without it, a NUL in a value raises. A value longer than
    ``MAX_STRING_LENGTH`` raises, unless ``truncate`` (the calls fed with request data: ``auth_track``,
    ``signup_track``), which cuts it to that length, ending with ``TRUNCATION_MARKER``. Wrong types always raise.
    """
    common = _common_user(user_identifiers)
    if common is not None:
        return common
    if not isinstance(user_identifiers, Mapping):
        raise InvalidEvent(f"{arg} must be a mapping, got {type(user_identifiers).__name__} {_show(user_identifiers)}")
    if not user_identifiers:
        raise InvalidEvent(f"{arg} must name the user with at least one identifier, got an empty mapping")
    if len(user_identifiers) > MAX_PROPERTIES:
        raise InvalidEvent(f"{arg} may have at most {MAX_PROPERTIES} entries, got {len(user_identifiers)}")
    out: UserIdentifiers = {}
    for key, value in user_identifiers.items():
        if type(key) is not str or not key or len(key) > MAX_KEY_LENGTH:
            raise _bad_key(arg, key)
        if repair:
            key = representable(key)
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidEvent(f"{arg}[{key!r}] must be a str or int, got {type(value).__name__} {_show(value)}")
        if isinstance(value, str):
            if type(value) is not str:
                value = _as_str(f"{arg}[{key!r}]", value)
            if repair:
                value = representable(value)
                if "\x00" in value:  # stored in a text column, where PostgreSQL refuses NUL (request data may hold it)
                    value = value.replace("\x00", "\ufffd")
            elif "\x00" in value:
                raise InvalidEvent(f"{arg}[{key!r}] must not contain a NUL character, got {_show(value)}")
            if len(value) > MAX_STRING_LENGTH:
                if not truncate:
                    raise InvalidEvent(
                        f"{arg}[{key!r}] must be at most {MAX_STRING_LENGTH} characters, got {len(value)}"
                    )
                value = value[: MAX_STRING_LENGTH - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER
        else:
            if not MIN_INT <= value <= MAX_INT:
                raise InvalidEvent(f"{arg}[{key!r}] must fit in 64 bits, got {_show(value)}")
            value = int(value)
        out[key] = value
    return out


def check_timestamp(timestamp: object, now: float | None = None) -> float:
    """Return a ``datetime`` as POSIX seconds; a naive datetime is taken as UTC.

    :raises InvalidEvent: not a datetime, outside years 1 to 9999, or later than ``now`` plus ``MAX_FUTURE_SKEW``.
    """
    if not isinstance(timestamp, datetime):
        raise InvalidEvent(f"timestamp must be a datetime, got {type(timestamp).__name__} {_show(timestamp)}")
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    seconds = timestamp.timestamp()
    if not _MIN_TS <= seconds <= _MAX_TS:
        raise InvalidEvent(f"timestamp must be between years 1 and 9999 in UTC, got {timestamp.isoformat()}")
    limit = (time.time() if now is None else now) + MAX_FUTURE_SKEW
    if seconds > limit:
        raise InvalidEvent(
            f"timestamp must not be more than {MAX_FUTURE_SKEW:g} s in the future (clock skew allowance), "
            f"got {timestamp.isoformat()}"
        )
    return seconds


def format_timestamp(seconds: float) -> str:
    """POSIX seconds to ISO 8601 UTC with microseconds and a ``Z``: the wire and API format."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> float:
    """ISO 8601 to POSIX seconds; no offset means UTC. Raises ``ValueError`` on garbage."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class RequestInfo(TypedDict):
    """Default properties taken from the HTTP request, scrubbed."""

    client_ip: str | None
    user_agent: str | None
    path: str
    verb: str
    params: dict[str, Any]


class WireEvent(TypedDict):
    """One event as the SDK sends it in a batch."""

    id: str
    name: str
    timestamp: str
    properties: Properties
    user_identifiers: UserIdentifiers | None
    request: RequestInfo | None
    body: Any


class WireBatch(TypedDict):
    events: list[WireEvent]


class Stats(TypedDict):
    """Delivery statistics the SDK reports in each heartbeat."""

    queued: int
    queued_bytes: int
    tracked: int
    sent: int
    dropped: dict[str, int]
    retries: int
    flusher_restarts: int
