"""WSGI middleware for Flask and any WSGI app.

::

    from sqreen_mw.wsgi import SqreenMiddleware
    app.wsgi_app = SqreenMiddleware(app.wsgi_app)   # Flask
    application = SqreenMiddleware(application)     # any WSGI app

The request is bound while the app runs, and again while the server iterates the response (streamed responses
included) and calls its ``close()``; in between, and after a response that is never closed, nothing is bound. (With
the compiled part, the response's steps run in a copy of the context the app call ended with, the request bound in
it: a context variable a step sets is seen by the next steps, not by the server between them.)
``wsgi.input`` is teed so ``collect_body=True`` never takes the body from the app; when the body must be read ahead
(``collect_body=True`` before the app read it), a seekable server stream is moved back to where it was, so what
reads it later (a test client re-sending on 307/308, ``request.form`` after the response, an outer middleware)
finds it whole.

Blocking: a request from a blocked client IP gets the block response before the app runs (the client IP is
resolved only when some IP block exists). While some user is blocked, ``start_response`` is watched: when
``identify()`` / ``auth_track(True, ...)`` refused the user during the app call, the app's response (its own, or
Flask's 500 for an uncaught :class:`~sqreen_mw.UserBlocked`) is closed and the block response sent instead. An app
that starts its response later (a generator calling ``start_response`` as it is iterated) and refuses the user while
streaming is let finish, with a warning on logger ``sqreen_mw``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import _lifecycle
from ._block_response import Rendered
from ._body import WSGIInput
from ._client import Client
from ._context import WSGI, RequestContext, _new, current_context
from ._enforce import Enforcer
from ._exceptions import UserBlocked
from ._lifecycle import get_client
from ._native import speedups

logger = logging.getLogger("sqreen_mw")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})
_PLAIN_ITERATORS: frozenset[type] = frozenset({type(iter([])), type(iter(()))})

# The context variable's methods, looked up once (one global load a call instead of a global and an attribute).
_bind = current_context.set
_unbind = current_context.reset

__all__ = ["SqreenMiddleware"]


class _BoundResponse:
    """The app's response iterable; the request is bound again while the server iterates it and calls ``close()``.

    The binding made for the app call ends when the app returns: a response never closed (Werkzeug's test client
    leaves ``close()`` to the caller) must not leave its request bound to later code of the same thread. Streamed
    chunks and ``close()`` still see the request, for one ``ContextVar.set``/``reset`` per chunk.
    """

    __slots__ = ("_ctx", "_guard", "_iterator", "_result")

    def __init__(self, result: Iterable[bytes], ctx: RequestContext, guard: _Guard | None = None) -> None:
        self._result = result
        self._ctx = ctx
        self._guard = guard
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        # A generator: its for loop calls iter() and next() of the app's response with the request bound, several
        # times cheaper per chunk than __next__ (a method call, and StopIteration raised through it).
        ctx, set_, reset = self._ctx, _bind, _unbind
        token = set_(ctx)
        bound = True
        try:
            iterator = iter(self._result)
            if type(iterator) in _PLAIN_ITERATORS:
                # A list's or tuple's own iterator (Django's HttpResponse, WebOb's app_iter, a closing wrapper
                # around a list): no code of the app runs as it is iterated, only in close().
                reset(token)
                bound = False
                yield from iterator
                return
            for chunk in iterator:
                reset(token)
                bound = False
                yield chunk
                token = set_(ctx)
                bound = True
        finally:
            if bound:  # the app's iterator raised or ended; not at the yield (the server closed us there)
                reset(token)

    def __next__(self) -> bytes:  # a server calling next() on the response itself, without iter()
        iterator = self._iterator
        if iterator is None:
            iterator = self._iterator = iter(self._result)
        token = _bind(self._ctx)
        try:
            return next(iterator)
        finally:
            _unbind(token)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            token = _bind(self._ctx)
            try:
                close()
            finally:
                _unbind(token)
        if self._guard is not None:
            self._guard.finished()


class SqreenMiddleware:
    """Bind each request to sqreen_mw's request context.

    :param app: the WSGI application to wrap.
    :param client: the :class:`sqreen_mw.Client` to use; default the one ``sqreen_mw.init()`` made.
    """

    def __init__(self, app: WSGIApp, *, client: Client | None = None) -> None:
        self.app = app
        self._client = client

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        client = self._client or _lifecycle._current or get_client()
        if client._started_pid is None and client.enabled:  # a process's first request: fetch the actions
            client.start()
        ctx = _new(RequestContext)  # = RequestContext(WSGI, environ), every slot set here (no __init__ call)
        ctx.kind = WSGI
        ctx.raw = environ
        ctx.body_tee = ctx.user = ctx.traits = ctx.blocked = ctx._capture = None
        enforcer = client.enforcer
        actions = enforcer.actions
        if actions.has_ip_blocks and enforcer.refuse_ip(ctx) is not None:
            return _answer(start_response, enforcer.response.for_accept(environ.get("HTTP_ACCEPT")))
        if environ.get("REQUEST_METHOD") not in _NO_BODY:
            text = environ.get("CONTENT_LENGTH")
            # Up to 18 digits: anything else is no length (not text, or int() of thousands of digits would raise)
            length = None
            if type(text) is str and 0 < len(text) <= 18 and text.isascii() and text.isdigit():
                length = int(text)
            if length or environ.get("HTTP_TRANSFER_ENCODING"):
                ctx.body_tee = tee = _new(WSGIInput)  # = WSGIInput(environ["wsgi.input"], length, ...), inline
                tee.limit = client.max_body_bytes
                tee._chunks = []
                tee._size = 0
                tee.ended = tee.overflow = tee.read_any = tee._prefetched = tee._rewound = False
                tee._parsed = None
                tee._stream = environ["wsgi.input"]
                tee._remaining = length
                tee._buffer = b""
                environ["wsgi.input"] = tee
        if actions.has_user_blocks:
            return self._guarded(enforcer, ctx, environ, start_response)
        token = _bind(ctx)
        try:
            result = self.app(environ, start_response)
        finally:
            _unbind(token)
        if type(result) is list:  # nothing of the app runs later
            return result
        wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(wrapper, type) and isinstance(result, wrapper):  # the server sends it as is (sendfile)
            return result
        bound = _new(_BoundResponse)  # = _BoundResponse(result, ctx), inline
        bound._result = result
        bound._ctx = ctx
        bound._guard = bound._iterator = None
        return bound

    def _guarded(self, enforcer: Enforcer, ctx: RequestContext, environ: Environ,
                 start_response: StartResponse) -> Iterable[bytes]:
        # Some user is blocked: identify() may refuse this request's user (see _Guard).
        guard = _Guard(enforcer, ctx, start_response)
        token = _bind(ctx)
        try:
            result = self.app(environ, guard.start_response)
        except UserBlocked:
            if guard.called:
                raise  # the app set its headers already: the server answers 500, as for any error now
            return guard.answer(environ)
        finally:
            _unbind(token)
        guard.returned = True
        if guard.replaced or (ctx.blocked is not None and not guard.called):
            # The user was refused while the app ran: its own response is discarded (and closed, as PEP 3333
            # requires of whoever drops an iterable).
            _close(result)
            return guard.answer(environ)
        if type(result) is list or _is_file_wrapper(environ, result):
            # Nothing of the app runs later (or the server sends a file as is: keep its sendfile path).
            if ctx.blocked is not None:
                enforcer.too_late(ctx)
            return result
        return _BoundResponse(result, ctx, guard)


class _Guard:
    """Watches ``start_response`` while some user is blocked: a refused user's response is replaced by the block
    response if the app had not started it before the refusal; one started later is let finish (logged)."""

    __slots__ = ("_ctx", "_enforcer", "_start_response", "called", "replaced", "returned")

    def __init__(self, enforcer: Enforcer, ctx: RequestContext, start_response: StartResponse) -> None:
        self._enforcer = enforcer
        self._ctx = ctx
        self._start_response = start_response
        self.called = self.replaced = self.returned = False

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if self._ctx.blocked is not None and not self.returned:
            # Refused during the app call (Flask calls start_response as the app returns, after the view): the
            # block response is sent instead, once the app has returned.
            self.called = self.replaced = True
            return _discard
        self.called = True
        return self._start_response(status, headers, exc_info)

    def answer(self, environ: Environ) -> list[bytes]:
        return _answer(self._start_response, self._enforcer.response.for_accept(environ.get("HTTP_ACCEPT")))

    def finished(self) -> None:
        if self._ctx.blocked is not None and not self.replaced:
            self._enforcer.too_late(self._ctx)


def _discard(data: bytes) -> None:
    """The ``write()`` given to an app whose response is being replaced: its body goes nowhere."""


def _answer(start_response: StartResponse, rendered: Rendered) -> list[bytes]:
    start_response(rendered.status_line, list(rendered.wsgi_headers))
    return [rendered.body]


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception as exc:
            logger.warning("sqreen_mw: closing a replaced response failed: %s: %s", type(exc).__name__, exc)


def _is_file_wrapper(environ: Environ, result: object) -> bool:
    wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(wrapper, type) and isinstance(result, wrapper)


if speedups is not None:
    # The common request (a started client, no block to check) served without a Python frame: the same context and
    # body tee, the request bound around the app, its response wrapped as _BoundResponse does; every other request
    # goes to the Python method above, which stays the reference.
    SqreenMiddleware.__call__ = functools.update_wrapper(  # type: ignore[method-assign,assignment]
        speedups.WSGICall(SqreenMiddleware.__call__, vars(_lifecycle), current_context, RequestContext, WSGIInput),
        SqreenMiddleware.__call__)
