"""Playbooks: the model, the validator shared by the TOML file and the admin API, and durations.

A playbook counts the events matching its trigger per actor within a sliding window and responds when a threshold
is reached (DESIGN §8 pins the format). :func:`parse_playbook` turns a TOML table or a JSON object into a
:class:`Playbook`, or raises :class:`PlaybookError` listing every problem as (field, message).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Allowlist",
    "Condition",
    "Playbook",
    "PlaybookError",
    "Response",
    "format_duration",
    "parse_allowlist",
    "parse_duration",
    "parse_playbook",
]

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DURATION_RE = re.compile(r"([0-9]{1,9})(s|m|h|d)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
REQUEST_FIELDS = ("request.path", "request.verb", "request.client_ip", "request.user_agent")
OPERATORS = ("in", "ne", "gt", "gte", "lt", "lte", "regex")
ACTIONS = ("block_ip", "block_user", "webhook", "log")
MAX_WINDOW = 7 * 86400
MIN_BLOCK = 60
MAX_BLOCK = 365 * 86400
MAX_THRESHOLD = 100_000
MAX_EVENT_NAMES = 32
MAX_CONDITIONS = 16
MAX_RESPONSES = 8
MAX_REGEX_LENGTH = 1000
_PLAYBOOK_KEYS = frozenset(
    {"name", "description", "event", "where", "actor", "prefix", "threshold", "window", "distinct", "cooldown",
     "enabled", "dry_run", "response"}
)  # fmt: skip
_RESPONSE_KEYS = {
    "block_ip": frozenset({"action", "duration", "escalate", "max_duration"}),
    "block_user": frozenset({"action", "duration", "escalate", "max_duration"}),
    "webhook": frozenset({"action", "url"}),
    "log": frozenset({"action"}),
}


class PlaybookError(ValueError):
    """A playbook (or allowlist) that cannot be used; ``errors`` lists (field, message) pairs."""

    def __init__(self, name: str | None, errors: Sequence[tuple[str, str]]) -> None:
        self.name = name
        self.errors = list(errors)
        who = f"playbook {name!r}" if name else "playbook"
        super().__init__("; ".join(f"{who}: {f}: {m}" for f, m in self.errors))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_duration(value: object, *, permanent: bool = False) -> float | None:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"1d"`` in seconds; ``"permanent"`` is None when allowed.

    :raises ValueError: anything else; the message shows what is accepted.
    """
    if permanent and value == "permanent":
        return None
    match = _DURATION_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match[1]) == 0:
        more = ' or "permanent"' if permanent else ""
        raise ValueError(f'must be a duration like "30s", "5m", "1h" or "1d"{more}, got {_show(value)}')
    return float(int(match[1]) * _UNITS[match[2]])


