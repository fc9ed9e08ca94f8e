"""One import row to one wire event: validated with the SDK's own validators, scrubbed, with a content-derived id.

**Ids.** A row without ``id`` gets a UUID derived from its content, so importing the same file twice stores nothing
twice (the collector deduplicates by id). It is laid out as a UUIDv7 (RFC 9562) but is a UUIDv8: its first 48 bits
are the event's time in milliseconds since 1970 (modulo 2**48), then the version nibble 8, 12 bits of the hash, the
variant bits ``10`` and 62 more bits of the hash. The hash is the SHA-256 of ``sqreen_mw import v2``, a newline, the
app name as a JSON string, a newline, then the canonical JSON (sorted keys, no spaces, ASCII escapes) of the object
with keys ``body``, ``name``, ``properties``, ``request``, ``timestamp`` and ``user_identifiers`` as the collector
will store them (timestamp normalised to ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, missing fields as ``null``/``{}``,
properties, request and body already scrubbed); its bits are taken from its first bytes, in order. The time comes
first so that a file in time order is stored in id order: the collector's id index then grows at its end instead of
taking one random insert per event (measured: 13 µs of collector CPU per event at 100,000 stored). The app is in the
hash so that the same rows without an id imported into two apps are stored in both (an explicit id is stored
once, whatever the app); the hash is taken after scrubbing so that an id never lets anyone test guesses of a secret
the scrubber removed.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from .._exceptions import InvalidEvent
from .._schema import (
    MAX_FUTURE_SKEW,
    MAX_INT,
    MAX_KEY_LENGTH,
    MAX_PROPERTIES,
    MAX_STRING_LENGTH,
    MIN_INT,
    RequestInfo,
    UserIdentifiers,
    WireEvent,
    check_name,
    check_properties,
    check_user_identifiers,
    format_timestamp,
    parse_timestamp,
)
from .._scrub import Scrubber
from ._canonical import RowScrubber, canonical, stdlib_canonical

FIELDS = ("id", "name", "timestamp", "properties", "user_identifiers", "request", "body")
_FIELD_SET = frozenset(FIELDS)
REQUEST_FIELDS = ("client_ip", "user_agent", "path", "verb", "params")
_ID_PREFIX = b"sqreen_mw import v2\n"
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MIN_TS = -62135596800.0  # 0001-01-01T00:00:00Z
_MAX_TS = 253402300799.0  # 9999-12-31T23:59:59Z
_MAX_CLIENT_IP = 255
_MILLIS_MASK = 2**48 - 1
_LOW_62 = 2**62 - 1
_VARIANT = 0b10 << 62
_EPOCH = datetime(1970, 1, 1)  # naive: wire timestamps are UTC
_SECOND = timedelta(seconds=1)
_CACHE_SIZE = 4096  # entries of each cache below (cleared when full)
_SECONDS: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> seconds since 1970, any year (wire_millis)
# The same for _wire_time, only of heads _PLAIN_TS matched (1970-2099, where the text needs no float round trip),
# None for one that is not a valid time. Apart from _SECONDS: a head of another year, remembered there, must not
# let _wire_time skip the expression.
_HEADS: dict[str, int | None] = {}
_PLAIN_TS = re.compile(r"((?:19[7-9]\d|20\d\d)-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def content_id(content: bytes, millis: int) -> str:
    """The UUIDv8 of a row's prefixed canonical JSON and its time in ms (see the module docstring)."""
    digest = int.from_bytes(hashlib.sha256(content).digest()[:10])
    # 48 bits of time, "8" and 12 bits of the hash, then the variant bits and 62 more bits of the hash.
    time_hex = f"{millis & _MILLIS_MASK:012x}"
    low = f"{_VARIANT | (digest >> 6) & _LOW_62:016x}"
    return f"{time_hex[:8]}-{time_hex[8:]}-8{digest >> 68:03x}-{low[:4]}-{low[4:]}"


def wire_millis(timestamp: str) -> int:
    """Milliseconds since 1970 of a wire timestamp (``YYYY-MM-DDTHH:MM:SS.ffffffZ``), truncated."""
    head = timestamp[:19]
    seconds = _SECONDS.get(head)
    if seconds is None:
        seconds = (datetime.fromisoformat(head) - _EPOCH) // _SECOND
        if len(_SECONDS) >= _CACHE_SIZE:
            _SECONDS.clear()
        _SECONDS[head] = seconds
    return seconds * 1000 + int(timestamp[20:23])


def _timestamp(value: object, latest: float) -> str:
    if value is None:
        raise InvalidEvent("timestamp is required: an ISO 8601 str such as '2024-05-01T10:00:00Z'")
    if not isinstance(value, str):
        raise InvalidEvent(f"timestamp must be an ISO 8601 str, got {type(value).__name__} {_show(value)}")
    try:
        seconds = parse_timestamp(value)
    except (ValueError, OverflowError):
        raise InvalidEvent(f"timestamp must be ISO 8601, got {_show(value)}") from None
    if not _MIN_TS <= seconds <= _MAX_TS:
        raise InvalidEvent(f"timestamp must be between years 1 and 9999 UTC, got {_show(value)}")
    if seconds > latest:
        raise InvalidEvent(
            f"timestamp must not be more than {MAX_FUTURE_SKEW:.0f} s in the future (imported events are history), "
            f"got {_show(value)}"
        )
    return format_timestamp(seconds)


