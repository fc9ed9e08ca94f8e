"""Exceptions raised by sqreen_mw.

Exception tree::

    SqreenError                    base of everything the SDK raises on purpose
    ├── InvalidEvent (ValueError)  a track()/identify()/... call broke a rule: fix the call site
    ├── ConfigurationError         init() options or environment variables are wrong
    └── UserBlocked                identify()/auth_track(True) named a user the collector blocked

Runtime faults (collector down, queue full, slow network) are never raised: they are logged on the
``sqreen_mw`` logger and counted in :meth:`sqreen_mw.Client.statistics`.
"""

from __future__ import annotations

from collections.abc import Mapping


class SqreenError(Exception):
    """Base class of the exceptions sqreen_mw raises."""


class InvalidEvent(SqreenError, ValueError):
    """A call's arguments broke a documented rule; the message names the argument, the rule and the value."""


class ConfigurationError(SqreenError):
    """An ``init()`` option or an environment variable has a value that cannot be used."""


class UserBlocked(SqreenError):
    """The user named by ``identify()`` or ``auth_track(True, ...)`` is blocked by a security response.

    The middleware answers the request with the block response even if the application catches this exception.

    :param user_identifiers: the identifiers that matched the block.
    :param action_id: the id of the action that blocks them.
    """

    def __init__(self, user_identifiers: Mapping[str, str | int], action_id: str = "") -> None:
        self.user_identifiers = dict(user_identifiers)
        self.action_id = action_id
        super().__init__(f"user {self.user_identifiers!r} is blocked (action {action_id or 'unknown'})")