def format_duration(seconds: float | None) -> str:
    """The shortest exact text for a duration :func:`parse_duration` reads back ("permanent" for None)."""
    if seconds is None:
        return "permanent"
    whole = int(seconds)
    for unit in ("d", "h", "m"):
        if whole % _UNITS[unit] == 0:
            return f"{whole // _UNITS[unit]}{unit}"
    return f"{whole}s"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | bool) or (_is_number(value) and math.isfinite(float(value)))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``where`` entry: ``key`` (a property name or ``request.<field>``), an operator and its operand."""

    key: str
    op: str  # "eq" or one of OPERATORS
    operand: Any
    test: Callable[[Any], bool] = field(compare=False, repr=False)

    def to_json(self) -> Any:
        if self.op == "eq":
            return self.operand
        return {self.op: list(self.operand) if self.op == "in" else self.operand}


def _same(a: object, b: object) -> bool:
    # JSON equality: a bool equals only a bool (True is not 1), numbers compare by value.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _condition(key: str, spec: object, errors: list[tuple[str, str]]) -> Condition | None:
    where = f"where.{key}"
    if not key or len(key) > 255:
        errors.append(("where", f"keys must be 1 to 255 characters, got {_show(key)}"))
        return None
    if key.startswith("request.") and key not in REQUEST_FIELDS:
        errors.append((where, f"request fields are {', '.join(REQUEST_FIELDS)}"))
        return None
    if not isinstance(spec, dict):
        if not _is_scalar(spec):
            errors.append((where, f"must be a JSON scalar or a one-key table of {', '.join(OPERATORS)}"))
            return None
        expected = spec

        def equals(v: Any) -> bool:
            return v is not _MISSING and _same(v, expected)

        return Condition(key, "eq", spec, equals)
    if len(spec) != 1:
        errors.append((where, f"a condition table has exactly one of {', '.join(OPERATORS)}, got {sorted(spec)}"))
        return None
    ((op, operand),) = spec.items()
    if op not in OPERATORS:
        errors.append((where, f"unknown operator {op!r}; known: {', '.join(OPERATORS)}"))
        return None
    if op == "in":
        if not isinstance(operand, list) or not operand or not all(_is_scalar(x) for x in operand):
            errors.append((f"{where}.in", "must be a non-empty list of JSON scalars"))
            return None
        values = tuple(operand)
        return Condition(key, op, values, lambda v: v is not _MISSING and any(_same(v, x) for x in values))
    if op == "ne":
        if not _is_scalar(operand):
            errors.append((f"{where}.ne", "must be a JSON scalar"))
            return None
        return Condition(key, op, operand, lambda v: v is _MISSING or not _same(v, operand))
    if op == "regex":
        if not isinstance(operand, str) or len(operand) > MAX_REGEX_LENGTH:
            errors.append((f"{where}.regex", f"must be a string of at most {MAX_REGEX_LENGTH} characters"))
            return None
        try:
            pattern = re.compile(operand)
        except re.error as exc:
            errors.append((f"{where}.regex", f"is not a valid regular expression: {exc}"))
            return None
        return Condition(key, op, operand, lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None)
    if not _is_number(operand) or not math.isfinite(float(operand)):
        errors.append((f"{where}.{op}", f"must be a finite number, got {_show(operand)}"))
        return None
    bound = float(operand)
    compare: Callable[[float], bool] = {
        "gt": lambda x: x > bound, "gte": lambda x: x >= bound, "lt": lambda x: x < bound, "lte": lambda x: x <= bound,
    }[op]  # fmt: skip
    return Condition(key, op, operand, lambda v: _is_number(v) and compare(v))


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


#: What a condition sees when the event has no such property / request field.
_MISSING: Any = _Missing()
MISSING = _MISSING


@dataclass(frozen=True, slots=True)
class Response:
    """One response of a playbook: ``block_ip``, ``block_user``, ``webhook`` or ``log``."""

    action: str
    duration: float | None = None  # block_*: seconds, None = permanent
    escalate: float | None = None
    max_duration: float | None = None
    url: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action}
        if self.action in ("block_ip", "block_user"):
            out["duration"] = format_duration(self.duration)
            if self.escalate is not None:
                out["escalate"] = self.escalate
            if self.max_duration is not None:
                out["max_duration"] = format_duration(self.max_duration)
        if self.url is not None:
            out["url"] = self.url
        return out


@dataclass(frozen=True, slots=True)
class Playbook:
    """A validated playbook."""

    name: str
    events: tuple[str, ...]
    conditions: tuple[Condition, ...]
    actor: str  # "ip" | "user" | "property:<key>"
    prefix: int | None
    threshold: int
    window: float
    distinct: str | None
    cooldown: float
    enabled: bool
    dry_run: bool
    responses: tuple[Response, ...]
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        """The playbook as the admin API shows it (and accepts it back)."""
        out: dict[str, Any] = {
            "name": self.name,
            "event": self.events[0] if len(self.events) == 1 else list(self.events),
            "where": {c.key: c.to_json() for c in self.conditions},
            "actor": self.actor,
            "threshold": self.threshold,
            "window": format_duration(self.window),
            "cooldown": format_duration(self.cooldown),
            "enabled": self.enabled,
            "dry_run": self.dry_run,
            "response": [r.to_json() for r in self.responses],
        }
        if self.prefix is not None:
            out["prefix"] = self.prefix
        if self.distinct is not None:
            out["distinct"] = self.distinct
        if self.description:
            out["description"] = self.description
        return out

    @property
    def fields(self) -> frozenset[str]:
        """The event fields its conditions and actors read (properties, user_identifiers, request)."""
        needed = set()
        for spec in (self.actor, self.distinct):
            if spec == "user":
                needed.add("user_identifiers")
            elif spec is not None and spec.startswith("property:"):
                needed.add("properties")
        for c in self.conditions:
            needed.add("request" if c.key.startswith("request.") else "properties")
        return frozenset(needed)

    @property
    def acts(self) -> bool:
        """Whether the playbook takes actions now (enabled and not a dry run): its events are "hot"."""
        return self.enabled and not self.dry_run


def _actor_spec(value: object, what: str, errors: list[tuple[str, str]]) -> str | None:
    if value in ("ip", "user"):
        return str(value)
    if isinstance(value, str) and value.startswith("property:") and 0 < len(value) - 9 <= 255:
        return value
    errors.append((what, f'must be "ip", "user" or "property:<key>", got {_show(value)}'))
    return None


def _duration(
    obj: Mapping[str, Any], key: str, where: str, errors: list[tuple[str, str]], *, low: float, high: float,
    permanent: bool = False,
) -> float | None:
    try:
        seconds = parse_duration(obj[key], permanent=permanent)
    except ValueError as exc:
        errors.append((where, str(exc)))
        return None
    if seconds is not None and not low <= seconds <= high:
        errors.append((where, f"must be from {format_duration(low)} to {format_duration(high)}, got {obj[key]!r}"))
        return None
    return seconds


def _webhook_url(url: object, allow_http: bool, where: str, errors: list[tuple[str, str]]) -> str | None:
    import httpx  # the SDK's dependency; only needed when validating

    if not isinstance(url, str) or not url:
        errors.append((where, "is required: the URL to POST the firing to"))
        return None
    try:
        parsed = httpx.URL(url)
    except Exception:
        errors.append((where, f"is not a valid URL: {_show(url)}"))
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        errors.append((where, f"must be an http(s) URL with a host, got {_show(url)}"))
        return None
    if parsed.scheme == "http" and not allow_http:
        host = parsed.host
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            errors.append((where, "must be https (or http to loopback); start the collector with "
                                  "--allow-http-webhooks to allow plain http elsewhere"))
            return None
    return url


def _response(item: object, index: int, actor: str | None, allow_http: bool,
              errors: list[tuple[str, str]]) -> Response | None:
    where = f"response[{index}]"
    if not isinstance(item, dict):
        errors.append((where, "must be a table with an action"))
        return None
    action = item.get("action")
    if action not in ACTIONS:
        errors.append((f"{where}.action", f"must be one of {', '.join(ACTIONS)}, got {_show(action)}"))
        return None
    unknown = set(item) - _RESPONSE_KEYS[action]
    if unknown:
        errors.append((where, f"unknown keys {sorted(unknown)} for {action}; known: {sorted(_RESPONSE_KEYS[action])}"))
    if action == "webhook":
        url = _webhook_url(item.get("url"), allow_http, f"{where}.url", errors)
        return None if url is None else Response("webhook", url=url)
    if action == "log":
        return Response("log")
    if actor is not None and action == "block_ip" and actor != "ip":
        errors.append((f"{where}.action", 'block_ip needs actor = "ip" (the address or network to block)'))
    if actor is not None and action == "block_user" and actor != "user":
        errors.append((f"{where}.action", 'block_user needs actor = "user" (the user to block)'))
    if "duration" not in item:
        errors.append((f"{where}.duration", 'is required: "1m" to "365d", or "permanent"'))
        return None
    duration = _duration(item, "duration", f"{where}.duration", errors, low=MIN_BLOCK, high=MAX_BLOCK, permanent=True)
    escalate = item.get("escalate")
    if escalate is not None and (not _is_number(escalate) or not 1 < float(escalate) <= 100):
        errors.append((f"{where}.escalate", f"must be a number above 1 and at most 100, got {_show(escalate)}"))
        escalate = None
    max_duration = None
    if "max_duration" in item:
        max_duration = _duration(item, "max_duration", f"{where}.max_duration", errors, low=MIN_BLOCK,
                                 high=MAX_BLOCK, permanent=True)
        if escalate is None and "escalate" not in item:
            errors.append((f"{where}.max_duration", "only makes sense with escalate"))
        if max_duration is not None and duration is not None and max_duration < duration:
            errors.append((f"{where}.max_duration", "must be at least duration"))
    return Response(action, duration=duration, escalate=None if escalate is None else float(escalate),
                    max_duration=max_duration)


def parse_playbook(obj: object, *, allow_http_webhooks: bool = False, name: str | None = None) -> Playbook:
    """Validate a playbook given as a TOML table or a JSON object.

    :param name: the name from the URL (admin API ``PUT /api/v1/playbooks/{name}``); the body's must match.
    :raises PlaybookError: every problem found, as (field, message).
    """
    errors: list[tuple[str, str]] = []
    if not isinstance(obj, dict):
        raise PlaybookError(name, [("playbook", f"must be a table/object, got {type(obj).__name__}")])
    given = obj.get("name", name)
    if not isinstance(given, str) or not NAME_RE.fullmatch(given):
        errors.append(("name", f"is required: 1 to 64 letters, digits, '.', '_' or '-', got {_show(given)}"))
        given = given if isinstance(given, str) else None
    elif name is not None and given != name:
        errors.append(("name", f"must match the URL's name {name!r}, got {given!r}"))
    unknown = set(obj) - _PLAYBOOK_KEYS
    if unknown:
        errors.append(("playbook", f"unknown fields {sorted(unknown)}; known: {sorted(_PLAYBOOK_KEYS)}"))

    events = obj.get("event")
    names = [events] if isinstance(events, str) else events
    if not isinstance(names, list) or not names or len(names) > MAX_EVENT_NAMES or not all(
        isinstance(n, str) and 0 < len(n) <= 255 for n in names
    ):
        errors.append(("event", f"is required: an event name or a list of 1 to {MAX_EVENT_NAMES} names, "
                                f"got {_show(events)}"))
        names = []
    elif any(n.startswith("sq.action.") for n in names):
        errors.append(("event", "sq.action.* events (the SDK's own enforcement records) never feed a playbook"))

    conditions: list[Condition] = []
    where = obj.get("where", {})
    if not isinstance(where, dict) or len(where) > MAX_CONDITIONS:
        errors.append(("where", f"must be a table of at most {MAX_CONDITIONS} conditions"))
    else:
        for key, spec in where.items():
            condition = _condition(str(key), spec, errors)
            if condition is not None:
                conditions.append(condition)

    actor = _actor_spec(obj.get("actor"), "actor", errors) if "actor" in obj else None
    if "actor" not in obj:
        errors.append(("actor", 'is required: "ip", "user" or "property:<key>"'))
    prefix = obj.get("prefix")
    if prefix is not None:
        if actor != "ip":
            errors.append(("prefix", 'only applies to actor = "ip"'))
        elif not isinstance(prefix, int) or isinstance(prefix, bool) or not 8 <= prefix <= 128:
            errors.append(("prefix", f"must be an integer (IPv4 8-32, IPv6 16-128), got {_show(prefix)}"))
            prefix = None

    threshold = obj.get("threshold")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 1 <= threshold <= MAX_THRESHOLD:
        errors.append(("threshold", f"must be an integer from 1 to {MAX_THRESHOLD}, got {_show(threshold)}"))
        threshold = 1
    window = 60.0
    if "window" not in obj:
        errors.append(("window", 'is required: a duration like "5m"'))
    else:
        window = _duration(obj, "window", "window", errors, low=1, high=MAX_WINDOW) or window
    distinct = obj.get("distinct")
    if distinct is not None:
        distinct = _actor_spec(distinct, "distinct", errors)
        if distinct is not None and distinct == actor:
            errors.append(("distinct", "must differ from actor (counting distinct values of the actor is always 1)"))
    cooldown = window
    if "cooldown" in obj:
        cooldown = _duration(obj, "cooldown", "cooldown", errors, low=1, high=MAX_BLOCK) or window
    flags: dict[str, bool] = {}
    for key, default in (("enabled", True), ("dry_run", False)):
        value = obj.get(key, default)
        if not isinstance(value, bool):
            errors.append((key, f"must be true or false, got {_show(value)}"))
            value = default
        flags[key] = value
    description = obj.get("description", "")
    if not isinstance(description, str) or len(description) > 1000:
        errors.append(("description", "must be a string of at most 1000 characters"))
        description = ""

    responses: list[Response] = []
    items = obj.get("response")
    if not isinstance(items, list) or not items or len(items) > MAX_RESPONSES:
        errors.append(("response", f"is required: a list of 1 to {MAX_RESPONSES} responses ([[playbook.response]])"))
    else:
        for index, item in enumerate(items):
            response = _response(item, index, actor, allow_http_webhooks, errors)
            if response is not None:
                responses.append(response)
    if errors:
        raise PlaybookError(given, errors)
    assert actor is not None  # noqa: S101 - errors would hold the actor's problem otherwise
    return Playbook(
        name=str(given), events=tuple(dict.fromkeys(names)), conditions=tuple(conditions), actor=actor,
        prefix=prefix, threshold=threshold, window=window, distinct=distinct, cooldown=cooldown,
        enabled=flags["enabled"], dry_run=flags["dry_run"], responses=tuple(responses), description=description,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Allowlist:
    """Never blocked, whatever a playbook or an admin says: networks and exact users."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    users: tuple[tuple[tuple[str, str], ...], ...] = ()  # each user as sorted (key, value-as-text) pairs

    def to_json(self) -> dict[str, Any]:
        return {"ips": [str(n) for n in self.networks], "users": [dict(u) for u in self.users]}


