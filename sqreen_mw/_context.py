"""The per-request context the middleware binds, and the default properties read from it.

The middleware only creates a small :class:`RequestContext` and binds it to a ``ContextVar``. The first event of a
request takes a :data:`Capture` of it: references to the raw parts the default properties (client IP, user agent,
path, verb, parameters) are made of, which do not change for the request (the values of the ASGI headers those
properties read and the query bytes, the environ's strings, a body the application read in full). The other events
of the request share it. The flusher thread turns a capture into the default properties (:func:`request_info`: query
parsing, header decoding, client-IP resolution, then scrubbing), once per batch, so ``track()`` itself does none of
that work. A request that tracks nothing pays for one object and one ``ContextVar.set``/``reset``.

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


#: What an event keeps of its request: the kind (:data:`ASGI`, :data:`WSGI`, :data:`DJANGO`) first, then that kind's raw
#: parts (see :meth:`RequestContext.capture`). :func:`request_info` makes the default properties of it.
Capture = tuple[Any, ...]


#: The ASGI header names the default properties read (with the configured ``ip_header``: :func:`asgi_wanted`).
_WANTED = frozenset({b"user-agent", b"content-type", b"x-forwarded-for", b"forwarded", b"x-real-ip"})


class RequestContext:
    """What sqreen_mw knows about the request being served: the raw request, the identified user, the block flag.

    Once an ASGI request is served, the middleware sets ``raw`` and ``body_tee`` to ``None``: a server may keep
    copies of the request's ``contextvars`` context (uvicorn's keep-alive timer, for 5 s), and through them this
    object, which then holds a few dozen bytes instead of the scope (a FastAPI scope holds its exit stacks). An event
    tracked later from such a copy (a task the request started) gets the capture taken while the request was served,
    else no request properties.
    """

    __slots__ = ("_capture", "blocked", "body_tee", "kind", "raw", "traits", "user")

    kind: int
    raw: Any
    body_tee: BodyTee | None
    user: UserIdentifiers | None
    traits: dict[str, Any] | None
    blocked: Any  # the block (sqreen_mw._blocking.Block) that refused this request, if any
    _capture: Capture | None

    def __init__(self, kind: int, raw: Any, body_tee: BodyTee | None = None) -> None:
        self.kind = kind
        self.raw = raw
        self.body_tee = body_tee
        self.user = self.traits = self.blocked = self._capture = None

    def client_ip(self, resolver: ClientIPResolver) -> str | None:
        """The client IP alone, as :meth:`info` would give it (the block check needs nothing else)."""
        raw = self.raw
        if raw is None:  # released: served
            return None
        if self.kind == ASGI:
            client = raw.get("client")
            return resolver.resolve(client[0] if client else None, _asgi_headers(raw.get("headers"),
                                                                                resolver.ip_header))
        meta = raw if self.kind == WSGI else raw.META
        return resolver.resolve(meta.get("REMOTE_ADDR"), _EnvironHeaders(meta))

    def capture(self, ip_key: str | None = None, wanted: frozenset[bytes] = _WANTED) -> Capture | None:
        """The request's raw parts for its events, taken once (the first event's view of the request).

        Only references and small copies: the header values, strings and bytes of the request do not change; what
        the application may change later (path parameters, a parsed JSON body, a form) is copied. Of the headers,
        only those the default properties read are kept, as one flat tuple of names and values (an event waits in the
        queue until its batch is sent: a browser's cookies would wait with it, and so would a tuple per header).

        :param ip_key: the environ key of the configured ``ip_header`` (:func:`environ_key`), WSGI and Django only.
        :param wanted: the ASGI header names kept (:func:`asgi_wanted` of the configured ``ip_header``).
        :returns: ``None`` once the request has been served (``raw`` is then ``None``) without having been captured.
        """
        captured = self._capture
        if captured is None:
            raw = self.raw
            if raw is None:
                return None
            if self.kind == ASGI:
                try:  # the keys a server sets (subscripts are cheaper than get() calls)
                    client, headers, path, method, kind, query = (
                        raw["client"], raw["headers"], raw["path"], raw["method"], raw["type"], raw["query_string"])
                except KeyError:  # a scope made by hand (tests, request=...), a WebSocket: the ASGI defaults
                    client, headers, path, method, kind, query = (
                        raw.get("client"), raw.get("headers"), raw.get("path", ""), raw.get("method"),
                        raw.get("type"), raw.get("query_string", b""))
                path_params = raw.get("path_params")
                tee = self.body_tee
                captured = (
                    ASGI, client, _wanted_headers(headers, wanted), path, method, kind,
                    query, dict(path_params) if path_params else None,
                    # _complete_body(tee), inline: the tee of a body the application read in full, else None
                    tee if tee is not None and tee.ended and tee.read_any and not tee.overflow else None,
                )
            elif self.kind == WSGI:
                captured = _wsgi_capture(raw, self.body_tee, ip_key)
            else:
                captured = _django_capture(raw, ip_key)
            self._capture = captured
        return captured

    def info(self, resolver: ClientIPResolver) -> RequestInfo | None:
        """The request's default properties (unscrubbed: scrubbing happens before the event leaves the process)."""
        captured = self.capture(environ_key(resolver.ip_header), asgi_wanted(resolver.ip_header))
        return None if captured is None else request_info(captured, resolver)

    def body(self, max_bytes: int) -> Any:
        """The request body, at most ``max_bytes`` of it, parsed as JSON or form data when its content type says so."""
        if self.kind == DJANGO:
            return _django_body(self.raw, max_bytes)
        tee = self.body_tee
        if tee is None:
            return None
        ctype = (
            _asgi_headers(self.raw.get("headers")).get("content-type", "")
            if self.kind == ASGI
            else self.raw.get("CONTENT_TYPE", "")
        )
        return tee.parsed(ctype, max_bytes)


#: ``object.__new__``: the middlewares make their request's context with it and set every slot themselves, as
#: ``RequestContext.__init__`` does (its Python call costs about as much again as the assignments: ~500 instructions
#: of ~2,100 per request).
_new = object.__new__

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


def asgi_wanted(ip_header: str | None) -> frozenset[bytes]:
    """The ASGI header names the default properties read: :data:`_WANTED` and the configured ``ip_header``."""
    if ip_header is None:
        return _WANTED
    try:
        return _WANTED | {ip_header.encode("latin-1")}
    except UnicodeEncodeError:  # no ASGI header has that name: only the usual ones are read
        return _WANTED


def capture_size(captured: Capture | None) -> int:
    """The text a capture keeps of its request (path, query, the kept headers; a WSGI environ's entries), in
    characters and bytes: the request's first event adds it to the queue's estimate, which bounds the queue's memory.
    Only exact ``str`` and ``bytes`` are counted (a recorded body is bounded by ``max_body_bytes``)."""
    if type(captured) is not tuple or len(captured) < 8 or type(captured[0]) is not int:
        return 0
    if captured[0] == ASGI and len(captured) == 9:
        size = _text_size(captured[3]) + _text_size(captured[6])
        kept = captured[2]
        if type(kept) is tuple:  # names and values, flat
            for item in kept:
                size += _text_size(item)
        elif type(kept) is list:  # headers that were not all pairs, every one kept as it was
            for pair in kept:
                if type(pair) is tuple and len(pair) == 2:
                    size += _text_size(pair[0]) + _text_size(pair[1])
        return size
    if len(captured) != 8:
        return 0
    parts = captured[1]
    return _text_size(captured[2]) + (sum(_text_size(v) for v in parts.values()) if type(parts) is dict else 0)


def _text_size(value: object) -> int:
    return len(value) if type(value) is str or type(value) is bytes else 0


def _wanted_headers(headers: Any, wanted: frozenset[bytes]) -> tuple[Any, ...] | list[Any]:
    # The scope's headers whose name is wanted, in order, as one flat tuple: (name, value, name, value, ...). Bytes do
    # not change, so these are the scope's own; a tuple per header (and, in C, the request's copy of each name) would
    # wait in the queue with the event. Headers that are not pairs are kept as they were, in a list: request_info()
    # then says what it cannot read, as it always did.
    pairs = headers if type(headers) is tuple else tuple(headers or ())
    flat: list[Any] = []
    try:
        for pair in pairs:
            if pair[0] in wanted:
                name, value = pair
                flat += (name, value)
    except Exception:
        return list(pairs)
    return tuple(flat)


def _asgi_headers(pairs: Any, extra: str | None = None) -> dict[str, str]:
    # Only the headers the default properties use are decoded (plus the configured ip_header). ASGI header names
    # are lower-case bytes by the spec, so no case folding here.
    wanted = _WANTED if extra is None else _WANTED | {extra.encode("latin-1")}
    headers: dict[str, str] = {}
    for name, value in pairs or ():
        if name in wanted:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text  # repeated: joined in order
    return headers


def _captured_headers(kept: Any, extra: str | None = None) -> dict[str, str]:
    """:func:`_asgi_headers` of a capture's headers: the flat tuple of :func:`_wanted_headers` (or, for headers that
    were not pairs, the list of them, read as pairs: which says what it cannot read)."""
    return _asgi_headers(zip(kept[::2], kept[1::2], strict=False) if type(kept) is tuple else kept, extra)


def parse_query(query: str) -> dict[str, Any]:
    """A query string to a dict (repeated keys give lists), like ``parse_qsl(keep_blank_values=True)``."""
    if "%" in query:
        return flat_pairs(parse_qsl(query, keep_blank_values=True))
    if "+" in query:  # parse_qsl's first step: "+" is a space (nothing else to unquote without "%")
        query = query.replace("+", " ")
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


def _complete_body(tee: BodyTee | None) -> BodyTee | None:
    # The tee of a body the application has read in full (its recorded bytes no longer change), else None.
    if tee is None or not tee.read_any or not tee.ended or tee.overflow:  # nothing read, or not all of it
        return None
    return tee


def _body_params(ctype: str, tee: BodyTee | None) -> tuple[Any, Any]:
    # Form/JSON fields of a body the application read in full before the request's first event (seen by the tee).
    if tee is None:
        return None, None
    parsed = tee.parsed(ctype, tee.limit)
    if ctype.startswith("application/x-www-form-urlencoded") and isinstance(parsed, dict):
        return parsed, None
    if "json" in ctype and not isinstance(parsed, str):
        return None, parsed
    return None, None


def request_info(captured: Capture, resolver: ClientIPResolver) -> RequestInfo:
    """The default properties of a request from its :meth:`RequestContext.capture` (unscrubbed)."""
    kind = captured[0]
    if kind == ASGI:
        _, client, pairs, path, method, scope_type, query, path_params, tee = captured
        headers = _captured_headers(pairs, resolver.ip_header)
        form, json_body = _body_params(headers.get("content-type", ""), tee)
        return {
            "client_ip": resolver.resolve_cached(client[0] if client else None, headers),
            "user_agent": headers.get("user-agent"),
            "path": path,
            "verb": method if method is not None else ("GET" if scope_type == "http" else "WEBSOCKET"),
            "params": _params(query.decode("latin-1"), path_params, form, json_body),
        }
    _, meta, path, verb, path_params, form, json_body, tee = captured
    if tee is not None:  # a WSGI body read through the tee (not by Werkzeug)
        form, json_body = _body_params(meta.get("CONTENT_TYPE", ""), tee)
    return {
        "client_ip": resolver.resolve_cached(meta.get("REMOTE_ADDR"), _EnvironHeaders(meta)),
        "user_agent": meta.get("HTTP_USER_AGENT"),
        "path": path,
        "verb": verb,
        "params": _params(meta.get("QUERY_STRING", ""), path_params, form, json_body),
    }


#: A capture whose path and query are longer than this is not given a :func:`request_key` (the cache stays small).
MAX_KEYED_TEXT = 1024


def request_key(captured: Capture, ip_header: str | None) -> tuple[Any, ...] | None:
    """A key that equal requests share: two captures with the same key give the same :func:`request_info`.

    Made of text only (what the default properties are made of: the peer, the headers they use, path, verb, query,
    path parameters as text), so equal keys mean equal inputs. ``None`` for a capture with a body or form fields
    (they are not keyed), or with a long path and query.
    """
    kind = captured[0]
    if kind == ASGI:
        _, client, pairs, path, method, scope_type, query, path_params, tee = captured
        if tee is not None or len(path) + len(query) > MAX_KEYED_TEXT:
            return None
        return (kind, client[0] if client else None, tuple(_captured_headers(pairs, ip_header).items()), path, method,
                scope_type, query, _path_key(path_params))
    _, meta, path, verb, path_params, form, json_body, tee = captured
    if form is not None or json_body is not None or tee is not None:
        return None
    if len(path) + len(meta.get("QUERY_STRING", "")) > MAX_KEYED_TEXT:
        return None
    return (kind, tuple(meta.items()), path, verb, _path_key(path_params))


def _path_key(path: Any) -> tuple[tuple[str, str], ...] | None:
    # As _params sends them: text (1 and "1" give the same properties, and True == 1 must not collide)
    if not path:
        return None
    return tuple((str(k), v if type(v) is str else _text(v)) for k, v in path.items())


#: The environ (or Django ``META``) entries the default properties are made of.
_ENVIRON_KEYS = (
    "REMOTE_ADDR", "HTTP_USER_AGENT", "QUERY_STRING", "CONTENT_TYPE", "HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED",
    "HTTP_X_REAL_IP",
)


def _environ_parts(environ: Mapping[str, Any], ip_key: str | None) -> dict[str, Any]:
    # The entries as they are now: the application (or a middleware inside this one, such as ProxyFix) may change
    # the environ later; the first event's view of it is what the request's events carry.
    parts = {}
    for key in _ENVIRON_KEYS:  # a loop, not a comprehension: no function call of its own (Python 3.11)
        if key in environ:
            parts[key] = environ[key]
    if ip_key is not None and ip_key in environ:
        parts[ip_key] = environ[ip_key]
    return parts


def environ_key(header: str | None) -> str | None:
    """The WSGI environ key of a header name (``cf-connecting-ip`` -> ``HTTP_CF_CONNECTING_IP``)."""
    return None if header is None else "HTTP_" + header.upper().replace("-", "_")


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
    if raw.isascii():  # the common case: the same text in latin-1 and UTF-8
        return raw
    # PEP 3333 strings are bytes decoded as latin-1; undo that to show the UTF-8 path.
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


def _wsgi_capture(environ: Mapping[str, Any], tee: BodyTee | None, ip_key: str | None) -> Capture:
    path_params = form = json_body = None
    wz = environ.get("werkzeug.request")
    if wz is not None:  # a Flask/Werkzeug request: reuse what the app already parsed
        view_args = getattr(wz, "view_args", None)
        path_params = dict(view_args) if view_args else None
        if "form" in wz.__dict__:
            form = flat_pairs(wz.form.items(multi=True))
        cached = getattr(wz, "_cached_json", (Ellipsis, Ellipsis))
        json_body = None if cached[0] is Ellipsis else jsonable(cached[0])  # a copy: the app may change its own
    body = _complete_body(tee) if form is None and json_body is None else None
    return (WSGI, _environ_parts(environ, ip_key), _wsgi_path(environ), environ.get("REQUEST_METHOD", "GET"),
            path_params, form, json_body, body)


def _django_capture(request: Any, ip_key: str | None) -> Capture:
    meta = request.META
    match = getattr(request, "resolver_match", None)
    form = flat_pairs(request.POST.items()) if hasattr(request, "_post") and request.POST else None
    json_body = None
    raw_body = getattr(request, "_body", None)  # set once the view read request.body
    if raw_body and "json" in meta.get("CONTENT_TYPE", "") and len(raw_body) <= DEFAULT_MAX_BODY_BYTES:
        parsed = parse_body(meta["CONTENT_TYPE"], raw_body, True)
        json_body = None if isinstance(parsed, str) else parsed
    path_params = dict(match.kwargs) if match is not None and match.kwargs else None
    return (DJANGO, _environ_parts(meta, ip_key), request.path, request.method or "GET", path_params, form, json_body,
            None)


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
