"""The compiled ASGI middleware (``speedups.ASGICall``, ``Forward``, ``TeeReceive``) against the Python method.

The Python ``SqreenMiddleware.__call__`` (``__wrapped__``) and ``ASGIBodyTee.record`` stay the reference: each test
runs both with the same input and compares what they leave behind, or checks the coroutine protocol (send, throw,
close) the compiled awaitable forwards as ``await`` in a coroutine does.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqreen_mw import asgi
from sqreen_mw._body import ASGIBodyTee
from sqreen_mw._client import Client
from sqreen_mw._context import ASGI, RequestContext, current_context
from sqreen_mw._native import speedups

from .support import all_slots

pytestmark = pytest.mark.skipif(speedups is None, reason="sqreen_mw was installed without its compiled part")

PYTHON_CALL = asgi.SqreenMiddleware.__call__.__wrapped__  # type: ignore[attr-defined]
TEE_SLOTS = all_slots(ASGIBodyTee)


def http_scope(method: str = "POST", **extra: Any) -> dict[str, Any]:
    scope = {"type": "http", "method": method, "path": "/p", "query_string": b"", "headers": [],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80), "scheme": "http", "root_path": ""}
    scope.update(extra)
    return scope


def run(awaitable: Any) -> Any:
    return asyncio.run(_await(awaitable))


async def _await(awaitable: Any) -> Any:
    return await awaitable


def test_the_compiled_call_binds_what_the_python_method_binds(started: Client) -> None:
    seen: list[tuple[Any, ...]] = []

    async def app(scope: Any, receive: Any, send: Any) -> str:
        ctx = current_context.get()
        await asyncio.sleep(0)  # suspended: still bound when resumed
        assert current_context.get() is ctx
        message = await receive()
        seen.append((ctx, receive, message, {n: getattr(ctx.body_tee, n) for n in TEE_SLOTS}
                     if ctx.body_tee is not None else None, ctx.raw, ctx.body_tee))
        return "ignored"  # the middleware returns None, as the Python method does

    server_messages = [{"type": "http.request", "body": b'{"a": 1}', "more_body": False}]

    async def server_receive() -> dict[str, Any]:
        return server_messages[0]

    async def send(message: Any) -> None:
        pass

    middleware = asgi.SqreenMiddleware(app)
    for method in ("POST", "GET"):
        compiled, python = http_scope(method), http_scope(method)
        awaitable = middleware(compiled, server_receive, send)
        assert type(awaitable) is speedups.Forward and current_context.get() is None
        assert run(awaitable) is None and current_context.get() is None
        assert run(PYTHON_CALL(middleware, python, server_receive, send)) is None
        (c_ctx, c_receive, c_message, c_tee, c_raw, c_body_tee), (p_ctx, p_receive, p_message, p_tee, p_raw,
                                                                 p_body_tee) = seen[-2:]
        assert c_message is p_message is server_messages[0]
        assert c_raw is compiled and p_raw is python
        for name in RequestContext.__slots__:
            if name not in ("raw", "body_tee"):
                assert getattr(c_ctx, name) == getattr(p_ctx, name), name
        # served: both released the scope and the tee (copies of the request's context may outlive it)
        assert c_ctx.raw is p_ctx.raw is c_ctx.body_tee is p_ctx.body_tee is None
        if method == "GET":
            assert c_body_tee is p_body_tee is None and c_receive is p_receive is server_receive
            continue
        assert type(c_body_tee) is ASGIBodyTee and type(c_receive) is speedups.TeeReceive
        assert c_receive.__self__ is c_body_tee
        assert c_tee == p_tee and c_tee["_size"] == 8 and c_tee["ended"] and c_tee["_receive"] is server_receive
        assert c_ctx.kind == ASGI


messages = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["http.request", "http.disconnect", "http.request2"])},
        optional={
            "body": st.one_of(st.binary(max_size=12), st.none(), st.just(bytearray(b"ab")), st.just("text"),
                              st.just(memoryview(b"xyz"))),
            "more_body": st.one_of(st.booleans(), st.none(), st.integers(-1, 2), st.just("yes"), st.just([])),
        }),
    st.just({"body": b"no type"}),  # KeyError from both
    st.just({"type": 7, "body": b"x"}),
    st.builds(lambda body: _Mapping({"type": "http.request", "body": body, "more_body": True}), st.binary(max_size=5)),
)


class _Mapping(MutableMapping[str, Any]):
    """A message that is not a dict."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def _outcome(call: Any) -> Any:
    try:
        return ("returned", call())
    except Exception as exc:  # compared, not swallowed
        return ("raised", type(exc), str(exc))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(messages, max_size=6), st.integers(0, 20))