def _users(value: object) -> UserIdentifiers:
    """:func:`check_user_identifiers`'s copy, by a shorter walk for a dict of plain ``str`` and ``int``."""
    if type(value) is dict and 0 < len(value) <= MAX_PROPERTIES:
        for key, item in value.items():
            if type(key) is not str or not 0 < len(key) <= MAX_KEY_LENGTH:
                break
            kind = type(item)
            if kind is str:
                if len(item) > MAX_STRING_LENGTH or "\x00" in item:
                    break
            elif kind is not int or not MIN_INT <= item <= MAX_INT:
                break
        else:
            return value.copy()
    return check_user_identifiers(value)


def _request(value: object) -> RequestInfo:
    # Missing keys get the values an event tracked outside a request would have; other keys are kept, as on the wire.
    if not isinstance(value, dict):
        raise InvalidEvent(f"request must be an object or null, got {type(value).__name__} {_show(value)}")
    request: dict[str, Any] = {"client_ip": None, "user_agent": None, "path": "", "verb": "", "params": {}, **value}
    ip, agent = request["client_ip"], request["user_agent"]
    if (
        ((type(ip) is str and len(ip) <= _MAX_CLIENT_IP) or ip is None)
        and (type(agent) is str or agent is None)
        and type(request["path"]) is str
        and type(request["verb"]) is str
        and type(request["params"]) is dict
    ):
        return request  # type: ignore[return-value]
    for key in ("client_ip", "user_agent"):
        if request[key] is not None and not isinstance(request[key], str):
            raise InvalidEvent(f"request.{key} must be a str or null, got {type(request[key]).__name__} "
                               f"{_show(request[key])}")
    if request["client_ip"] is not None and len(request["client_ip"]) > _MAX_CLIENT_IP:
        raise InvalidEvent(f"request.client_ip must be at most {_MAX_CLIENT_IP} characters")
    for key in ("path", "verb"):
        if not isinstance(request[key], str):
            raise InvalidEvent(f"request.{key} must be a str, got {type(request[key]).__name__} {_show(request[key])}")
    if not isinstance(request["params"], dict):
        raise InvalidEvent(f"request.params must be an object, got {type(request['params']).__name__}")
    return request  # type: ignore[return-value]


class EventMaker:
    """Turns rows into wire events for one app, each already encoded as the JSON of one batch item.

    :param scrubber: the same scrubbing as live events (the SDK's settings).
    :param app: the app the collector stores the events under (part of the derived id).
    :param clock: current POSIX time, for the future-timestamp rule.
    """

    def __init__(self, scrubber: Scrubber, app: str, clock: Callable[[], float] = time.time) -> None:
        self._scrub = RowScrubber(scrubber).scrub
        self._prefix = _ID_PREFIX + json.dumps(app).encode() + b"\n"
        self._clock = clock
        self._names: set[str] = set()  # names check_name accepted (bounded: cleared when full)
        self._made = 0
        self._set_latest()

    def _set_latest(self) -> None:
        self._latest = self._clock() + MAX_FUTURE_SKEW
        self._latest_text = format_timestamp(self._latest)

    def event(self, row: dict[str, Any]) -> WireEvent:
        """The wire event for ``row`` (decoded from :meth:`make`'s JSON)."""
        event: WireEvent = json.loads(self.make(row))
        return event

    def make(self, row: dict[str, Any]) -> bytes:
        """The JSON of the wire event for ``row``.

        :raises InvalidEvent: with the same messages as ``track()`` and the collector.
        """
        if not _FIELD_SET.issuperset(row):
            unknown = sorted(str(key) for key in row if key not in _FIELD_SET)
            raise InvalidEvent(f"unknown field {', '.join(map(repr, unknown))}: a row has {', '.join(FIELDS)}")
        self._made += 1
        if not self._made & 0xFFFF:  # a long import: let "now" move on
            self._set_latest()
        name = row.get("name")
        if type(name) is not str or name not in self._names:
            if name is None:
                raise InvalidEvent("name is missing: every event needs a name, such as 'login.failed'")
            name = check_name(name, allow_reserved=True)
            if len(self._names) >= _CACHE_SIZE:
                self._names.clear()
            self._names.add(name)
        plain = _wire_time(row.get("timestamp"))
        if plain is None or plain[0] > self._latest_text:
            timestamp = _timestamp(row.get("timestamp"), self._latest)
            millis = -1
        else:
            timestamp, millis = plain
        raw = row.get("properties")
        properties, _ = check_properties({} if raw is None else raw)
        finite = True  # check_properties refuses NaN and infinities
        if properties:
            properties, _ = self._scrub(properties)
        users = row.get("user_identifiers")
        if users is not None:
            users = _users(users)
        request = row.get("request")
        if request is not None:
            request, checked = self._scrub(_request(request))
            finite = checked
        body = row.get("body")
        if body is not None:
            body, _ = self._scrub(body)
            finite = False
        # Keys in sorted order: this JSON is both the canonical form hashed for the id and the wire item.
        event = {
            "body": body, "name": name, "properties": properties, "request": request, "timestamp": timestamp,
            "user_identifiers": users,
        }  # fmt: skip
        text = canonical(event) if finite else _checked_canonical(event)
        event_id = row.get("id")
        if event_id is None:
            event_id = content_id(self._prefix + text, millis if millis >= 0 else wire_millis(timestamp))
        elif not isinstance(event_id, str) or not _UUID.fullmatch(event_id):
            raise InvalidEvent(f"id must be a UUID in canonical 8-4-4-4-12 hex form, got {_show(event_id)}")
        else:
            event_id = event_id.lower()
        return b'{"id":"' + event_id.encode() + b'",' + text[1:]


