"""WSGI middleware for Flask and any WSGI app.

::

    from sqreen_mw.wsgi import SqreenMiddleware
    app.wsgi_app = SqreenMiddleware(app.wsgi_app)   # Flask
    application = SqreenMiddleware(application)     # any WSGI app

The request stays bound while the server iterates the response (streamed responses included) and while it calls the
response's ``close()``. ``wsgi.input`` is teed so ``collect_body=True`` never takes the body from the app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._body import WSGIInput
from ._client import Client, get_client
from ._context import WSGI, RequestContext, current_context

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})

__all__ = ["SqreenMiddleware"]


class _BoundResponse:
    """The app's response iterable, re-binding the request context around each step and around ``close()``."""

    __slots__ = ("_ctx", "_it", "_result")

    def __init__(self, result: Iterable[bytes], ctx: RequestContext) -> None:
        self._result = result
        self._ctx = ctx
        self._it: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        token = current_context.set(self._ctx)
        try:
            if self._it is None:
                self._it = iter(self._result)
            return next(self._it)
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
            length = int(length_text) if length_text and length_text.isdigit() else None
            if length or environ.get("HTTP_TRANSFER_ENCODING"):
                tee = WSGIInput(environ["wsgi.input"], length, (self._client or get_client()).max_body_bytes)
                environ["wsgi.input"] = tee
        ctx = RequestContext(WSGI, environ, tee)
        token = current_context.set(ctx)
        try:
            result = self.app(environ, start_response)
        finally:
            current_context.reset(token)
        return _BoundResponse(result, ctx)