def test_the_compiled_tee_records_what_record_records(started: Client, sequence: list[Any], limit: int) -> None:
    started.max_body_bytes = limit
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        tee = current_context.get().body_tee
        python = ASGIBodyTee(receive, limit)
        outcomes = []
        for message in sequence:
            served[0] = message
            outcomes.append((_outcome(lambda: receive_now(receive)), _outcome(lambda m=message: python.record(m))))
        seen["outcomes"] = outcomes
        seen["states"] = ({n: getattr(tee, n) for n in TEE_SLOTS if n != "_receive"},
                          {n: getattr(python, n) for n in TEE_SLOTS if n != "_receive"})

    served: list[Any] = [None]

    async def server_receive() -> Any:
        return served[0]

    def receive_now(receive: Any) -> Any:  # drive the Forward by hand: the server's receive() never suspends
        forward = receive()
        try:
            forward.send(None)
        except StopIteration as stop:
            return stop.value
        raise AssertionError("the server's receive() did not suspend, so neither may its tee")

    async def send(message: Any) -> None:
        pass

    run(asgi.SqreenMiddleware(app)(http_scope(), server_receive, send))
    for (compiled, python), message in zip(seen["outcomes"], sequence, strict=True):
        if python[0] == "returned":
            assert compiled == ("returned", message) and compiled[1] is message
        else:
            assert compiled == python
    assert seen["states"][0] == seen["states"][1]


def test_forward_passes_on_what_the_awaited_yields_and_receives(started: Client) -> None:
    log: list[Any] = []

    class Step:
        def __await__(self) -> Any:
            log.append((yield "first"))
            log.append((yield "second"))
            log.append((yield "third"))
            return "done"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        log.append(("bound", current_context.get() is not None))
        log.append(await Step())

    forward = asgi.SqreenMiddleware(app)(http_scope("GET"), None, None)
    with pytest.raises(TypeError, match="non-None value to a just-started"):
        forward.send(1)
    forward = asgi.SqreenMiddleware(app)(http_scope("GET"), None, None)
    assert forward.send(None) == "first" and current_context.get() is not None  # bound in this (running) context
    assert forward.send("a") == "second"
    assert next(iter(forward)) == "third"  # next() is send(None)
    with pytest.raises(StopIteration) as stop:
        forward.send("b")
    assert stop.value.value is None and current_context.get() is None
    assert log == [("bound", True), "a", None, "b", "done"]
    with pytest.raises(RuntimeError, match="already awaited"):
        forward.send(None)


def test_forward_throw_and_close_reach_the_app_and_unbind(started: Client) -> None:
    events: list[str] = []

    class Pending:
        def __await__(self) -> Any:
            yield "waiting"

    async def app(scope: Any, receive: Any, send: Any) -> Any:
        try:
            await Pending()
        except KeyError:
            events.append("caught")
            return "recovered"
        except ValueError:
            events.append("value")
            raise
        finally:
            events.append(f"finally bound={current_context.get() is not None}")

    make = asgi.SqreenMiddleware(app)
    forward = make(http_scope("GET"), None, None)
    assert forward.send(None) == "waiting"
    with pytest.raises(StopIteration) as stop:  # the app caught it and returned: the middleware ends with None
        forward.throw(KeyError("k"))
    assert stop.value.value is None and current_context.get() is None
    forward = make(http_scope("GET"), None, None)
    forward.send(None)
    with pytest.raises(ValueError, match="v"):
        forward.throw(ValueError("v"))
    assert current_context.get() is None
    forward = make(http_scope("GET"), None, None)
    forward.send(None)
    forward.close()
    assert current_context.get() is None
    assert events == ["caught", "finally bound=True", "value", "finally bound=True", "finally bound=True"]
    forward = make(http_scope("GET"), None, None)
    with pytest.raises(OSError, match="before"):  # thrown before its first step: raised, the app never runs
        forward.throw(OSError("before"))
    assert len(events) == 5 and current_context.get() is None
    forward.close()  # harmless once done


