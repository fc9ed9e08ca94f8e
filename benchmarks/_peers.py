"""The peers of ``bench_peers.py`` and ``bench_wrk.py``: each one's ``track``-equivalent and middlewares, configured as
in production (its own batching and background sender on) but sending to a loopback sink.

Every peer is optional: a peer whose package does not import is skipped, with the reason. Install them with
``pip install -r benchmarks/requirements-peers.txt``.

- **posthog**: ``Posthog(key, host=sink).capture(event, distinct_id=..., properties=...)``, default queue and batching.
- **segment**: ``segment.analytics.Client(key, host=sink).track(user_id, event, properties)``, defaults.
- **otel**: OpenTelemetry SDK ``Logger.emit(body=..., event_name=..., attributes=...)`` through a
  ``BatchLogRecordProcessor`` with the OTLP/HTTP exporter (defaults); middlewares ``opentelemetry-instrumentation-asgi``
  / ``-wsgi`` with a ``TracerProvider`` + ``BatchSpanProcessor`` + OTLP/HTTP span exporter.
- **sentry**: ``sentry_sdk.capture_event({...})`` (the SDK's own HTTP transport, background worker); middlewares
  ``SentryAsgiMiddleware`` / ``SentryWsgiMiddleware`` with ``traces_sample_rate=1.0``. The SDK is initialised with
  ``default_integrations=False, auto_enabling_integrations=False`` so that it patches nothing globally: its middlewares
  wrap only the apps of their own variant (the others in the same process stay bare).
- **ddtrace**: ``ddtrace.appsec.track_user_sdk.track_custom_event(event, metadata)`` inside a request span (it tags the
  root span); middlewares ``ddtrace.contrib.asgi.TraceMiddleware`` / ``ddtrace.contrib.wsgi.DDWSGIMiddleware``, no
  global patching. The agent URL is the sink (``DD_TRACE_AGENT_URL``, set before ddtrace is imported).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import read_line_matching, spawn, stop_process  # noqa: E402

PEERS = ("posthog", "segment", "otel", "sentry", "ddtrace")
MIDDLEWARE_PEERS = ("sentry", "otel", "ddtrace")
PACKAGES = {
    "posthog": "posthog",
    "segment": "segment-analytics-python",
    "otel": "opentelemetry-sdk",
    "sentry": "sentry-sdk",
    "ddtrace": "ddtrace",
}
EVENT = "order.placed"
USER = "user-42"

Emit = Callable[[str, dict[str, Any]], Any]


@contextlib.contextmanager
def sink() -> Iterator[str]:
    """Start ``_sink.py`` in its own process; yield its base URL; stop it."""
    proc = spawn([sys.executable, str(Path(__file__).with_name("_sink.py")), "--port", "0"])
    try:
        match = read_line_matching(proc, r"listening on (http://[\d.]+:\d+)", 20.0)
        yield match.group(1)
    finally:
        stop_process(proc, signal.SIGTERM, timeout=10)


def sink_stats(url: str) -> dict[str, Any]:
    import httpx

    stats: dict[str, Any] = httpx.get(f"{url}/__sink/stats", timeout=5).json()
    return stats


def peer_env(sink_url: str) -> dict[str, str]:
    """Environment for the peers that read it at import time (ddtrace), so nothing leaves loopback."""
    return {
        "DD_TRACE_AGENT_URL": sink_url,
        "DD_SERVICE": "bench",
        "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",  # would post to the agent (the sink) every minute
        "DD_REMOTE_CONFIGURATION_ENABLED": "false",  # polls the agent
        "OTEL_SDK_DISABLED": "false",
    }


def quiet_peers() -> None:
    """The peers log every failed export; keep the benchmark's output to its tables."""
    for name in ("posthog", "segment", "opentelemetry", "sentry_sdk", "ddtrace", "backoff", "urllib3", "sqreen_mw"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def peer_version(peer: str) -> str:
    try:
        return version(PACKAGES[peer])
    except PackageNotFoundError:
        return "not installed"


@dataclass
class Peer:
    """One peer's event call, set up once per process."""

    name: str
    emit: Emit  # emit(event_name, properties)
    flush: Callable[[], Any]
    close: Callable[[], Any]
    #: the call as a user writes it, ``P`` standing for the properties expression, evaluated in ``names``
    expr: str = ""
    names: dict[str, Any] = field(default_factory=dict)
    enter: Callable[[], Any] = lambda: None  # bound around a measurement (ddtrace: the request span)
    leave: Callable[[], Any] = lambda: None


# --------------------------------------------------------------------------------------------------------------------
# track-equivalents


def make_posthog(sink_url: str) -> Peer:
    from posthog import Posthog

    client = Posthog("phc_bench", host=sink_url)

    def emit(event: str, props: dict[str, Any]) -> Any:
        return client.capture(event, distinct_id=USER, properties=props)

    return Peer("posthog", emit, client.flush, client.shutdown,
                "capture(EVENT, distinct_id=USER, properties=P)", {"capture": client.capture})


def make_segment(sink_url: str) -> Peer:
    from segment.analytics import Client

    client = Client("bench-write-key", host=sink_url)

    def emit(event: str, props: dict[str, Any]) -> Any:
        return client.track(USER, event, props)

    return Peer("segment", emit, client.flush, client.shutdown, "track(USER, EVENT, P)", {"track": client.track})


_OTEL: dict[str, Any] = {}


def otel_providers(sink_url: str) -> tuple[Any, Any]:
    """One LoggerProvider and one TracerProvider per process, exporting over OTLP/HTTP to the sink."""
    if not _OTEL:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        logs = LoggerProvider()
        logs.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{sink_url}/v1/logs")))
        traces = TracerProvider()
        traces.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{sink_url}/v1/traces")))
        _OTEL.update(logs=logs, traces=traces)
    return _OTEL["logs"], _OTEL["traces"]


def make_otel(sink_url: str) -> Peer:
    logs, traces = otel_providers(sink_url)
    logger = logs.get_logger("bench")

    def emit(event: str, props: dict[str, Any]) -> Any:
        return logger.emit(body=event, event_name=event, attributes=props)

    def close() -> None:
        logs.shutdown()
        traces.shutdown()

    return Peer("otel", emit, logs.force_flush, close,
                "emit(body=EVENT, event_name=EVENT, attributes=P)", {"emit": logger.emit})


_SENTRY: list[bool] = []


def sentry_init(sink_url: str) -> None:
    if not _SENTRY:
        import sentry_sdk

        host = sink_url.split("://", 1)[1]
        sentry_sdk.init(
            dsn=f"http://public@{host}/1",
            traces_sample_rate=1.0,
            default_integrations=False,
            auto_enabling_integrations=False,
        )
        _SENTRY.append(True)


def make_sentry(sink_url: str) -> Peer:
    import sentry_sdk

    sentry_init(sink_url)

    def emit(event: str, props: dict[str, Any]) -> Any:
        return sentry_sdk.capture_event({"message": event, "level": "info", "extra": props})

    return Peer("sentry", emit, lambda: sentry_sdk.flush(timeout=10), lambda: sentry_sdk.flush(timeout=2),
                'capture_event({"message": EVENT, "level": "info", "extra": P})',
                {"capture_event": sentry_sdk.capture_event})


def make_ddtrace(sink_url: str) -> Peer:
    os.environ.update({k: v for k, v in peer_env(sink_url).items() if k not in os.environ})
    from ddtrace.appsec.track_user_sdk import track_custom_event
    from ddtrace.trace import tracer

    spans: list[Any] = []

    def enter() -> None:
        spans.append(tracer.trace("web.request", span_type="web"))

    def leave() -> None:
        while spans:
            spans.pop().finish()

    return Peer("ddtrace", track_custom_event, tracer.flush, tracer.shutdown, "track_custom_event(EVENT, P)",
                {"track_custom_event": track_custom_event}, enter, leave)


MAKERS: dict[str, Callable[[str], Peer]] = {
    "posthog": make_posthog,
    "segment": make_segment,
    "otel": make_otel,
    "sentry": make_sentry,
    "ddtrace": make_ddtrace,
}


def make_peer(name: str, sink_url: str) -> Peer | str:
    """The peer, or why it is skipped."""
    try:
        return MAKERS[name](sink_url)
    except ImportError as exc:
        return f"{name} skipped: {exc} (pip install {PACKAGES[name]})"


# --------------------------------------------------------------------------------------------------------------------
# middlewares (explicit wrappers: nothing patched globally, so every variant shares one process)


#: peer → (ASGI middleware, WSGI middleware), as "module:class"
MIDDLEWARES = {
    "sentry": ("sentry_sdk.integrations.asgi:SentryAsgiMiddleware",
               "sentry_sdk.integrations.wsgi:SentryWsgiMiddleware"),
    "otel": ("opentelemetry.instrumentation.asgi:OpenTelemetryMiddleware",
             "opentelemetry.instrumentation.wsgi:OpenTelemetryMiddleware"),
    "ddtrace": ("ddtrace.contrib.asgi:TraceMiddleware", "ddtrace.contrib.wsgi:DDWSGIMiddleware"),
}


def _wrap(peer: str, kind: int, app: Any, sink_url: str) -> Any:
    if peer not in MIDDLEWARES:
        raise ValueError(peer)
    kwargs: dict[str, Any] = {}
    if peer == "sentry":
        sentry_init(sink_url)
    elif peer == "otel":
        kwargs["tracer_provider"] = otel_providers(sink_url)[1]
    else:  # ddtrace reads its agent URL from the environment when it is imported
        os.environ.update({k: v for k, v in peer_env(sink_url).items() if k not in os.environ})
    module, name = MIDDLEWARES[peer][kind].split(":")
    return getattr(importlib.import_module(module), name)(app, **kwargs)


def wrap_asgi(peer: str, app: Any, sink_url: str) -> Any:
    return _wrap(peer, 0, app, sink_url)


def wrap_wsgi(peer: str, app: Any, sink_url: str) -> Any:
    return _wrap(peer, 1, app, sink_url)


def request_emit(peer: str, sink_url: str) -> Emit:
    """The call a request handler makes to record one event with this peer (inside the peer's middleware)."""
    if peer == "sentry":
        return make_sentry(sink_url).emit
    if peer == "otel":
        return make_otel(sink_url).emit
    if peer == "ddtrace":
        from ddtrace.appsec.track_user_sdk import track_custom_event

        return track_custom_event  # type: ignore[no-any-return]
    raise ValueError(peer)
