"""The collector's uvicorn server, hardened against slow and numerous clients.

uvicorn alone waits forever for the headers of a new connection (1000 half-sent requests stayed open for minutes)
and counts connections only once their headers are in. Here a connection must send its headers within
``header_timeout`` seconds, and connections beyond ``max_connections`` are closed at once; the body has its own
time limit in :func:`sqreen_mw.collector._http.read_body`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

# uvicorn (the collector extra) is imported only when a server is built: the CLI reads the constants without it.

#: Seconds a new (or kept-alive) connection has to send its request headers.
HEADER_TIMEOUT = 10.0
#: Open connections at most; more are closed on arrival (and requests beyond it answered 503 by uvicorn).
MAX_CONNECTIONS = 1000
#: Seconds an idle kept-alive connection stays open.
KEEP_ALIVE = 5


def _protocol(header_timeout: float, max_connections: int) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.close()
                return
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_timer()  # the next request on this connection gets the same time for its headers

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            # uvicorn's own keep-alive timer is cancelled by any data received, so a client sending a byte at a
            # time would keep it off: this one only looks at whether the headers are complete when it fires.
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(header_timeout, self._headers_due)

        def _headers_due(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return Protocol


def server_config(
    app: Any,
    host: str,
    port: int,
    *,
    header_timeout: float = HEADER_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    log_level: str = "warning",
) -> uvicorn.Config:
    """A uvicorn configuration for ``app`` with the header timeout and connection limit above.

    :raises ValueError: a timeout or limit that is not positive.
    """
    if not header_timeout > 0:
        raise ValueError("header_timeout must be a positive number of seconds")
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1")
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=_protocol(header_timeout, max_connections),
        timeout_keep_alive=KEEP_ALIVE,
        limit_concurrency=max_connections,
    )