def user_key(identifiers: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A user identifier map as a hashable key; an int and its decimal text are the same identifier."""
    return tuple(sorted((str(k), str(v)) for k, v in identifiers.items()))


def parse_allowlist(obj: object) -> Allowlist:
    """The ``[allow]`` table: ``ips`` (addresses or CIDRs) and ``users`` (identifier maps).

    :raises PlaybookError: with fields ``allow.ips[i]`` / ``allow.users[i]``.
    """
    errors: list[tuple[str, str]] = []
    if not isinstance(obj, dict):
        raise PlaybookError(None, [("allow", "must be a table with ips and users")])
    unknown = set(obj) - {"ips", "users"}
    if unknown:
        errors.append(("allow", f"unknown keys {sorted(unknown)}; known: ips, users"))
    networks = []
    for i, text in enumerate(obj.get("ips", [])):
        try:
            networks.append(ipaddress.ip_network(str(text), strict=False))
        except ValueError:
            errors.append((f"allow.ips[{i}]", f"must be an IP address or CIDR, got {_show(text)}"))
    users = []
    for i, user in enumerate(obj.get("users", [])):
        if not isinstance(user, dict) or not user or not all(
            isinstance(v, str | int) and not isinstance(v, bool) for v in user.values()
        ):
            errors.append((f"allow.users[{i}]", f"must be an identifier map like {{ email = \"...\" }}, got "
                                                f"{_show(user)}"))
            continue
        users.append(user_key(user))
    if errors:
        raise PlaybookError(None, errors)
    return Allowlist(tuple(networks), tuple(users))
