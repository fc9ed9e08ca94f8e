"""Decoding and validation of agent request bodies (protocol v1): bounded gunzip, strict JSON, batch events."""

from __future__ import annotations

import math
import re
import zlib
from datetime import datetime
from typing import Any, NoReturn

from .._exceptions import InvalidEvent
from .._native import speedups
from .._schema import (
    MAX_FUTURE_SKEW,
    MAX_INT,
    MAX_KEY_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PROPERTIES,
    MAX_STRING_LENGTH,
    MIN_INT,
    check_name,
    check_properties,
    check_user_identifiers,
    parse_timestamp,
)
from . import _fastjson
from ._storage import EventRecord

#: At most this many entries in the ``errors`` list of a 422 answer (the message still counts them all).
MAX_REPORTED_ERRORS = 100
MAX_CLIENT_IP_LENGTH = 255
#: Deepest nesting of a stored JSON value (``body``, ``request``, heartbeat ``stats``), counting the value itself as
#: level 1. Shared by ingest (which refuses deeper values) and the admin API (which must be able to encode them).
MAX_DEPTH = 64
#: Most JSON values (containers and scalars) in one body before any object is built: each costs 50-200 bytes once
#: decoded, so this bounds a request's memory whatever its size on the wire (10 MiB of ``{},`` would be 3.5 million
#: dicts, ~300 MB): at most ~40 MB here.
MAX_JSON_VALUES = 500_000
# Applied once escapes are gone: a single character-class repeat. An alternation ("(?:[^"\\]|\\.)*") makes the
# regex engine keep state per repetition: 1.3 GB for one 10 MiB string.
_STRINGS = re.compile(rb'"[^"]*"')
_MIN_TS = -62135596800.0  # 0001-01-01T00:00:00Z: format_timestamp() must be able to show what we store
_MAX_TS = 253402300799.0  # 9999-12-31T23:59:59Z
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Rejected(Exception):
    """A request body the collector refuses: ``status`` and the JSON ``payload`` to answer with."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(payload.get("error", ""))
        self.status = status
        self.payload = payload


def _reject(status: int, message: str) -> NoReturn:
    raise Rejected(status, {"error": message})


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _gunzip(data: bytes, limit: int) -> bytes:
    # Bounded: never inflate more than limit + 1 bytes, whatever the input claims (zip bombs).
    out = bytearray()
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            _reject(400, f"body is not valid gzip: {exc}")
        if len(out) > limit:
            _reject(413, f"body is larger than {limit} bytes once decompressed")
        if not inflater.eof:
            _reject(400, "body is not valid gzip: truncated stream")
        data = inflater.unused_data
        if not data:  # else: another gzip member follows (concatenated gzip is valid gzip)
            return bytes(out)


def count_values(raw: bytes, limit: int) -> int:
    """An upper bound of the JSON values in ``raw`` (each value is a container or follows a ``,``), exact enough.

    The quick count of every ``{``, ``[`` and ``,`` byte is enough for ordinary bodies. Only when it exceeds
    ``limit`` are the bytes inside strings (brackets and commas there are not values) subtracted, string by string,
    which is bounded too: more than ``limit`` strings are too many values already. This costs a few copies of
    ``raw`` at most, never an object per value.
    """
    quick = raw.count(b"{") + raw.count(b"[") + raw.count(b",") + 1
    if quick <= limit:
        return quick
    # Drop escaped backslashes, then escaped quotes (in that order: a backslash, a backslash and a quote end a
    # string), so that every quote left opens or closes a string.
    clean = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    strings = clean.count(b'"') // 2
    if strings > limit:
        return strings
    inside = b"".join(_STRINGS.findall(clean))  # at most ``limit`` pieces
    return quick - inside.count(b"{") - inside.count(b"[") - inside.count(b",")


def decode_json(raw: bytes, content_encoding: str | None, limit: int, max_values: int = MAX_JSON_VALUES) -> Any:
    """Decode a (possibly gzip) JSON body; :raises Rejected: 400 bad gzip/JSON, 413 too large, 415 encoding."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "gzip":
        raw = _gunzip(raw, limit)
    elif encoding != "identity":
        _reject(415, f"unsupported Content-Encoding {content_encoding!r}: send gzip or no encoding")
    # One translate gives count_values()'s quick count ({, [ and , all become {) and the digit runs loads() checks.
    scanned = raw.translate(_fastjson.SCAN)
    if scanned.count(b"{") + 1 > max_values and count_values(raw, max_values) > max_values:
        _reject(413, f"body holds more than {max_values} JSON values: split it")
    try:
        return _fastjson.loads_scanned(raw, scanned)
    except (ValueError, RecursionError) as exc:
        _reject(400, f"body is not valid JSON: {_show(str(exc))}")


def storable(arg: str, text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"), which SQLite's UTF-8 text cannot hold, and NUL characters, which
    # PostgreSQL's text refuses: both stores refuse them alike in the columns (inside JSON they are escaped and fine).
    if "\x00" in text:
        raise InvalidEvent(f"{arg} must not contain a NUL character, got {_show(text)}")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise InvalidEvent(f"{arg} must be valid Unicode, got a lone surrogate in {_show(text)}") from None
    return text


_LEAVES = frozenset({str, int, bool, type(None)})


def _fine(item: Any, depth: int) -> bool:
    """Whether :func:`check_tree` would pass ``item`` at ``depth``: the same rules with no paths built, several times
    faster on ordinary events (a path string per value was most of the cost). Recursion is bounded by MAX_DEPTH."""
    kind = type(item)
    if kind is dict:
        children: Any = item.values()
    elif kind is list:
        children = item
    elif kind is float:
        return math.isfinite(item)
    else:
        return True
    if depth >= MAX_DEPTH:
        return not children
    leaves = _LEAVES
    for child in children:
        if type(child) not in leaves and not _fine(child, depth + 1):
            return False
    return True


def check_tree(arg: str, value: Any) -> None:
    """Refuse a JSON value the collector could store but not show again: nested deeper than :data:`MAX_DEPTH`, or
    holding a non-finite number (``1e400`` decodes to infinity, which JSON cannot encode).

    :raises InvalidEvent: naming the path of the first offending value (``body.a[3]``).
    """
    if not _fine(value, 1):  # only a value that breaks a rule pays for the walk that names where
        _walk(arg, value)


def _walk(arg: str, value: Any) -> None:
    # The rules of check_tree, with the path of every value: raises on the first offending one.
    stack: list[tuple[str, Any, int]] = [(arg, value, 1)]
    while stack:
        path, item, depth = stack.pop()
        if type(item) is float:
            if not math.isfinite(item):
                raise InvalidEvent(f"{path} must be a finite number (it does not fit in a 64-bit float)")
            continue
        if type(item) is dict:
            children: Any = [(f"{path}.{k}" if len(k) <= 40 else f"{path}.{k[:37]}...", v) for k, v in item.items()]
        elif type(item) is list:
            children = [(f"{path}[{i}]", v) for i, v in enumerate(item)]
        else:
            continue
        if depth >= MAX_DEPTH and children:
            raise InvalidEvent(f"{arg} must be nested at most {MAX_DEPTH} levels deep, {path} is deeper")
        stack.extend((p, v, depth + 1) for p, v in children)


def _optional_str(arg: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{arg} must be a str or null, got {type(value).__name__} {_show(value)}")
    return value


_REQUEST_KEYS = frozenset({"client_ip", "user_agent", "path", "verb", "params"})


def _request(value: object) -> tuple[dict[str, Any], str | None]:
    # The usual request passes in one expression; anything else takes the checks below, which name what is wrong.
    if type(value) is dict and value.keys() >= _REQUEST_KEYS:
        ip, agent = value["client_ip"], value["user_agent"]
        if (
            (ip is None or (type(ip) is str and len(ip) <= MAX_CLIENT_IP_LENGTH and ip.isascii() and "\x00" not in ip))
            and (agent is None or type(agent) is str)
            and type(value["path"]) is str
            and type(value["verb"]) is str
            and type(value["params"]) is dict
            and _fine(value, 1)
        ):
            return value, ip
    return _checked_request(value)


def _checked_request(value: object) -> tuple[dict[str, Any], str | None]:
    if not isinstance(value, dict):
        raise InvalidEvent(f"request must be an object or null, got {type(value).__name__} {_show(value)}")
    missing = [key for key in ("client_ip", "user_agent", "path", "verb", "params") if key not in value]
    if missing:
        raise InvalidEvent(f"request is missing {', '.join(missing)}")
    client_ip = _optional_str("request.client_ip", value["client_ip"])
    if client_ip is not None:
        if len(client_ip) > MAX_CLIENT_IP_LENGTH:
            raise InvalidEvent(f"request.client_ip must be at most {MAX_CLIENT_IP_LENGTH} characters")
        storable("request.client_ip", client_ip)
    _optional_str("request.user_agent", value["user_agent"])
    for key in ("path", "verb"):
        if not isinstance(value[key], str):
            raise InvalidEvent(f"request.{key} must be a str, got {type(value[key]).__name__} {_show(value[key])}")
    if not isinstance(value["params"], dict):
        raise InvalidEvent(f"request.params must be an object, got {type(value['params']).__name__}")
    check_tree("request", value)
    return value, client_ip


_MISSING: Any = object()
_new_record = tuple.__new__  # EventRecord(...) is a Python-level __new__: 3x the cost of building the tuple
_fromisoformat = datetime.fromisoformat


def _quick_timestamp(stamp: str) -> float | None:
    """:func:`parse_timestamp` of a text ending with its only ``Z`` (the usual ``...T10:00:00.001000Z``), the same
    float, without the replace; None for any other text, or one it refuses (the exact parser then decides)."""
    if stamp[-1:] != "Z" or stamp.count("Z") != 1:
        return None
    try:
        return _fromisoformat(stamp).timestamp()  # "Z" is UTC, as the "+00:00" parse_timestamp writes in its place
    except (ValueError, OverflowError):
        return None


def _quick_record(event: Any, app: str, received_at: float) -> EventRecord | None:
    """The record :func:`parse_batch`'s checks make of an ordinary event, or None for anything unusual (or invalid),
    which those checks then decide and word. Everything this accepts, they accept, with an equal record."""
    if type(event) is not dict:
        return None
    get = event.get
    event_id, name, stamp = get("id"), get("name"), get("timestamp")
    if (
        type(event_id) is not str
        or type(name) is not str
        or type(stamp) is not str
        or not 0 < len(name) <= MAX_NAME_LENGTH
        or not name.isascii()
        or "\x00" in name
        or not _UUID.fullmatch(event_id)
    ):
        return None
    ts = _quick_timestamp(stamp)
    if ts is None or not _MIN_TS <= ts <= _MAX_TS or ts > received_at + MAX_FUTURE_SKEW:
        return None
    properties = get("properties", _MISSING)
    if properties is _MISSING:
        properties = {}
    elif type(properties) is not dict or len(properties) > MAX_PROPERTIES:
        return None
    else:
        for key, value in properties.items():
            kind = type(value)
            if not 0 < len(key) <= MAX_KEY_LENGTH:
                return None
            if kind is str:
                if len(value) > MAX_STRING_LENGTH:  # truncated by check_properties
                    return None
            elif kind is int:
                if not MIN_INT <= value <= MAX_INT:
                    return None
            elif kind is float:
                if not math.isfinite(value):
                    return None
            elif kind is not bool and value is not None:
                return None
        properties = properties.copy()  # what check_properties returns
    identifiers = get("user_identifiers")
    users: tuple[str, ...] = ()
    if identifiers is not None:
        if type(identifiers) is not dict or not 0 < len(identifiers) <= MAX_PROPERTIES:
            return None
        texts: list[str] = []
        for key, value in identifiers.items():
            if not 0 < len(key) <= MAX_KEY_LENGTH:
                return None
            kind = type(value)
            if kind is str:
                if len(value) > MAX_STRING_LENGTH or not value.isascii() or "\x00" in value:
                    return None
                texts.append(value)
            elif kind is int and MIN_INT <= value <= MAX_INT:
                texts.append(str(value))
            else:
                return None
        identifiers = identifiers.copy()  # what check_user_identifiers returns
        users = tuple(texts)
    request = get("request")
    client_ip = None
    if request is not None:
        if type(request) is not dict or len(request) != 5:
            return None
        try:
            client_ip, agent = request["client_ip"], request["user_agent"]
            path, verb, params = request["path"], request["verb"], request["params"]
        except KeyError:
            return None
        if (
            (client_ip is not None and (
                type(client_ip) is not str or len(client_ip) > MAX_CLIENT_IP_LENGTH or not client_ip.isascii()
                or "\x00" in client_ip
            ))
            or (agent is not None and type(agent) is not str)
            or type(path) is not str
            or type(verb) is not str
            or type(params) is not dict
        ):  # fmt: skip
            return None
        leaves = _LEAVES
        for value in params.values():
            if type(value) not in leaves and not _fine(value, 3):
                return None
    body = get("body")
    if body is not None and not _fine(body, 1):
        return None
    blocked = get("blocked") is True
    if blocked and request is not None:
        request = {**request, "blocked": True}
    record: EventRecord = _new_record(
        EventRecord,
        (event_id.lower(), name, ts, received_at, app, client_ip, properties, identifiers, request, body, users, 0,
         blocked),
    )  # fmt: skip
    return record


_QUICK_PARTS = (EventRecord, _fromisoformat, _fine, MAX_NAME_LENGTH, MAX_PROPERTIES, MAX_KEY_LENGTH,
                MAX_STRING_LENGTH, MAX_CLIENT_IP_LENGTH, _MIN_TS, _MAX_TS, MAX_FUTURE_SKEW)  # fmt: skip


def _quick_all(events: list[Any], app: str, received_at: float) -> list[EventRecord | None]:
    """``[_quick_record(event, app, received_at) for event in events]``, compiled (``_speedups.quick_records``)
    unless the package runs as pure Python: the same records, and None for the same events."""
    if speedups is not None and type(received_at) is float and type(events) is list and type(app) is str:
        return speedups.quick_records(events, app, received_at, _QUICK_PARTS)
    return [_quick_record(event, app, received_at) for event in events]


def parse_batch(
    raw: bytes,
    content_encoding: str | None,
    *,
    app: str,
    received_at: float,
    max_bytes: int,
    max_events: int,
) -> list[EventRecord]:
    """Decode and validate a whole batch body.

    :return: one record per event, in order.
    :raises Rejected: 400/413/415 for the body as a whole, 422 listing the invalid events (then none is valid).
    """
    document = decode_json(raw, content_encoding, max_bytes)
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        _reject(400, 'body must be a JSON object {"events": [...]}')
    events: list[Any] = document["events"]
    if len(events) > max_events:
        _reject(413, f"batch has {len(events)} events, at most {max_events} are accepted: split it")
    records: list[EventRecord] = []
    errors: list[dict[str, Any]] = []
    n_invalid = 0
    quick = _quick_all(events, app, received_at)
    for index, event in enumerate(events):
        record = quick[index]
        if record is not None:
            if not n_invalid:
                records.append(record)
            continue
        field = "event"
        event_id: str | None = None
        try:
            if type(event) is not dict:
                raise InvalidEvent(f"event must be an object, got {type(event).__name__} {_show(event)}")
            field = "id"
            value = event.get("id")
            if not isinstance(value, str) or not _UUID.fullmatch(value):
                raise InvalidEvent(f"id must be a UUID in canonical 8-4-4-4-12 hex form, got {_show(value)}")
            event_id = value.lower()
            field = "name"
            name = storable("event_name", check_name(event.get("name"), allow_reserved=True))
            field = "timestamp"
            value = event.get("timestamp")
            if not isinstance(value, str):
                raise InvalidEvent(f"timestamp must be an ISO 8601 str, got {type(value).__name__} {_show(value)}")
            try:
                ts = parse_timestamp(value)
            except (ValueError, OverflowError):
                raise InvalidEvent(f"timestamp must be ISO 8601, got {_show(value)}") from None
            if not _MIN_TS <= ts <= _MAX_TS:
                raise InvalidEvent(f"timestamp must be between years 1 and 9999 UTC, got {_show(value)}")
            if ts > received_at + MAX_FUTURE_SKEW:
                raise InvalidEvent(
                    f"timestamp must be at most {MAX_FUTURE_SKEW:.0f} s ahead of the collector's clock, got"
                    f" {_show(value)}: fix the clock of the app server"
                )
            field = "properties"
            properties, _ = check_properties(event.get("properties", {}))
            field = "user_identifiers"
            users: tuple[str, ...] = ()
            identifiers = event.get("user_identifiers")
            if identifiers is not None:
                identifiers = check_user_identifiers(identifiers)
                users = tuple([v if type(v) is str else str(v) for v in identifiers.values()])
                if not all([v.isascii() and "\x00" not in v for v in users]):
                    for v in users:
                        storable("user_identifiers", v)
            field = "request"
            request, client_ip = (None, None) if event.get("request") is None else _request(event["request"])
            field = "body"
            body = event.get("body")
            if body is not None:
                check_tree("body", body)
            blocked = event.get("blocked") is True  # tracked while the agent refused the request
            if blocked and request is not None:
                request = {**request, "blocked": True}  # kept with the event: replays skip it too
        except InvalidEvent as exc:
            n_invalid += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append({"index": index, "id": event_id, "field": field, "message": str(exc)})
            continue
        if not n_invalid:
            records.append(
                EventRecord(
                    event_id, name, ts, received_at, app, client_ip, properties, identifiers, request, body, users, 0,
                    blocked,
                )
            )  # fmt: skip
    if n_invalid:
        raise Rejected(422, {"error": f"{n_invalid} invalid event{'s' if n_invalid > 1 else ''}", "errors": errors})
    return records
