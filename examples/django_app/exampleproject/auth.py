"""Bearer-token authentication for views, sync and async, that names the user for sqreen_mw."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse

import sqreen_mw

from .store import bearer_token, verify_token

V = TypeVar("V", bound=Callable[..., Any])


def token_required(view: V) -> V:
    """Set ``request.email`` from a valid ``Authorization: Bearer`` token and identify that user, or answer 401."""
    if iscoroutinefunction(view):

        @wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not _authenticate(request):
                return _unauthorized()
            return await view(request, *args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not _authenticate(request):
            return _unauthorized()
        return view(request, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _authenticate(request: HttpRequest) -> bool:
    token = bearer_token(request.headers.get("Authorization"))
    email = verify_token(token) if token else None
    if email is None:
        return False
    request.email = email
    sqreen_mw.identify({"email": email})  # the request's later events carry this user
    return True


def _unauthorized() -> HttpResponse:
    return JsonResponse({"error": "authentication required"}, status=401, headers={"WWW-Authenticate": "Bearer"})
