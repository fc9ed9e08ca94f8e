"""Views that track events the way an app would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

import sqreen_mw


@csrf_exempt
def login(request: HttpRequest) -> JsonResponse:
    email = request.POST["email"]
    sqreen_mw.auth_track(True, email=email)
    sqreen_mw.track("after.login")
    return JsonResponse({"ok": True})


def item(request: HttpRequest, item_id: int) -> JsonResponse:
    sqreen_mw.identify({"id": 7})
    sqreen_mw.track("item.viewed", properties={"item": item_id}, request=request)
    return JsonResponse({"item": item_id})


@csrf_exempt
async def order(request: HttpRequest) -> JsonResponse:
    payload = json.loads(request.body)
    sqreen_mw.identify({"id": 8})
    sqreen_mw.track("order.placed", properties={"total": payload["total"]}, collect_body=True)
    return JsonResponse(payload)


@csrf_exempt
def unread(request: HttpRequest) -> HttpResponse:
    sqreen_mw.track("unread", collect_body=True)  # before the view reads its body: Django caches it
    return HttpResponse(request.body)


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        yield b"a"
        sqreen_mw.track("stream.chunk")
        yield b"b"

    return StreamingHttpResponse(chunks())


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"a"
        sqreen_mw.track("astream.chunk")
        yield b"b"

    return StreamingHttpResponse(chunks())
