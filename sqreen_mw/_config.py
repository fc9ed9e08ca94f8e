"""``init()`` options: names, environment variables, defaults and parsing, in one table.

An option given to ``init()`` wins over its environment variable, which wins over the default. A value that cannot
be used raises :class:`ConfigurationError` naming the option (or variable) and what was given.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ._block_response import parse_block_body, parse_block_content_type, parse_block_status
from ._exceptions import ConfigurationError

DEFAULT_URL = "http://127.0.0.1:8707"


def _positive_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}") from None
    if not number > 0:
        raise ConfigurationError(f"{name} must be > 0, got {value!r}")
    return number


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}") from None
    if number <= 0:
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    return number


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false, got {value!r}")


def _text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str, got {type(value).__name__}")
    return value.strip() or None


def _url(name: str, value: Any) -> str:
    text = _text(name, value) or DEFAULT_URL
    if not text.startswith(("http://", "https://")):
        raise ConfigurationError(f"{name} must be an http:// or https:// URL, got {text!r}")
    try:
        url = httpx.URL(text)
        url.port  # noqa: B018 - parses the port, raising on garbage
    except (httpx.InvalidURL, ValueError) as exc:
        raise ConfigurationError(f"{name} is not a valid URL ({exc}), got {text!r}") from None
    if not url.host:
        raise ConfigurationError(f"{name} must name a host, got {text!r}")
    return text.rstrip("/")


def _passthrough(name: str, value: Any) -> Any:
    # Validated by the component that uses it (Scrubber, ClientIPResolver), which names the option.
    return value


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    env: str | None
    default: Any
    parse: Callable[[str, Any], Any]
    doc: str
    empty_is_a_value: bool = False  # an empty environment variable means "" (e.g. trust no proxy), not unset


OPTIONS: tuple[Option, ...] = (
    Option("token", "SQREEN_TOKEN", None, _text, "API key of this app on the collector; none = send nothing"),
    Option("url", "SQREEN_URL", DEFAULT_URL, _url, "collector base URL"),
    Option("app_name", "SQREEN_APP_NAME", None, _text, "name the collector shows for this app"),
    Option("heartbeat_interval", "SQREEN_HEARTBEAT_INTERVAL", 60.0, _positive_float,
           "seconds between heartbeats; queued events are sent at least this often"),
    Option("batch_size", "SQREEN_BATCH_SIZE", 1000, _positive_int, "events per batch; a full batch is sent at once"),
    Option("max_queue_events", "SQREEN_MAX_QUEUE_EVENTS", 10_000, _positive_int,
           "queue bound in events; over it the oldest are dropped (counted)"),
    Option("max_queue_bytes", "SQREEN_MAX_QUEUE_BYTES", 10 * 1024 * 1024, _positive_int,
           "queue bound in estimated bytes"),
    Option("max_event_age", "SQREEN_MAX_EVENT_AGE", 3600.0, _positive_float,
           "seconds an undelivered event may wait (from track()) before it is dropped (counted)"),
    Option("shutdown_timeout", "SQREEN_SHUTDOWN_TIMEOUT", 2.0, _positive_float,
           "seconds the exit flush may take, collector up or down"),
    Option("request_timeout", "SQREEN_REQUEST_TIMEOUT", 10.0, _positive_float, "seconds per HTTP request"),
    Option("trusted_proxies", "SQREEN_TRUSTED_PROXIES", None, _passthrough,
           "CIDRs of proxies whose forwarding headers are believed, \"private\" or *; default loopback", True),
    Option("ip_header", "SQREEN_IP_HEADER", None, _text, "header set by your proxy with the client IP"),
    Option("strip_sensitive_data", "SQREEN_STRIP_SENSITIVE_DATA", True, _bool, "scrub secrets and card numbers"),
    Option("sensitive_keys", "SQREEN_SENSITIVE_KEYS", None, _passthrough,
           "regex (str) replacing the key pattern, or a list of extra key names", True),
    Option("sensitive_values", "SQREEN_SENSITIVE_VALUES", None, _passthrough,
           "regex (str) replacing the value pattern, or a list of extra regexes", True),
    Option("max_body_bytes", "SQREEN_MAX_BODY_BYTES", 10_000, _positive_int, "cap on a body kept by collect_body"),
    Option("block_status", "SQREEN_BLOCK_STATUS", 403, parse_block_status, "HTTP status of the block response"),
    Option("block_body", "SQREEN_BLOCK_BODY", None, parse_block_body,
           "body of the block response (str or bytes); default JSON or HTML by Accept"),
    Option("block_content_type", "SQREEN_BLOCK_CONTENT_TYPE", None, parse_block_content_type,
           "Content-Type of a custom block_body; default guessed from it (JSON, HTML or text)"),
    Option("install_signal_handler", "SQREEN_INSTALL_SIGNAL_HANDLER", True, _bool,
           "flush on SIGTERM (then chain to the previous handler)"),
)
_BY_NAME = {option.name: option for option in OPTIONS}


def resolve(given: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Merge ``init()`` keywords, environment variables and defaults into parsed settings."""
    environ = os.environ if environ is None else environ
    for name in given:
        if name not in _BY_NAME:
            close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known options: {', '.join(_BY_NAME)}"
            raise ConfigurationError(f"unknown init() option {name!r}{hint}")
    settings: dict[str, Any] = {}
    explicit: set[str] = set()  # options set by the app (keyword or environment), not defaulted
    for option in OPTIONS:
        if given.get(option.name) is not None:
            settings[option.name] = option.parse(option.name, given[option.name])
            explicit.add(option.name)
        elif option.env and (environ.get(option.env) or (option.empty_is_a_value and option.env in environ)):
            settings[option.name] = option.parse(option.env, environ[option.env])
            explicit.add(option.name)
        else:
            settings[option.name] = option.parse(option.name, option.default) if option.default is not None else None
    settings["explicit"] = frozenset(explicit)
    return settings
