"""Django middleware, sync and async: add ``"sqreen_mw.django.SqreenMiddleware"`` to ``MIDDLEWARE``.

Put it near the top (after ``SecurityMiddleware``) so every view sees the request context. It works under WSGI
(gunicorn, ``runserver``) and ASGI (uvicorn, daphne); Django's ASGI handler has no lifespan, so queued events are
flushed at exit by ``atexit`` and the SIGTERM handler that ``sqreen_mw.init()`` installs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.http import HttpRequest, HttpResponseBase
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("sqreen_mw.django needs Django: pip install 'sqreen_mw[django]' "
                      "(from a checkout of sqreen_mw: pip install -e '.[django]')") from exc

from ._context import DJANGO, RequestContext, current_context

__all__ = ["SqreenMiddleware"]


def _bind_sync(ctx: RequestContext, content: Iterator[bytes]) -> Iterator[bytes]:
    while True:
        token = current_context.set(ctx)
        try:
            chunk = next(content)
        except StopIteration:
            return
        finally:
            current_context.reset(token)
        yield chunk


async def _bind_async(ctx: RequestContext, content: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    while True:
        token = current_context.set(ctx)
        try:
            chunk = await anext(content)
        except StopAsyncIteration:
            return
        finally:
            current_context.reset(token)
        yield chunk


class SqreenMiddleware:
    """Bind each request to sqreen_mw's request context (sync- and async-capable)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        ctx = RequestContext(DJANGO, request)
        token = current_context.set(ctx)
        try:
            response = self.get_response(request)
        finally:
            current_context.reset(token)
        return self._bind_stream(ctx, response)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        ctx = RequestContext(DJANGO, request)
        token = current_context.set(ctx)
        try:
            response: Awaitable[HttpResponseBase] = self.get_response(request)
            result = await response
        finally:
            current_context.reset(token)
        return self._bind_stream(ctx, result)

    @staticmethod
    def _bind_stream(ctx: RequestContext, response: HttpResponseBase) -> HttpResponseBase:
        # A streamed body is produced after the middleware returned: keep the request bound while it is.
        if getattr(response, "streaming", False) and getattr(response, "file_to_stream", None) is None:
            # (a FileResponse keeps its file so the server can use sendfile)
            content = response.streaming_content
            if getattr(response, "is_async", False):
                response.streaming_content = _bind_async(ctx, aiter(content))
            else:
                response.streaming_content = _bind_sync(ctx, iter(content))
        return response
