"""Ctrl-C during an import: ``KeyboardInterrupt`` as usual, except while a batch changes hands.

Handing a batch to the senders and starting the next one are two steps; a ``KeyboardInterrupt`` raised between
them would leave the reader unable to tell whether the batch was queued, and the stop that follows would send it
again as the batch being filled. Inside :meth:`Interrupts.held` a Ctrl-C is only noted (:attr:`Interrupts.pending`,
which a wait can poll to give up early), and raised when the block ends; so is one whose ``KeyboardInterrupt`` was
swallowed where it landed (a finalizer), at the next held block. Inside :meth:`Interrupts.deferred` (the
summary) a Ctrl-C is only noted too, and left for the next held block: the wait for the logout that follows.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any


class Interrupts:
    """While entered (in the main thread, when SIGINT has Python's default handler), SIGINT goes through
    :meth:`_handle`; elsewhere, or when SIGINT is ignored or handled by someone else, nothing changes."""

    def __init__(self) -> None:
        self.pending = False
        self._holding = 0
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> Interrupts:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Noted even when raised: the KeyboardInterrupt may land in a weakref callback or a finalizer, where Python
        # prints it and goes on. Whoever acts on it calls handled(); one still pending then was swallowed, and the
        # next held block raises it again.
        self.pending = True
        if self._holding:
            return
        raise KeyboardInterrupt

    def handled(self) -> None:
        """The KeyboardInterrupt raised for the last Ctrl-C was caught and acted on."""
        self.pending = False

    def is_pending(self) -> bool:
        return self.pending

    def held(self) -> _Held:
        """A block in which a Ctrl-C is raised as ``KeyboardInterrupt`` only when the block ends."""
        return _Held(self)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A block that a Ctrl-C does not interrupt: noted, it is raised at the end of the next held block (or
        never). Where :meth:`_handle` is not installed, SIGINT is ignored meanwhile."""
        if not self._installed:
            with ignoring_sigint():
                yield
            return
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1


@contextlib.contextmanager
def ignoring_sigint() -> Iterator[None]:
    """SIGINT ignored for the block (in the main thread; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Held:
    __slots__ = ("_interrupts",)

    def __init__(self, interrupts: Interrupts) -> None:
        self._interrupts = interrupts

    def __enter__(self) -> None:
        self._interrupts._holding += 1

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        interrupts = self._interrupts
        interrupts._holding -= 1
        if not interrupts._holding and interrupts.pending:
            interrupts.pending = False
            if kind is None:  # else the block's own exception ends the import
                raise KeyboardInterrupt