def _checked_canonical(event: dict[str, Any]) -> bytes:
    # Request and body not known to hold finite numbers only: the stdlib refuses NaN and infinities; name which.
    try:
        return stdlib_canonical(event)
    except ValueError:
        for key in ("request", "body"):
            try:
                stdlib_canonical(event[key])
            except ValueError:
                raise InvalidEvent(f"{key} must hold finite numbers only (JSON has no NaN or Infinity)") from None
        raise


def _wire_time(value: object) -> tuple[str, int] | None:
    """:func:`_wire_timestamp`'s text and its :func:`wire_millis`, from the seconds of its first 19 characters
    remembered per text."""
    if type(value) is not str or not value.isascii():  # ASCII: "\d" is [0-9], and so is isdigit()
        return None
    head = value[:19]
    seconds = _HEADS.get(head)
    if seconds is not None:  # a head _PLAIN_TS matched before: the rest is (\.\d{1,6})?Z or no match
        rest = value[19:]
        if rest == "Z":
            return f"{head}.000000Z", seconds * 1000
        if 3 <= len(rest) <= 8 and rest[0] == "." and rest[-1] == "Z" and rest[1:-1].isdigit():
            text = value if len(rest) == 8 else f"{head}{rest[:-1].ljust(7, '0')}Z"
            return text, seconds * 1000 + int(text[20:23])
        return None
    match = _PLAIN_TS.fullmatch(value)
    if match is None:
        return None
    head, fraction = match.groups()
    seconds = _HEADS.get(head, -1)
    if seconds == -1:
        try:  # with ASCII digits, the fraction's own digits never make fromisoformat refuse the whole text
            seconds = (datetime.fromisoformat(head) - _EPOCH) // _SECOND
        except ValueError:
            seconds = None
        if len(_HEADS) >= _CACHE_SIZE:
            _HEADS.clear()
        _HEADS[head] = seconds
    if seconds is None:
        return None
    if fraction is None:
        return f"{head}.000000Z", seconds * 1000
    text = value if len(fraction) == 6 else f"{head}.{fraction.ljust(6, '0')}Z"
    return text, seconds * 1000 + int(text[20:23])


def _wire_timestamp(value: object) -> str | None:
    """``value`` in the wire form when it is a plain UTC time of 1970-2099 (``...:SS[.f{1,6}]Z``), else None.

    Exactly what :func:`_timestamp` gives for such a text, without the round trip through a float: in those years a
    float of POSIX seconds holds every microsecond to within half of one, so the round trip changes nothing.
    """
    if type(value) is not str:
        return None
    match = _PLAIN_TS.fullmatch(value)
    if match is None or not _valid_iso(value):
        return None
    fraction = match.group(2)
    if fraction is not None and len(fraction) == 6:
        return value
    return f"{match.group(1)}.{(fraction or '').ljust(6, '0')}Z"


def _valid_iso(text: str) -> bool:
    try:
        datetime.fromisoformat(text[:-1])
    except ValueError:
        return False
    return True


#: Bytes of events per piece of a batch body (see :func:`encode_pieces`).
PIECE_SIZE = 32 * 1024


def encode_items(items: list[bytes]) -> bytes:
    """A batch body from events made by :meth:`EventMaker.make`."""
    return b'{"events":[' + b",".join(items) + b"]}"


def encode_pieces(items: list[bytes], size: int = PIECE_SIZE) -> list[bytes]:
    """:func:`encode_items`'s body as pieces of about ``size`` bytes (more only for a single larger event).

    A batch is sent piece by piece (see ``Session._Body``, which lets go of the pieces once answered) so that no
    body is ever one block of megabytes, made twice over by a join and a concatenation.
    """
    pieces = [b'{"events":[']
    group: list[bytes] = []
    length = 0
    for item in items:
        group.append(item)
        length += len(item)
        if length >= size:
            pieces.append(b",".join(group))
            group = [b""]  # the next piece starts with the comma after this one
            length = 0
    if len(group) > 1 or (group and group[0]):
        pieces.append(b",".join(group))
    pieces.append(b"]}")
    return pieces
