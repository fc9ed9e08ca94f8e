"""sqreen_mw: custom security events, user tracking and blocking for Flask, FastAPI/Starlette and Django apps.

::

    import sqreen_mw
    sqreen_mw.init(token="...", url="http://127.0.0.1:8707")
    sqreen_mw.track("password.reset", properties={"method": "email"})
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from . import _lifecycle
from ._client import Client
from ._exceptions import ConfigurationError, InvalidEvent, SqreenError, UserBlocked
from ._lifecycle import get_client, install_sigterm_handler, set_client
from ._native import speedups
from ._version import __version__

__all__ = [
    "Client",
    "ConfigurationError",
    "InvalidEvent",
    "SqreenError",
    "UserBlocked",
    "__version__",
    "auth_track",
    "flush",
    "identify",
    "init",
    "shutdown",
    "signup_track",
    "track",
]


def init(token: str | None = None, url: str | None = None, *, app_name: str | None = None, **options: Any) -> Client:
    """Configure sqreen_mw for this process and return the client the module-level functions use.

    Options not given are read from the environment (``SQREEN_TOKEN``, ``SQREEN_URL``, ``SQREEN_APP_NAME``, ...;
    see the README's configuration table). Calling ``init()`` again replaces the client, flushing the old one. With a
    token, the client starts at once: it logs in, fetches the blocks to enforce and holds the push channel, so the
    middleware enforces them from the first request (a worker forked later does the same in its own process).

    :param token: the app's API key on the collector; without one nothing is sent.
    :param url: the collector's base URL.
    :param app_name: the name the collector shows for this app.
    :param options: ``heartbeat_interval``, ``trusted_proxies``, ``ip_header``, ``shutdown_timeout``, ...
    :return: the new :class:`Client`.
    :raises ConfigurationError: an option is unknown or has an unusable value.
    """
    client = set_client(Client(token, url, app_name=app_name, **options))
    if client.settings["install_signal_handler"]:
        install_sigterm_handler()
    client.start()  # with a token: log in and fetch the blocks to enforce before the first request
    return client


def track(
    event_name: str,
    options: Mapping[str, Any] | None = None,
    /,
    *,
    properties: Mapping[str, Any] | None = None,
    user_identifiers: Mapping[str, str | int] | None = None,
    timestamp: Any = None,
    collect_body: bool = False,
    request: Any = None,
) -> bool:
    """Record a custom event.

    Inside a request bound by the middleware (or given as ``request=``), the event gets the request's default
    properties (client IP, user agent, path, verb, parameters; scrubbed) and the user named by ``identify()``.

    :param event_name: 1 to 255 characters, not starting with ``sq.``.
    :param options: the original SDK's options mapping (same keys as the keywords); keywords are preferred.
    :param properties: up to 16 entries, ``str`` keys, JSON scalar values; long strings are cut at 4096 characters.
    :param user_identifiers: the user who did it (overrides the identified user), ``str`` -> ``str | int``.
    :param timestamp: a ``datetime`` (naive = UTC) to record past events; default now.
    :param collect_body: attach the request body (capped by ``max_body_bytes``, parsed, scrubbed).
    :param request: a Starlette/FastAPI, Flask/Werkzeug or Django request, an ASGI scope or a WSGI environ.
    :return: True when the event was queued; False when sqreen_mw has no token or was shut down.
    :raises InvalidEvent: an argument broke a rule; the message says which and what was given.
    """
    # Positional: forwarding six keywords cost more than the rest of the call's overhead.
    return (_lifecycle._current or get_client())._track(
        event_name, options, properties, user_identifiers, timestamp, collect_body, request
    )


if speedups is not None:  # the same function without its Python frame (its arguments are handled in C)
    track = functools.update_wrapper(speedups.Front(track, vars(_lifecycle)), track)


def identify(user_identifiers: Mapping[str, str | int], traits: Mapping[str, Any] | None = None) -> None:
    """Name the signed-in user of the current request; later events of the request inherit them.

    :param user_identifiers: e.g. ``{"email": "a@example.com"}``; ``str`` keys, ``str | int`` values.
    :param traits: optional user traits (same rules as event properties).
    :raises InvalidEvent: bad identifiers or traits.
    :raises UserBlocked: the collector blocked exactly this user (``block_user``). The request is flagged: the
        middleware answers it with the block response even if the app catches the exception, unless the response
        has already started (then it is let finish, with a warning). Its events are sent marked ``blocked``.
    """
    (_lifecycle._current or get_client()).identify(user_identifiers, traits)


def auth_track(success: bool, **user_identifiers: str | int) -> None:
    """Record a login attempt (event ``sq.auth_track`` with property ``success``).

    :param success: whether the login succeeded; a success also identifies the user for the request.
    :param user_identifiers: the user, as keywords: ``auth_track(True, email="a@example.com")``.
    :raises InvalidEvent: ``success`` is not a bool or no identifier was given.
    :raises UserBlocked: ``success`` is True and the user is blocked (as :func:`identify`); the attempt is still
        recorded, marked ``blocked``.
    """
    get_client().auth_track(success, **user_identifiers)


def signup_track(**user_identifiers: str | int) -> None:
    """Record a signup (event ``sq.signup_track``) and identify the new user for the request.

    :raises InvalidEvent: no identifier was given or one is not ``str | int``.
    :raises UserBlocked: the new user's identifiers are blocked (as :func:`identify`).
    """
    get_client().signup_track(**user_identifiers)


def flush(timeout: float = 5.0) -> bool:
    """Deliver everything queued so far, waking the flusher at once.

    :param timeout: seconds to wait at most.
    :return: True when every event queued before the call was delivered.
    """
    return get_client().flush(timeout)


def shutdown(timeout: float | None = None) -> None:
    """Flush (within ``timeout``, default the ``shutdown_timeout`` option) and stop sending. Runs at exit by itself."""
    get_client().shutdown(timeout)
