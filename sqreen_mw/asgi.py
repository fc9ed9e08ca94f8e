"""Pure ASGI middleware for Starlette, FastAPI and any ASGI app.

::

    from sqreen_mw.asgi import SqreenMiddleware
    app.add_middleware(SqreenMiddleware)      # Starlette / FastAPI
    app = SqreenMiddleware(app)               # any ASGI app

It binds the request to the context ``track()`` reads (sync endpoints run in a thread pool see it too), tees the
request body so ``collect_body=True`` works without taking the body from the app, and flushes queued events when the
server sends ``lifespan.shutdown.complete`` (within ``shutdown_timeout``; not waiting at all when the collector is
known to be down, or once an attempt fails: the exit hooks try again, and a test suite entering
``with TestClient(app):`` many times is not slowed down).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread

from ._body import ASGIBodyTee
from ._client import Client
from ._context import ASGI, RequestContext, current_context
from ._lifecycle import get_client

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})

__all__ = ["SqreenMiddleware"]


class SqreenMiddleware:
    """Bind each HTTP request to sqreen_mw's request context.

    :param app: the ASGI application to wrap.
    :param client: the :class:`sqreen_mw.Client` to use; default the one ``sqreen_mw.init()`` made.
    """

    def __init__(self, app: ASGIApp, *, client: Client | None = None) -> None:
        self.app = app
        self._client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            tee = None
            if scope["method"] not in _NO_BODY:
                tee = ASGIBodyTee(receive, (self._client or get_client()).max_body_bytes)
                receive = tee.receive
            token = current_context.set(RequestContext(ASGI, scope, tee))
            try:
                await self.app(scope, receive, send)
            finally:
                current_context.reset(token)
        elif kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                client = self._client or get_client()
                await anyio.to_thread.run_sync(
                    lambda: client._flush(client.settings["shutdown_timeout"], give_up_when_down=True)
                )
            await send(message)

        return lifespan_send
