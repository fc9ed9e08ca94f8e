"""The per-request context the middleware binds, and the default properties read from it.

The middleware only creates a small :class:`RequestContext` and binds it to a ``ContextVar``; the default properties
(client IP, user agent, path, verb, parameters) are read from the framework's request the first time an event of that
request needs them, then cached for the other events of the same request. A request that tracks nothing pays for one
object and one ``ContextVar.set``/``reset``.

``params.path`` (the route's path parameters) holds text under every framework: FastAPI's ``"1"`` and Flask's or
Django's ``1`` (an ``int`` converter) are both sent as ``"1"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qsl

from ._body import DEFAULT_MAX_BODY_BYTES, BodyTee, flat_pairs, jsonable, parse_body
from ._exceptions import InvalidEvent
from ._ip import ClientIPResolver
from ._schema import RequestInfo, UserIdentifiers

ASGI = 0
WSGI = 1
DJANGO = 2


class RequestContext:
    """What sqreen_mw knows about the request being served: the raw request, the identified user, the block flag."""

    __slots__ = ("_info", "blocked", "body_tee", "kind", "raw", "traits", "user")

    def __init__(self, kind: int, raw: Any, body_tee: BodyTee | None = None) -> None:
        self.kind = kind
        self.raw = raw
        self.body_tee = body_tee
        self.user: UserIdentifiers | None = None
        self.traits: dict[str, Any] | None = None
        self.blocked: Any = None  # the block (sqreen_mw._blocking.Block) that refused this request, if any
        self._info: RequestInfo | None = None

    def client_ip(self, resolver: ClientIPResolver) -> str | None:
        """The client IP alone, as :meth:`info` would give it (the block check needs nothing else)."""
        if self._info is not None:
            return self._info["client_ip"]
        raw = self.raw
        if self.kind == ASGI:
            client = raw.get("client")
            return resolver.resolve(client[0] if client else None, _asgi_headers(raw, resolver.ip_header))
        meta = raw if self.kind == WSGI else raw.META
        return resolver.resolve(meta.get("REMOTE_ADDR"), _EnvironHeaders(meta))

    def info(self, resolver: ClientIPResolver) -> RequestInfo:
        """The request's default properties (unscrubbed: scrubbing happens before the event leaves the process)."""
        info = self._info
        if info is None:
            if self.kind == ASGI:
                info = _asgi_info(self.raw, resolver, self.body_tee)
            elif self.kind == WSGI:
                info = _wsgi_info(self.raw, resolver, self.body_tee)
            else:
                info = _django_info(self.raw, resolver)
            self._info = info
        return info

    def body(self, max_bytes: int) -> Any:
        """The request body, at most ``max_bytes`` of it, parsed as JSON or form data when its content type says so."""
        if self.kind == DJANGO:
            return _django_body(self.raw, max_bytes)
        tee = self.body_tee
        if tee is None:
            return None
        ctype = (
            _asgi_headers(self.raw).get("content-type", "")
            if self.kind == ASGI
            else self.raw.get("CONTENT_TYPE", "")
        )
        return tee.parsed(ctype, max_bytes)


current_context: ContextVar[RequestContext | None] = ContextVar("sqreen_mw.request", default=None)


def context_for(request: object) -> RequestContext:
    """The context for a ``request=`` argument: the bound one when it is the same request, else a fresh one."""
    bound = current_context.get()
    if isinstance(request, RequestContext):
        return request
    try:
        kind, raw = _classify(request)
    except InvalidEvent:
        raise
    except Exception as exc:  # e.g. Flask's request proxy used outside a request
        raise InvalidEvent(f"request could not be read ({type(exc).__name__}: {exc})") from exc
    if bound is not None and bound.raw is raw:
        return bound
    return RequestContext(kind, raw)


def _classify(request: object) -> tuple[int, Any]:
    kind: int
    raw: Any
    if hasattr(request, "META") and type(request).__module__.startswith("django"):
        kind, raw = DJANGO, request
    elif isinstance(request, dict) and request.get("type") in ("http", "websocket"):
        kind, raw = ASGI, request
    elif isinstance(request, dict) and "REQUEST_METHOD" in request:
        kind, raw = WSGI, request
    elif isinstance(getattr(request, "scope", None), dict):
        kind, raw = ASGI, request.scope  # type: ignore[attr-defined]
    elif isinstance(getattr(request, "environ", None), dict):
        kind, raw = WSGI, request.environ  # type: ignore[attr-defined]
    else:
        raise InvalidEvent(
            "request must be a Starlette/FastAPI Request, a Flask/Werkzeug request, a Django HttpRequest, "
            f"an ASGI scope or a WSGI environ, got {type(request).__name__}"
        )
    return kind, raw


_WANTED = frozenset({b"user-agent", b"content-type", b"x-forwarded-for", b"forwarded", b"x-real-ip"})


def _asgi_headers(scope: Mapping[str, Any], extra: str | None = None) -> dict[str, str]:
    # Only the headers the default properties use are decoded (plus the configured ip_header). ASGI header names
    # are lower-case bytes by the spec, so no case folding here.
    wanted = _WANTED if extra is None else _WANTED | {extra.encode("latin-1")}
    headers: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        if name in wanted:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text  # repeated: joined in order
    return headers


def parse_query(query: str) -> dict[str, Any]:
    """A query string to a dict (repeated keys give lists), like ``parse_qsl(keep_blank_values=True)``."""
    if "%" in query or "+" in query:
        return flat_pairs(parse_qsl(query, keep_blank_values=True))
    out: dict[str, Any] = {}
    for part in query.split("&"):  # the common case, several times faster than parse_qsl
        if part:
            key, _, value = part.partition("=")
            if key in out:
                prev = out[key]
                out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
            else:
                out[key] = value
    return out


