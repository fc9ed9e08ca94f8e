"""The example apps as ``bench_wrk.py`` serves them: ``BENCH_FRAMEWORK`` = fastapi | flask, ``BENCH_VARIANT`` = bare |
sqreen_mw | sentry | otel | ddtrace.

``sqreen_mw`` is the example as shipped. ``bare`` is the same app with sqreen_mw's middleware removed and its
calls (``track``, ``identify``, ``auth_track``, ``signup_track``) replaced by no-ops. A peer variant is ``bare``
wrapped in the peer's ASGI / WSGI middleware, with ``sqreen_mw.track`` replaced by the peer's event call
(``_peers.request_emit``),
sending to the sink at ``BENCH_SINK_URL``. Serve ``benchmarks._wrk_app:app`` with uvicorn or gunicorn.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _peers

import sqreen_mw

VARIANT = os.environ.get("BENCH_VARIANT", "sqreen_mw")
FRAMEWORK = os.environ.get("BENCH_FRAMEWORK", "fastapi")
SINK = os.environ.get("BENCH_SINK_URL", "http://127.0.0.1:9")


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


app: Any
if FRAMEWORK == "fastapi":
    from examples.fastapi_app.app import app as fastapi_app
    from sqreen_mw.asgi import SqreenMiddleware

    if VARIANT != "sqreen_mw":
        fastapi_app.user_middleware[:] = [m for m in fastapi_app.user_middleware if m.cls is not SqreenMiddleware]
    app = fastapi_app
else:
    from examples.flask_app.app import app as flask_app

    if VARIANT != "sqreen_mw":
        flask_app.wsgi_app = flask_app.wsgi_app.app  # type: ignore[attr-defined, method-assign]
    app = flask_app

if VARIANT != "sqreen_mw":
    for name in ("track", "identify", "auth_track", "signup_track"):
        setattr(sqreen_mw, name, _noop)
if VARIANT in _peers.MIDDLEWARE_PEERS:
    os.environ.update({k: v for k, v in _peers.peer_env(SINK).items() if k not in os.environ})
    _peers.quiet_peers()
    emit = _peers.request_emit(VARIANT, SINK)

    def _track(event_name: str, options: Any = None, /, *, properties: Any = None, **kwargs: Any) -> None:
        emit(event_name, dict(properties or {}))

    sqreen_mw.track = _track  # type: ignore[assignment]
    if FRAMEWORK == "fastapi":
        app = _peers.wrap_asgi(VARIANT, app, SINK)
    else:
        app.wsgi_app = _peers.wrap_wsgi(VARIANT, app.wsgi_app, SINK)

if os.environ.get("BENCH_GC_DIR"):  # bench_wrk.py --gc: this process's garbage collections, written at exit
    import atexit
    import json
    import signal

    from _timing import Collections

    _collections = Collections().install()
    _served = [0]

    def _write() -> None:
        path = Path(os.environ["BENCH_GC_DIR"]) / f"{os.getpid()}.json"
        path.write_text(json.dumps({**_collections.summary(), "requests": _served[0]}))

    atexit.register(_write)  # a normal exit (gunicorn's workers)
    _previous = signal.getsignal(signal.SIGTERM)

    def _on_term(signum: int, frame: Any) -> None:  # uvicorn re-raises SIGTERM once it has shut down
        _write()
        if callable(_previous):
            _previous(signum, frame)
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, _on_term)
    _served_app = app
    if FRAMEWORK == "fastapi":
        async def app(scope: Any, receive: Any, send: Any) -> None:  # counts the requests served
            if scope["type"] == "http":
                _served[0] += 1
            await _served_app(scope, receive, send)
    else:
        def app(environ: Any, start_response: Any) -> Any:
            _served[0] += 1
            return _served_app(environ, start_response)