@pytest.mark.parametrize("step", ["send", "throw", "close"])
def test_a_step_called_from_within_its_own_step_is_refused_as_a_coroutine_refuses_it(started: Client,
                                                                                     step: str) -> None:
    # The app (or the server's receive) reaching the awaitable it runs in and stepping it: a running coroutine raises
    # ValueError and goes on; the compiled awaitable must not end (and free) the app's coroutine while it runs.
    def reenter(awaitable: Any) -> str:
        args: tuple[Any, ...] = {"send": (None,), "throw": (KeyError("k"),), "close": ()}[step]
        try:
            getattr(awaitable, step)(*args)
        except ValueError as error:
            return str(error)
        return "not refused"

    class Server:
        def __await__(self) -> Any:
            seen.append(reenter(holder[1]))  # the tee's receive(), stepped from the server's awaitable
            yield  # (a bare yield: the task steps it again)
            return {"type": "http.request", "body": b"abc", "more_body": False}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(reenter(holder[0]))
        await asyncio.sleep(0)
        seen.append(reenter(holder[0]))
        holder.append(receive())
        message = await holder[1]
        seen.append((message["body"], current_context.get().body_tee._chunks, current_context.get() is not None))

    holder: list[Any] = []
    seen: list[Any] = []
    for call in (PYTHON_CALL, asgi.SqreenMiddleware.__call__):
        holder.clear()
        holder.append(call(asgi.SqreenMiddleware(app), http_scope(), Server, None))
        run(holder[0])
        assert current_context.get() is None
    refused = "coroutine already executing"
    assert seen == [refused, refused, refused, (b"abc", [b"abc"], True)] * 2


def test_throw_raises_what_a_coroutine_raises_when_there_is_no_throw_to_forward_to(started: Client) -> None:
    class Plain:  # an iterator without throw(): `await` raises what is thrown in the awaiting frame
        def __iter__(self) -> Plain:
            return self

        def __next__(self) -> None:
            return None

    class Awaitable:
        def __await__(self) -> Plain:
            return Plain()

    def app(scope: Any, receive: Any, send: Any) -> Awaitable:  # an app giving an awaitable other than a coroutine
        return Awaitable()

    try:
        raise OSError("with its traceback")
    except OSError as error:
        traceback = error.__traceback__
    outcomes: list[list[Any]] = []
    for call in (PYTHON_CALL, asgi.SqreenMiddleware.__call__):
        outcome: list[Any] = []
        for started_first, args in [(True, (KeyError("k"),)), (True, (KeyError, "v")), (False, (42,)),
                                    (False, (KeyError("k"), "v")), (False, (KeyError, None, 5)),
                                    (False, (OSError, OSError("x"), traceback))]:
            awaitable = call(asgi.SqreenMiddleware(app), http_scope("GET"), None, None)
            if started_first:
                awaitable.send(None)
            with pytest.raises(BaseException) as raised:
                awaitable.throw(*args)
            outcome.append((type(raised.value), str(raised.value), raised.value.__traceback__ is not None
                            and raised.value.__traceback__.tb_frame is traceback.tb_frame))  # type: ignore[union-attr]
            assert current_context.get() is None
            try:  # what could not be thrown leaves the coroutine as it was; what was thrown ended it
                outcome.append(awaitable.send(None))
                awaitable.close()
            except RuntimeError as error:
                outcome.append(str(error))
            assert current_context.get() is None

        async def cancelled(call: Any) -> None:
            task = asyncio.ensure_future(call(asgi.SqreenMiddleware(app), http_scope("GET"), None, None))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):  # cancelled, not an AttributeError
                await task

        asyncio.run(cancelled(call))
        outcomes.append(outcome)
    assert outcomes[1] == outcomes[0]
    assert [kind for kind, _, _ in outcomes[0][::2]] == [KeyError, KeyError, TypeError, TypeError, TypeError, OSError]
    assert outcomes[0][1::2] == ["cannot reuse already awaited coroutine"] * 2 + [None] * 3 + [
        "cannot reuse already awaited coroutine"]
    assert outcomes[0][-2][2]  # raised with the traceback given


def test_what_the_app_gives_is_awaited_as_await_takes_it(started: Client) -> None:
    @types.coroutine
    def generator_based(scope: Any, receive: Any, send: Any) -> Any:  # a generator-based coroutine: awaitable
        yield "step"
        return current_context.get()

    class NotAnIterator:
        def __await__(self) -> Any:
            return 5

    def not_iterator(scope: Any, receive: Any, send: Any) -> NotAnIterator:
        return NotAnIterator()

    outcomes = []
    for call in (PYTHON_CALL, asgi.SqreenMiddleware.__call__):
        awaitable = call(asgi.SqreenMiddleware(generator_based), http_scope("GET"), None, None)
        outcomes.append(awaitable.send(None))
        with pytest.raises(StopIteration):
            awaitable.send(None)
        with pytest.raises(TypeError) as raised:
            run(call(asgi.SqreenMiddleware(not_iterator), http_scope("GET"), None, None))
        outcomes.append(str(raised.value))
    assert outcomes[2:] == outcomes[:2] == ["step", "__await__() returned non-iterator of type 'int'"]
    assert current_context.get() is None