def _params(query: str, path: Any, form: Any = None, json_body: Any = None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if query:
        params["query"] = parse_query(query)
    if path:
        # Always text, whatever the framework's converter made of the URL segment (FastAPI "1", Flask and Django 1):
        # the same route gives the same params under every framework, and filters compare like with like.
        params["path"] = {str(k): v if type(v) is str else _text(v) for k, v in path.items()}
    if form:
        params["form"] = form
    if json_body is not None:
        params["json"] = json_body
    return params


def _text(value: object) -> str:
    try:
        return str(value)
    except Exception as exc:  # an app-defined converter's object whose __str__ raises
        return f"<{type(value).__name__} object whose str() raised {type(exc).__name__}>"


def _body_params(ctype: str, tee: BodyTee | None) -> tuple[Any, Any]:
    # Form/JSON fields of a body the application already read (seen through the tee).
    if tee is None or not tee.read_any or not tee.ended or tee.overflow:  # nothing read, or not all of it
        return None, None
    parsed = tee.parsed(ctype, tee.limit)
    if ctype.startswith("application/x-www-form-urlencoded") and isinstance(parsed, dict):
        return parsed, None
    if "json" in ctype and not isinstance(parsed, str):
        return None, parsed
    return None, None


def _asgi_info(scope: Mapping[str, Any], resolver: ClientIPResolver, tee: BodyTee | None) -> RequestInfo:
    headers = _asgi_headers(scope, resolver.ip_header)
    client = scope.get("client")
    form, json_body = _body_params(headers.get("content-type", ""), tee)
    return {
        "client_ip": resolver.resolve(client[0] if client else None, headers),
        "user_agent": headers.get("user-agent"),
        "path": scope.get("path", ""),
        "verb": scope.get("method", "GET" if scope.get("type") == "http" else "WEBSOCKET"),
        "params": _params(
            scope.get("query_string", b"").decode("latin-1"), scope.get("path_params"), form, json_body
        ),
    }


class _EnvironHeaders(Mapping[str, str]):
    """Lower-case header names looked up in a WSGI environ (or Django's ``META``) without copying it."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        key = name.upper().replace("-", "_")
        value = self._environ.get(key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key)
        if value is None:
            raise KeyError(name)
        return str(value)

    def __iter__(self) -> Iterator[str]:
        for key in self._environ:
            if key.startswith("HTTP_"):
                yield key[5:].lower().replace("_", "-")

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _wsgi_path(environ: Mapping[str, Any]) -> str:
    raw = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    # PEP 3333 strings are bytes decoded as latin-1; undo that to show the UTF-8 path.
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


def _wsgi_info(environ: Mapping[str, Any], resolver: ClientIPResolver, tee: BodyTee | None) -> RequestInfo:
    headers = _EnvironHeaders(environ)
    path_params = form = json_body = None
    wz = environ.get("werkzeug.request")
    if wz is not None:  # a Flask/Werkzeug request: reuse what the app already parsed
        path_params = getattr(wz, "view_args", None)
        if "form" in wz.__dict__:
            form = flat_pairs(wz.form.items(multi=True))
        cached = getattr(wz, "_cached_json", (Ellipsis, Ellipsis))
        json_body = None if cached[0] is Ellipsis else jsonable(cached[0])  # a copy: the app may change its own
    if form is None and json_body is None:
        form, json_body = _body_params(environ.get("CONTENT_TYPE", ""), tee)
    return {
        "client_ip": resolver.resolve(environ.get("REMOTE_ADDR"), headers),
        "user_agent": environ.get("HTTP_USER_AGENT"),
        "path": _wsgi_path(environ),
        "verb": environ.get("REQUEST_METHOD", "GET"),
        "params": _params(environ.get("QUERY_STRING", ""), path_params, form, json_body),
    }


def _django_info(request: Any, resolver: ClientIPResolver) -> RequestInfo:
    meta = request.META
    match = getattr(request, "resolver_match", None)
    form = flat_pairs(request.POST.items()) if hasattr(request, "_post") and request.POST else None
    json_body = None
    raw_body = getattr(request, "_body", None)  # set once the view read request.body
    if raw_body and "json" in meta.get("CONTENT_TYPE", "") and len(raw_body) <= DEFAULT_MAX_BODY_BYTES:
        parsed = parse_body(meta["CONTENT_TYPE"], raw_body, True)
        json_body = None if isinstance(parsed, str) else parsed
    return {
        "client_ip": resolver.resolve(meta.get("REMOTE_ADDR"), _EnvironHeaders(meta)),
        "user_agent": meta.get("HTTP_USER_AGENT"),
        "path": request.path,
        "verb": request.method or "GET",
        "params": _params(meta.get("QUERY_STRING", ""), match.kwargs if match is not None else None, form, json_body),
    }


def _django_body(request: Any, max_bytes: int) -> Any:
    ctype = request.META.get("CONTENT_TYPE", "")
    body = getattr(request, "_body", None)
    if body is None and hasattr(request, "_post") and not ctype.startswith("application/json"):
        return flat_pairs(request.POST.items()) or None
    if body is None and not getattr(request, "_read_started", False):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if 0 < length <= max_bytes:
            body = request.body  # Django caches it: the view can still read it
    if body is None:
        return None
    return parse_body(ctype, body[:max_bytes], len(body) <= max_bytes)
