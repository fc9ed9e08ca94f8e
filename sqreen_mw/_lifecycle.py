"""Process lifecycle: the client the module-level functions use, and delivery at exit, on SIGTERM and after fork.

- ``threading``'s exit hook flushes when the main thread ends (new connections still work then), ``atexit`` shuts the
  clients down; both share one ``shutdown_timeout`` budget.
- SIGTERM: chained to the handler installed before. A server's own handler (gunicorn workers) is left to end the
  process through ``sys.exit``, where the exit hooks deliver; with the default handler (uvicorn re-raises the signal
  after restoring it, Django's ``runserver``), the clients are shut down first, then the signal ends the process.
  uvicorn's workers load the app inside uvicorn's own capture, so the handler found is uvicorn's and the default is
  restored behind ours: the clients are shut down when uvicorn has stopped, just before it re-raises the signal.
- ``os.register_at_fork``: before a fork, each flusher is brought to an idle point (bounded wait); a child starts with
  an empty queue and its own flusher.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

from ._client import Client, _live_clients

logger = logging.getLogger("sqreen_mw")

_exit_deadline: float | None = None  # one shutdown_timeout budget for the whole exit sequence


def _exit_budget(client: Client) -> float:
    global _exit_deadline
    if _exit_deadline is None:
        _exit_deadline = time.monotonic() + client.settings["shutdown_timeout"]
    return max(0.1, _exit_deadline - time.monotonic())


def _flush_before_exit() -> None:
    # Runs when the main thread ends, before `atexit`: by `atexit` time the interpreter refuses new executor jobs,
    # and asyncio resolves host names in an executor, so a flush that needs a new connection would fail there.
    for client in list(_live_clients):
        if client._started_pid == os.getpid() and not client._closed:
            try:
                client.flush(_exit_budget(client))
            except Exception:
                logger.exception("sqreen_mw exit flush failed")


def _shutdown_all() -> None:
    for client in list(_live_clients):
        try:
            client.shutdown(_exit_budget(client))
        except Exception:
            logger.exception("sqreen_mw shutdown failed")


def _before_fork_all() -> None:
    for client in list(_live_clients):
        client.flusher.quiesce()


def _after_fork_parent_all() -> None:
    for client in list(_live_clients):
        client.flusher.resume()


def _after_fork_all() -> None:
    global _exit_deadline
    _exit_deadline = None
    for client in list(_live_clients):
        client._after_fork()


_register_thread_exit = getattr(threading, "_register_atexit", None)
if _register_thread_exit is not None:
    # concurrent.futures.thread registers its own shutdown here when first imported; these run last-in first-out,
    # so import it now for ours to run before it.
    import concurrent.futures.thread  # noqa: F401

    _register_thread_exit(_flush_before_exit)
atexit.register(_shutdown_all)
os.register_at_fork(before=_before_fork_all, after_in_parent=_after_fork_parent_all, after_in_child=_after_fork_all)

_previous_sigterm: Any = None
_signal_installed = False


class _DeliverBeforeReraise(list[int]):
    """uvicorn's list of captured signals: before it re-raises them, shut the clients down (see ``_on_sigterm``)."""

    def __reversed__(self) -> Iterator[int]:
        # The default handler is back: another SIGTERM now (uvicorn's supervisor sends one to each worker) would end
        # the process in the middle of delivery. The re-raise that follows ends it anyway.
        restore = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            _shutdown_all()
        finally:
            signal.signal(signal.SIGTERM, restore)
        return super().__reversed__()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    previous = _previous_sigterm
    if callable(previous):
        # A server's own graceful exit (gunicorn workers): requests still running may track events, and the
        # process ends through sys.exit, so atexit delivers them. Shutting down here would refuse them.
        previous(signum, frame)
        # uvicorn loads the app inside its own signal capture when it runs workers (--workers, --reload): the
        # handler found here is uvicorn's, and once the server has stopped uvicorn restores the handler it found
        # before (the default) and re-raises the signal, which ends the process with no atexit. Deliver just before.
        server = getattr(previous, "__self__", None)
        captured = getattr(server, "_captured_signals", None)
        if type(captured) is list and signum in captured:
            server._captured_signals = _DeliverBeforeReraise(captured)  # type: ignore[union-attr]
    elif previous in (signal.SIG_DFL, None):
        _shutdown_all()  # the default action ends the process at once: deliver first
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def install_sigterm_handler() -> None:
    """Flush on SIGTERM, then chain to the handler installed before (the default one ends the process)."""
    global _previous_sigterm, _signal_installed
    if _signal_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        _previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter / unsupported platform
        return
    _signal_installed = True


_current: Client | None = None
_current_lock = threading.Lock()


def get_client() -> Client:
    """The client made by ``init()``, or one made from the environment on first use."""
    client = _current
    if client is None:
        with _current_lock:
            client = _current
            if client is None:
                client = set_client(Client())
    return client


def set_client(client: Client) -> Client:
    global _current
    previous, _current = _current, client
    if previous is not None and previous is not client:
        previous.shutdown()
    return client
