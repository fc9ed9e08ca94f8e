"""WSGI middleware for Flask and any WSGI app.

::

    from sqreen_mw.wsgi import SqreenMiddleware
    app.wsgi_app = SqreenMiddleware(app.wsgi_app)   # Flask
    application = SqreenMiddleware(application)     # any WSGI app

The request stays bound while the server iterates the response (streamed responses included) and until it calls the
response's ``close()``, as PEP 3333 servers do (Werkzeug's test client leaves ``close()`` to you: use its responses
as context managers). ``wsgi.input`` is teed so ``collect_body=True`` never takes the body from the app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextvars import Token
from typing import Any

from ._body import WSGIInput
from ._client import Client
from ._context import WSGI, RequestContext, current_context
from ._lifecycle import get_client

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})

__all__ = ["SqreenMiddleware"]


class _BoundResponse:
    """The app's response iterable; the request stays bound until the server calls ``close()``.

    WSGI servers iterate the response and call ``close()`` in the thread (and context) that called the app, so the
    binding made for the call simply lasts until ``close()``: streamed bodies and ``close()`` see the request, and
    the common one-chunk response pays nothing per chunk.
    """

    __slots__ = ("_ctx", "_result", "_token")

    def __init__(self, result: Iterable[bytes], ctx: RequestContext, token: Token[RequestContext | None]) -> None:
        self._result = result
        self._ctx = ctx
        self._token: Token[RequestContext | None] | None = token

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            token, self._token = self._token, None
            if token is not None:  # close() may be called twice
                _unbind(self._ctx, token)


def _unbind(ctx: RequestContext, token: Token[RequestContext | None]) -> None:
    try:
        current_context.reset(token)
    except (ValueError, RuntimeError):  # closed from another context, or out of order
        if current_context.get() is ctx:
            current_context.set(None)


class SqreenMiddleware:
    """Bind each request to sqreen_mw's request context.

    :param app: the WSGI application to wrap.
    :param client: the :class:`sqreen_mw.Client` to use; default the one ``sqreen_mw.init()`` made.
    """

    def __init__(self, app: WSGIApp, *, client: Client | None = None) -> None:
        self.app = app
        self._client = client

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        tee = None
        if environ.get("REQUEST_METHOD") not in _NO_BODY:
            length_text = environ.get("CONTENT_LENGTH")
            length = int(length_text) if length_text and length_text.isascii() and length_text.isdigit() else None
            if length or environ.get("HTTP_TRANSFER_ENCODING"):
                tee = WSGIInput(environ["wsgi.input"], length, (self._client or get_client()).max_body_bytes)
                environ["wsgi.input"] = tee
        ctx = RequestContext(WSGI, environ, tee)
        token = current_context.set(ctx)
        try:
            result = self.app(environ, start_response)
        except BaseException:
            current_context.reset(token)
            raise
        if type(result) is list or _is_file_wrapper(environ, result):
            # Nothing of the app runs later (or the server sends a file as is: keep its sendfile path).
            current_context.reset(token)
            return result
        return _BoundResponse(result, ctx, token)


def _is_file_wrapper(environ: Environ, result: object) -> bool:
    wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(wrapper, type) and isinstance(result, wrapper)
