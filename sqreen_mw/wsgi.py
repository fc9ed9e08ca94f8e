"""WSGI middleware for Flask and any WSGI app.

::

    from sqreen_mw.wsgi import SqreenMiddleware
    app.wsgi_app = SqreenMiddleware(app.wsgi_app)   # Flask
    application = SqreenMiddleware(application)     # any WSGI app

The request is bound while the app runs, and again while the server iterates the response (streamed responses
included) and calls its ``close()``; in between, and after a response that is never closed, nothing is bound.
``wsgi.input`` is teed so ``collect_body=True`` never takes the body from the app; when the body must be read ahead
(``collect_body=True`` before the app read it), a seekable server stream is moved back to where it was, so what
reads it later (a test client re-sending on 307/308, ``request.form`` after the response, an outer middleware)
finds it whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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
    """The app's response iterable; the request is bound again while the server iterates it and calls ``close()``.

    The binding made for the app call ends when the app returns: a response never closed (Werkzeug's test client
    leaves ``close()`` to the caller) must not leave its request bound to later code of the same thread. Streamed
    chunks and ``close()`` still see the request, for one ``ContextVar.set``/``reset`` per chunk.
    """

    __slots__ = ("_ctx", "_iterator", "_result")

    def __init__(self, result: Iterable[bytes], ctx: RequestContext) -> None:
        self._result = result
        self._ctx = ctx
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        token = current_context.set(self._ctx)
        try:
            self._iterator = iter(self._result)
        finally:
            current_context.reset(token)
        return self

    def __next__(self) -> bytes:
        iterator = self._iterator
        if iterator is None:
            iterator = self._iterator = iter(self._result)
        token = current_context.set(self._ctx)
        try:
            return next(iterator)
        finally:
            current_context.reset(token)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            token = current_context.set(self._ctx)
            try:
                close()
            finally:
                current_context.reset(token)


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
        finally:
            current_context.reset(token)
        if type(result) is list or _is_file_wrapper(environ, result):
            # Nothing of the app runs later (or the server sends a file as is: keep its sendfile path).
            return result
        return _BoundResponse(result, ctx)


def _is_file_wrapper(environ: Environ, result: object) -> bool:
    wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(wrapper, type) and isinstance(result, wrapper)
