"""The WSGI middleware in-process: Flask (through Werkzeug's test client) and a bare WSGI app."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import sqreen_mw
from sqreen_mw._context import current_context
from sqreen_mw._native import speedups
from sqreen_mw.testing import capture_events
from sqreen_mw.wsgi import SqreenMiddleware

from .support import all_slots

flask = pytest.importorskip("flask")

MakeClient = Callable[..., sqreen_mw.Client]


@pytest.fixture(params=["unstarted", "started"])
def make_client(request: pytest.FixtureRequest, make_client: MakeClient) -> MakeClient:
    """Every test twice: with a client not started yet (the middleware's first request of a process, the Python
    method), and with a started one, whose requests the compiled middleware serves when sqreen_mw was built with it
    (no flusher runs: the client is only marked started)."""
    if request.param == "unstarted":
        return make_client

    def make(*args: Any, **kwargs: Any) -> sqreen_mw.Client:
        client = make_client(*args, **kwargs)
        client._started_pid = os.getpid()
        return client

    return make


def make_flask_app() -> Any:
    from sqreen_mw.flask import instrument

    app = flask.Flask(__name__)

    @app.post("/login")
    def login() -> Any:
        email = flask.request.form["email"]
        sqreen_mw.auth_track(True, email=email)
        sqreen_mw.track("password.reset", properties={"method": "email"})
        return {"ok": True}

    @app.get("/orders/<int:order_id>")
    def get_order(order_id: int) -> Any:
        sqreen_mw.identify({"id": 5})
        sqreen_mw.track("order.viewed", request=flask.request)
        return {"id": order_id}

    @app.post("/api")
    def api() -> Any:
        data = flask.request.get_json()
        sqreen_mw.track("api.call", collect_body=True)
        return {"echo": data}

    @app.post("/raw")
    def raw() -> Any:
        sqreen_mw.track("raw", collect_body=True)  # before the view reads its body
        return flask.request.get_data()

    @app.get("/stream")
    def stream() -> Any:
        @flask.stream_with_context
        def gen() -> Iterator[str]:
            yield "a"
            sqreen_mw.track("stream.chunk")
            yield "b"

        return app.response_class(gen())

    return instrument(app)


def test_flask_default_properties_view_args_and_form(make_client: MakeClient) -> None:
    make_client()
    http = make_flask_app().test_client()
    with capture_events() as events:
        # A WSGI server closes each response (PEP 3333); Werkzeug's test client leaves that to the caller.
        http.post("/login?x=1", data={"email": "bob@example.com", "passwd": "s3cret"},
                  headers={"User-Agent": "ua/2", "X-Forwarded-For": "9.9.9.9"},
                  environ_base={"REMOTE_ADDR": "127.0.0.1"}).close()
        http.get("/orders/17", environ_base={"REMOTE_ADDR": "198.51.100.20"}).close()
    auth, reset, viewed = events
    assert auth["name"] == "sq.auth_track" and auth["properties"] == {"success": True}
    assert reset["user_identifiers"] == {"email": "bob@example.com"}
    assert reset["request"] == {
        "client_ip": "9.9.9.9",  # the peer 127.0.0.1 is a trusted proxy (loopback, the default)
        "user_agent": "ua/2",
        "path": "/login",
        "verb": "POST",
        "params": {"query": {"x": "1"}, "form": {"email": "bob@example.com", "passwd": "[REDACTED]"}},
    }
    assert viewed["request"] is not None
    assert viewed["request"]["client_ip"] == "198.51.100.20"
    assert viewed["request"]["params"] == {"path": {"order_id": "17"}}
    assert viewed["user_identifiers"] == {"id": 5}
    assert current_context.get() is None


def test_flask_json_body_is_collected_and_the_view_still_reads_it(make_client: MakeClient) -> None:
    make_client()
    http = make_flask_app().test_client()
    with capture_events() as events:
        with http.post("/api", json={"q": "x", "secret": "s"}) as response:
            pass
    assert response.get_json() == {"echo": {"q": "x", "secret": "s"}}
    assert events[0]["body"] == {"q": "x", "secret": "[REDACTED]"}
    assert events[0]["request"] is not None and events[0]["request"]["params"]["json"] == events[0]["body"]


def test_body_collected_before_the_view_reads_it_is_replayed(make_client: MakeClient) -> None:
    make_client()
    http = make_flask_app().test_client()
    with capture_events() as events:
        with http.post("/raw", data=b"plain body", content_type="text/plain") as response:
            pass
    assert response.data == b"plain body"
    assert events[0]["body"] == "plain body"


def test_streamed_flask_response_keeps_the_context(make_client: MakeClient) -> None:
    make_client()
    http = make_flask_app().test_client()
    with capture_events() as events:
        with http.get("/stream") as response:
            assert response.data == b"ab"
    assert current_context.get() is None
    assert events[0]["request"] is not None and events[0]["request"]["path"] == "/stream"


def test_bare_wsgi_generator_and_close_see_the_request(make_client: MakeClient) -> None:
    make_client()
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            sqreen_mw.track("iterating")
            yield b"x"

        def close(self) -> None:
            sqreen_mw.track("closing")
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    wrapped = SqreenMiddleware(app)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/caf\xc3\xa9", "QUERY_STRING": "a=1&a=2", "REMOTE_ADDR": "::1",
               "wsgi.input": io.BytesIO()}
    with capture_events() as events:
        result = wrapped(environ, lambda *a: None)
        assert list(result) == [b"x"]
        result.close()  # type: ignore[attr-defined]
    assert closed == [True]
    assert [e["name"] for e in events] == ["iterating", "closing"]
    assert events[0]["request"] is not None
    assert events[0]["request"]["path"] == "/café"
    assert events[0]["request"]["params"] == {"query": {"a": ["1", "2"]}}
    assert events[0]["request"]["client_ip"] == "::1"
    assert current_context.get() is None


def test_list_response_is_returned_as_is_and_unbound() -> None:
    body = [b"done"]

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        sqreen_mw.track("in.call")
        return body

    with capture_events() as events:
        assert SqreenMiddleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/l"}, lambda *a: None) is body
    assert current_context.get() is None
    assert events[0]["request"] is not None and events[0]["request"]["path"] == "/l"


def test_app_exception_unbinds_the_request() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        SqreenMiddleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, lambda *a: None)
    assert current_context.get() is None


def test_environ_as_request_argument(make_client: MakeClient) -> None:
    make_client()
    environ = {"REQUEST_METHOD": "PUT", "PATH_INFO": "/p", "REMOTE_ADDR": "192.0.2.1", "HTTP_USER_AGENT": "x"}
    with capture_events() as events:
        sqreen_mw.track("e", request=environ)
    assert events[0]["request"] == {"client_ip": "192.0.2.1", "user_agent": "x", "path": "/p", "verb": "PUT",
                                    "params": {}}


def test_close_twice_is_harmless_and_unbinds(make_client: MakeClient) -> None:
    make_client()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return iter([b"x"])

    result = SqreenMiddleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda *a: None)
    assert current_context.get() is None  # unbound once the app returned; bound again around iteration and close
    assert list(result) == [b"x"]
    result.close()  # type: ignore[attr-defined]
    result.close()  # type: ignore[attr-defined]
    assert current_context.get() is None


def test_a_response_never_closed_leaves_no_request_bound(make_client: MakeClient) -> None:
    make_client()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return iter([b"x"])  # not a list: the middleware wraps it

    with capture_events() as events:
        result = SqreenMiddleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/old"}, lambda *a: None)
        assert list(result) == [b"x"]  # iterated, never closed (Werkzeug's test client without `with`)
        sqreen_mw.identify({"id": "later"})
        sqreen_mw.track("outside")
    assert events[0]["request"] is None and events[0]["user_identifiers"] is None


def test_flask_307_resend_and_request_form_after_body_read_ahead(make_client: MakeClient) -> None:
    make_client()
    app = flask.Flask(__name__)

    @app.post("/old")
    def old() -> Any:
        sqreen_mw.track("moved", collect_body=True)  # reads the body ahead: the view never reads it
        return flask.redirect("/new", code=307)

    @app.post("/new")
    def new() -> Any:
        return {"form": flask.request.form.to_dict()}

    from sqreen_mw.flask import instrument

    with capture_events() as events:
        response = instrument(app).test_client().post("/old", data={"a": "1"}, follow_redirects=True)
    assert response.status_code == 200
    assert response.json == {"form": {"a": "1"}}  # the test client re-sent the whole body on the 307
    assert events[0]["body"] == {"a": "1"}


def test_read_ahead_moves_a_seekable_server_stream_back(make_client: MakeClient) -> None:
    make_client()
    seen: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        sqreen_mw.track("early", collect_body=True)
        seen.append(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return [b""]

    original = io.BytesIO(b"a=1&b=2")
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_LENGTH": "7",
               "CONTENT_TYPE": "application/x-www-form-urlencoded", "wsgi.input": original}
    with capture_events() as events:
        SqreenMiddleware(app)(environ, lambda *a: None)
    assert seen == [b"a=1&b=2"]
    assert events[0]["body"] == {"a": "1", "b": "2"}
    assert original.read() == b""  # the app read it all, through the stream itself

    def lazy(environ: dict[str, Any], start_response: Any) -> Any:
        sqreen_mw.track("early", collect_body=True)  # the app itself never reads the body
        start_response("200 OK", [])
        return [b""]

    original = io.BytesIO(b"a=1&b=2")
    SqreenMiddleware(lazy)({**environ, "wsgi.input": original}, lambda *a: None)
    assert original.read() == b"a=1&b=2"  # an outer middleware or the server finds the body whole


def test_file_wrapper_responses_are_returned_unwrapped() -> None:
    class FileWrapper:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __iter__(self) -> Iterator[bytes]:
            yield self.f.read()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"file"))

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/f", "wsgi.file_wrapper": FileWrapper}
    result = SqreenMiddleware(app)(environ, lambda *a: None)
    assert isinstance(result, FileWrapper)  # the server can still use sendfile
    assert current_context.get() is None


@pytest.mark.parametrize("length", ["\xb2", "9" * 5000, 5], ids=["superscript", "5000-digits", "int"])
def test_odd_content_length_does_not_break_the_request(make_client: MakeClient, length: Any) -> None:
    # A superscript digit is not ASCII, int() of 5,000 digits raises ValueError, an int has no str methods (a
    # middleware or test that sets one): none is a length, and the request is served.
    make_client()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return [environ["wsgi.input"].read()]

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_LENGTH": length, "wsgi.input": io.BytesIO(b"")}
    assert SqreenMiddleware(app)(environ, lambda *a: None) == [b""]


def test_prefetch_reads_a_body_delivered_in_short_reads(make_client: MakeClient) -> None:
    make_client()
    payload = b"a=1&" * 500

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.data = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return self.data.read(min(7, size) if size >= 0 else 7)

    seen: list[bytes] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        sqreen_mw.track("early", collect_body=True)  # before the app reads: prefetched
        seen.append(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return [b"ok"]

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_LENGTH": str(len(payload)),
               "CONTENT_TYPE": "text/plain", "wsgi.input": Trickle()}
    with capture_events() as events:
        SqreenMiddleware(app)(environ, lambda *a: None)
    assert seen == [payload]
    assert events[0]["body"] == payload.decode()


def test_a_stream_sees_its_request_per_chunk_and_a_stream_left_midway_or_failing_unbinds(
    make_client: MakeClient,
) -> None:
    make_client()
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])

        def chunks() -> Iterator[bytes]:
            for i in range(3):
                seen.append(current_context.get())
                if environ.get("fail") and i == 1:
                    raise RuntimeError("stream broke")
                yield b"%d" % i

        return chunks()

    wrapped = SqreenMiddleware(app)
    result = wrapped({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda *a: None)
    assert list(result) == [b"0", b"1", b"2"]
    assert len(seen) == 3 and seen[0] is not None and seen.count(seen[0]) == 3
    assert current_context.get() is None

    seen.clear()
    result = wrapped({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda *a: None)
    iterator = iter(result)
    assert next(iterator) == b"0" and current_context.get() is None  # unbound between chunks
    iterator.close()  # type: ignore[attr-defined]  # a server that stops midway (client gone)
    result.close()  # type: ignore[attr-defined]
    assert current_context.get() is None and len(seen) == 1

    result = wrapped({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "fail": True}, lambda *a: None)
    with pytest.raises(RuntimeError, match="stream broke"):
        list(result)
    assert current_context.get() is None


def test_the_context_and_response_the_middleware_makes_equal_what_their_constructors_make(
    make_client: MakeClient,
) -> None:
    # The middleware builds both without their __init__ (per-request cost): every slot must still be set alike.
    from sqreen_mw._context import WSGI, RequestContext
    from sqreen_mw.wsgi import _BoundResponse

    client = make_client()
    seen: list[Any] = []

    class Closing:
        def __iter__(self) -> Iterator[bytes]:
            return iter([b"ok"])

        def close(self) -> None:
            pass

    def app(environ: dict[str, Any], start_response: Any) -> Closing:
        seen.append(current_context.get())
        start_response("200 OK", [])
        return Closing()

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": io.BytesIO(b"")}
    result = SqreenMiddleware(app, client=client)(environ, lambda *args: None)
    ctx = seen[0]
    assert type(ctx) is RequestContext
    expected = RequestContext(WSGI, environ)
    assert {n: getattr(ctx, n) for n in RequestContext.__slots__} == {
        n: getattr(expected, n) for n in RequestContext.__slots__}
    if type(result) is _BoundResponse:
        expected_result = _BoundResponse(result._result, ctx)
        assert {n: getattr(result, n) for n in _BoundResponse.__slots__} == {
            n: getattr(expected_result, n) for n in _BoundResponse.__slots__}
    else:  # the compiled middleware's (a started client): the same response and request, no guard
        assert speedups is not None and client._started_pid is not None
        assert type(result) is speedups.BoundResponse and result._ctx is ctx
        assert type(result._result) is Closing
    assert list(result) == [b"ok"]
    result.close()

    from sqreen_mw._body import WSGIInput

    stream = io.BytesIO(b"abc")
    posted = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "CONTENT_LENGTH": "3", "wsgi.input": stream}
    SqreenMiddleware(app, client=client)(posted, lambda *args: None).close()  # type: ignore[attr-defined]
    tee = seen[-1].body_tee
    assert type(tee) is WSGIInput and posted["wsgi.input"] is tee
    expected_tee = WSGIInput(stream, 3, client.max_body_bytes)
    slots = all_slots(WSGIInput)
    assert {n: getattr(tee, n) for n in slots} == {n: getattr(expected_tee, n) for n in slots}


def test_a_closing_response_over_a_list_is_iterated_unbound_and_closed_bound(make_client: MakeClient) -> None:
    client = make_client()
    seen: list[Any] = []

    class Closing:  # what Django's HttpResponse and many WSGI frameworks return: close() plus a list's iterator
        def __iter__(self) -> Iterator[bytes]:
            seen.append(("iter", current_context.get()))
            return iter([b"a", b"b"])

        def close(self) -> None:
            seen.append(("close", current_context.get()))

    def app(environ: dict[str, Any], start_response: Any) -> Closing:
        seen.append(("app", current_context.get()))
        start_response("200 OK", [])
        return Closing()

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": io.BytesIO(b"")}
    result = SqreenMiddleware(app, client=client)(environ, lambda *args: None)
    chunks = []
    for chunk in result:
        chunks.append(chunk)
        assert current_context.get() is None  # while the server holds a chunk
    assert current_context.get() is None
    result.close()  # type: ignore[attr-defined]
    assert current_context.get() is None
    assert chunks == [b"a", b"b"]
    ctx = seen[0][1]
    assert ctx is not None and seen == [("app", ctx), ("iter", ctx), ("close", ctx)]


def test_a_streamed_response_dropped_unclosed_is_finalized_cleanly(make_client: MakeClient,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Werkzeug's test client without `with` never closes a streamed response: the generator (Flask's
    # stream_with_context pushes its request context inside it) is finalized when the response is dropped, and
    # what it set in a context variable it must reset in the same context, with no "Exception ignored".
    import gc
    import sys

    make_client()
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    http = make_flask_app().test_client()
    with capture_events() as events:
        response = http.get("/stream", buffered=False)
        chunks = iter(response.response)
        assert next(chunks) == b"a"
        assert current_context.get() is None
        del response, chunks
        gc.collect()
    assert unraisable == [] and current_context.get() is None
    assert flask.has_request_context() is False
    assert events == []  # the generator stopped before its track()