def test_a_cancelled_request_is_unbound_and_the_app_sees_the_cancellation(started: Client) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append(current_context.get() is not None)
            raise

    async def main() -> None:
        task = asyncio.ensure_future(asgi.SqreenMiddleware(app)(http_scope("GET"), None, None))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen.append(current_context.get())

    asyncio.run(main())
    assert seen == [True, None]


def test_a_task_made_of_the_call_binds_in_its_own_context(started: Client) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> Any:
        return current_context.get()

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        found.append(await app(scope, receive, send))

    found: list[Any] = []

    async def main() -> None:
        awaitable = asgi.SqreenMiddleware(inner)(http_scope("GET"), None, None)  # made here, run in another task
        assert current_context.get() is None
        await asyncio.create_task(_await(awaitable))
        found.append(current_context.get())

    asyncio.run(main())
    assert type(found[0]) is RequestContext and found[1] is None


def test_errors_reach_the_server_with_the_request_unbound(started: Client) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("app broke")

    def not_async(scope: Any, receive: Any, send: Any) -> int:
        return 5

    with pytest.raises(LookupError, match="app broke"):
        run(asgi.SqreenMiddleware(broken)(http_scope(), None, None))
    with pytest.raises(TypeError, match="can't be used in 'await' expression"):
        run(asgi.SqreenMiddleware(not_async)(http_scope(), None, None))  # type: ignore[arg-type]
    async def unteed(scope: Any, receive: Any, send: Any) -> None:
        del current_context.get().body_tee._receive
        await receive()

    with pytest.raises(AttributeError, match="_receive"):
        run(asgi.SqreenMiddleware(unteed)(http_scope(), None, None))
    middleware = asgi.SqreenMiddleware(broken)
    del middleware.app
    with pytest.raises(AttributeError, match="app"):
        run(middleware(http_scope(), None, None))
    assert current_context.get() is None


def test_other_calls_go_to_the_python_method(started: Client) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    middleware = asgi.SqreenMiddleware(app)
    others = [http_scope(type="lifespan"), http_scope(type="websocket"), {"type": "http"},
              http_scope(method=b"GET"), http_scope(type=_Str("http"))]
    for scope in others:
        awaitable = middleware(scope, None, None)
        assert asyncio.iscoroutine(awaitable), scope
        awaitable.close()
    awaitable = middleware(_Mapping(http_scope()), None, None)
    assert asyncio.iscoroutine(awaitable)
    awaitable.close()
    started.set_actions({"actions_version": 2, "actions": [
        {"id": "b1", "action": "block_ip", "value": "198.51.100.9", "expires_at": None}]})
    awaitable = middleware(http_scope(), None, None)  # some block to check: the Python method's
    assert asyncio.iscoroutine(awaitable)
    awaitable.close()
    started.set_actions({"actions_version": 3, "actions": []})
    assert type(middleware(http_scope(), None, None)) is speedups.Forward
    started._started_pid = None  # a process's first request: the Python method starts the client
    awaitable = middleware(http_scope(), None, None)
    assert asyncio.iscoroutine(awaitable)
    awaitable.close()


class _Str(str):
    """A scope type that is text of another type."""


def test_servers_and_frameworks_still_see_a_coroutine_function() -> None:
    import uvicorn
    from starlette._utils import is_async_callable

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    middleware = asgi.SqreenMiddleware(app)
    assert asyncio.iscoroutinefunction(middleware.__call__)
    assert is_async_callable(middleware)
    config = uvicorn.Config(middleware, proxy_headers=False)
    config.load()
    assert config.loaded_app is middleware  # ASGI 3, not wrapped in uvicorn's ASGI 2 adapter
    assert asgi.SqreenMiddleware.__call__.__wrapped__ is PYTHON_CALL  # type: ignore[attr-defined]


def test_a_request_resumed_in_another_context_raises_the_reset_error_chained_to_the_apps(started: Client) -> None:
    import contextvars

    class Pending:
        def __await__(self) -> Any:
            yield "waiting"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await Pending()
        raise LookupError("app broke")

    forward = asgi.SqreenMiddleware(app)(http_scope("GET"), None, None)
    assert contextvars.copy_context().run(forward.send, None) == "waiting"  # bound in that copy
    with pytest.raises(ValueError, match="different Context") as raised:  # resumed here: the reset cannot be made
        forward.send(None)
    assert isinstance(raised.value.__context__, LookupError)  # as a finally clause's error would be
    assert current_context.get() is None
