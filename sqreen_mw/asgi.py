"""Pure ASGI middleware for Starlette, FastAPI and any ASGI app.

::

    from sqreen_mw.asgi import SqreenMiddleware
    app.add_middleware(SqreenMiddleware)      # Starlette / FastAPI
    app = SqreenMiddleware(app)               # any ASGI app

It binds the request to the context ``track()`` reads (sync endpoints run in a thread pool see it too, and so do
tasks the request starts), tees the request body so ``collect_body=True`` works without taking the body from the
app, and flushes queued events when the server sends ``lifespan.shutdown.complete`` (within ``shutdown_timeout``;
not waiting at all when the collector is known to be down, or once an attempt fails: the exit hooks try again, and a
test suite entering ``with TestClient(app):`` many times is not slowed down).

Once a request is served, its context lets the scope go: servers keep copies of a request's ``contextvars``
context after the response (uvicorn's keep-alive timer, for 5 s), and with it the whole scope would stay in memory.
An event tracked afterwards by a task the request started carries the request's properties if the request tracked
an event itself while it was served, and none otherwise.

Blocking (the collector's ``block_ip`` / ``block_user`` actions):

- A request (or WebSocket) from a blocked client IP gets the block response (403 JSON, or HTML for browsers;
  ``block_status``/``block_body``/``block_content_type``) before the app runs; a WebSocket is closed with 1008 before
  it is accepted. The client IP is resolved only when some IP block exists: otherwise a request pays nothing more.
- ``identify()`` / ``auth_track(True, ...)`` of a blocked user raise :class:`~sqreen_mw.UserBlocked` and flag the
  request. While some user is blocked the middleware watches ``http.response.start``: the block response is sent
  when the exception reaches the middleware uncaught, and replaces the app's own response when the app caught it
  (or turned it into an error page), as long as the app had not started its response before the refusal. A
  response already started (a stream that identifies the user midway) is let finish, with a warning on logger
  ``sqreen_mw``; the user's next request is refused.
- This works with ``BaseHTTPMiddleware`` user middleware (FastAPI's ``@app.middleware("http")``) inside or outside
  this one: ``UserBlocked`` is an ``Exception``, so Starlette passes it through.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread

from . import _lifecycle
from ._block_response import Rendered
from ._body import ASGIBodyTee
from ._client import Client
from ._context import ASGI, RequestContext, _new, current_context
from ._enforce import Enforcer
from ._exceptions import UserBlocked
from ._lifecycle import get_client
from ._native import speedups

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})

# The context variable's methods, looked up once (one global load a call instead of a global and an attribute).
_bind = current_context.set
_unbind = current_context.reset

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
        if scope["type"] != "http":
            await self._other(scope, receive, send)
            return
        # The per-request path: every step here is paid by every request, so it is kept to what must happen.
        client = self._client or _lifecycle._current or get_client()
        if client._started_pid is None and client.enabled:  # a process's first request: fetch the actions
            client.start()
        ctx = _new(RequestContext)  # = RequestContext(ASGI, scope), every slot set here (no __init__ call)
        ctx.kind = ASGI
        ctx.raw = scope
        ctx.body_tee = ctx.user = ctx.traits = ctx.blocked = ctx._capture = None
        actions = client.enforcer.actions
        if actions.has_ip_blocks and client.enforcer.refuse_ip(ctx) is not None:
            await _answer(send, client.enforcer.response.for_accept(_accept(scope)))
            return
        if scope["method"] not in _NO_BODY:
            ctx.body_tee = tee = _new(ASGIBodyTee)  # = ASGIBodyTee(receive, client.max_body_bytes), inline
            tee.limit = client.max_body_bytes
            tee._chunks = []
            tee._size = 0
            tee.ended = tee.overflow = tee.read_any = False
            tee._parsed = None
            tee._receive = receive
            receive = tee.receive
        token = _bind(ctx)
        try:
            if actions.has_user_blocks:  # identify() may refuse the user: watch the response start
                await self._guarded(client.enforcer, ctx, scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            _unbind(token)
            ctx.raw = ctx.body_tee = None  # served: copies of this context outlive it (see RequestContext)

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
        elif kind == "websocket":
            client = self._client or get_client()
            enforcer = client.enforcer
            if enforcer.actions.has_ip_blocks and enforcer.refuse_ip(RequestContext(ASGI, scope)) is not None:
                await send({"type": "websocket.close", "code": 1008})  # before accept: the server answers 403
                return
            await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _guarded(self, enforcer: Enforcer, ctx: RequestContext, scope: Scope, receive: Receive,
                       send: Send) -> None:
        # Some user is blocked: identify() may refuse this request's user. The block response replaces the app's
        # own as long as nothing of it was sent; after that the app's response is let finish (and logged).
        started = replaced = False

        async def guarded_send(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return  # the app's own response to a refused user is discarded
            if not started and message["type"] == "http.response.start":
                started = True
                if ctx.blocked is not None:
                    replaced = True
                    await _answer(send, enforcer.response.for_accept(_accept(scope)))
                    return
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except UserBlocked:
            if started:
                enforcer.too_late(ctx)
                return
            replaced = True
            await _answer(send, enforcer.response.for_accept(_accept(scope)))
            return
        if ctx.blocked is not None and not replaced:
            if started:
                enforcer.too_late(ctx)
            else:  # the app caught UserBlocked and sent nothing
                await _answer(send, enforcer.response.for_accept(_accept(scope)))

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                client = self._client or get_client()
                await anyio.to_thread.run_sync(
                    lambda: client._flush(client.settings["shutdown_timeout"], give_up_when_down=True)
                )
            await send(message)

        return lifespan_send


def _accept(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"accept":
            return str(value.decode("latin-1"))
    return None


async def _answer(send: Send, rendered: Rendered) -> None:
    await send({"type": "http.response.start", "status": rendered.status, "headers": list(rendered.asgi_headers)})
    await send({"type": "http.response.body", "body": rendered.body})


if speedups is not None:
    # The common HTTP request (a started client, no block to check) served without a Python frame: the same context
    # and body tee, the request bound while the app runs (from the first step of the awaitable to its end, in the
    # running task's context, as the coroutine did); every other call goes to the Python method above, which stays
    # the reference. It is still a coroutine function to servers and frameworks that ask (uvicorn picks ASGI 3 so).
    _compiled = functools.update_wrapper(
        speedups.ASGICall(SqreenMiddleware.__call__, vars(_lifecycle), current_context, RequestContext, ASGIBodyTee),
        SqreenMiddleware.__call__)
    if hasattr(asyncio.coroutines, "_is_coroutine"):  # asyncio.iscoroutinefunction before Python 3.12
        _compiled._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]
    if hasattr(inspect, "markcoroutinefunction"):  # inspect.iscoroutinefunction from Python 3.12
        inspect.markcoroutinefunction(_compiled)
    SqreenMiddleware.__call__ = _compiled  # type: ignore[method-assign,assignment]
