"""Django middleware, sync and async: add ``"sqreen_mw.django.SqreenMiddleware"`` to ``MIDDLEWARE``.

Put it near the top (after ``SecurityMiddleware``) so every view sees the request context. It works under WSGI
(gunicorn, ``runserver``) and ASGI (uvicorn, daphne); Django's ASGI handler has no lifespan, so queued events are
flushed at exit by ``atexit`` and the SIGTERM handler that ``sqreen_mw.init()`` installs.

Blocking, the same under WSGI and ASGI: a request from a blocked client IP gets the block response before the
view (and the middleware below this one) runs. A view whose ``identify()`` / ``auth_track(True, ...)`` refused the
user gets the block response instead of its own, whether it let :class:`~sqreen_mw.UserBlocked` out
(``process_exception``: no 500, no error log) or caught it; a streamed body that refuses the user midway is let
finish, with a warning on logger ``sqreen_mw``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.http import HttpRequest, HttpResponse, HttpResponseBase
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("sqreen_mw.django needs Django: pip install 'sqreen_mw[django]' "
                      "(from a checkout of sqreen_mw: pip install -e '.[django]')") from exc

from ._context import DJANGO, RequestContext, current_context
from ._enforce import Enforcer
from ._exceptions import UserBlocked
from ._lifecycle import get_client

__all__ = ["SqreenMiddleware"]


def _response(enforcer: Enforcer, request: HttpRequest) -> HttpResponse:
    rendered = enforcer.response.for_accept(request.META.get("HTTP_ACCEPT"))
    response = HttpResponse(rendered.body, status=rendered.status, content_type=rendered.content_type)
    response["Cache-Control"] = "no-store"
    response.sqreen_mw_block = True
    return response


def _bind_sync(ctx: RequestContext, content: Iterator[bytes], enforcer: Enforcer) -> Iterator[bytes]:
    refused = ctx.blocked is not None
    while True:
        token = current_context.set(ctx)
        try:
            chunk = next(content)
        except StopIteration:
            if ctx.blocked is not None and not refused:
                enforcer.too_late(ctx)
            return
        finally:
            current_context.reset(token)
        yield chunk


async def _bind_async(ctx: RequestContext, content: AsyncIterator[bytes], enforcer: Enforcer) -> AsyncIterator[bytes]:
    refused = ctx.blocked is not None
    while True:
        token = current_context.set(ctx)
        try:
            chunk = await anext(content)
        except StopAsyncIteration:
            if ctx.blocked is not None and not refused:
                enforcer.too_late(ctx)
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
        enforcer = _enforcer()
        ctx = RequestContext(DJANGO, request)
        if enforcer.actions.has_ip_blocks and enforcer.refuse_ip(ctx) is not None:
            return _response(enforcer, request)
        token = current_context.set(ctx)
        try:
            response = self.get_response(request)
        finally:
            current_context.reset(token)
        return self._finish(enforcer, ctx, request, response)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        enforcer = _enforcer()
        ctx = RequestContext(DJANGO, request)
        if enforcer.actions.has_ip_blocks and enforcer.refuse_ip(ctx) is not None:
            return _response(enforcer, request)
        token = current_context.set(ctx)
        try:
            response: Awaitable[HttpResponseBase] = self.get_response(request)
            result = await response
        finally:
            current_context.reset(token)
        return self._finish(enforcer, ctx, request, result)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        """A view that let :class:`~sqreen_mw.UserBlocked` out gets the block response (not a 500 and its log)."""
        if isinstance(exception, UserBlocked):
            return _response(get_client().enforcer, request)
        return None

    @staticmethod
    def _finish(enforcer: Enforcer, ctx: RequestContext, request: HttpRequest,
                response: HttpResponseBase) -> HttpResponseBase:
        if ctx.blocked is not None and not getattr(response, "sqreen_mw_block", False):
            # The view caught UserBlocked and answered: nothing was sent yet, so the block response replaces it.
            response.close()
            return _response(enforcer, request)
        # A streamed body is produced after the middleware returned: keep the request bound while it is.
        if getattr(response, "streaming", False) and getattr(response, "file_to_stream", None) is None:
            # (a FileResponse keeps its file so the server can use sendfile)
            content = response.streaming_content
            if getattr(response, "is_async", False):
                response.streaming_content = _bind_async(ctx, aiter(content), enforcer)
            else:
                response.streaming_content = _bind_sync(ctx, iter(content), enforcer)
        return response


def _enforcer() -> Enforcer:
    client = get_client()
    if client._started_pid is None and client.enabled:  # a process's first request: fetch the actions
        client.start()
    return client.enforcer
