"""Views of the Django example: logins, signups, password resets and orders recorded as events by sqreen_mw.

Sync and async views alike: sqreen_mw's middleware binds the request context in both modes, under WSGI and ASGI.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import sqreen_mw

from .auth import token_required
from .store import Store, issue_token, normalize_email, order_error

store = Store()


def error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@csrf_exempt  # token-authenticated API: no cookies, so no CSRF
@require_POST
def login(request: HttpRequest) -> JsonResponse:
    email, password = normalize_email(request.POST.get("email", "")), request.POST.get("password", "")
    if not email or not password:
        return error("email and password are required", 422)
    if not store.check_password(email, password):
        sqreen_mw.auth_track(False, email=email)
        return error("invalid credentials", 401)
    sqreen_mw.auth_track(True, email=email)  # also identifies the user for the rest of this request
    return JsonResponse({"token": issue_token(email)})


@csrf_exempt
@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    email, password = normalize_email(request.POST.get("email", "")), request.POST.get("password", "")
    if "@" not in email or len(password) < 8:
        return error("an email and a password of at least 8 characters are required", 422)
    if not store.add_user(email, password):
        return error("email already registered", 409)
    sqreen_mw.signup_track(email=email)
    return JsonResponse({"token": issue_token(email)}, status=201)


@csrf_exempt
@require_POST
async def password_reset(request: HttpRequest) -> JsonResponse:
    if "@" not in request.POST.get("email", ""):
        return error("email is required", 422)
    # A real app would email a reset link if the account exists; the answer is the same either way.
    sqreen_mw.track("password.reset", properties={"method": "email"})
    return JsonResponse({"status": "accepted"}, status=202)


@csrf_exempt
@require_POST
@token_required
def place_order(request: HttpRequest) -> JsonResponse:
    try:
        data: Any = json.loads(request.body)  # the app reads its body as usual before tracking
    except ValueError:
        data = None
    problem = order_error(data)
    if problem is not None:
        return error(problem, 422)
    order = store.add_order(request.email, data["item"], data["quantity"])
    # collect_body attaches the JSON body; the card number in it is scrubbed before the event leaves the process.
    sqreen_mw.track("order.placed", properties={"item": order.item, "quantity": order.quantity}, collect_body=True)
    return JsonResponse(order.to_json(), status=201)


@require_GET
@token_required
async def view_order(request: HttpRequest, order_id: int) -> JsonResponse:
    # Tracked before the lookup: someone walking through other people's order ids is what a playbook should catch.
    sqreen_mw.track("order.viewed", properties={"order_id": order_id})
    order = store.get_order(request.email, order_id)
    if order is None:
        return error("order not found", 404)
    return JsonResponse(order.to_json())


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
