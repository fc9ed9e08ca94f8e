"""Progress of an import: a bar on a terminal (tqdm, the ``import`` extra), plain periodic lines otherwise.

Both show rows done, rows per second, the ETA (from the bytes read out of the file's size, when it has one) and
the rows rejected so far. Messages about single rows go through :meth:`Progress.message`, so they do not tear the bar.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Plain lines every ``every`` seconds (and none at all when ``quiet``)."""

    def __init__(self, size: int | None, *, every: float = 5.0, quiet: bool = False, out: IO[str] | None = None):
        self.size = size
        self.every = every
        self.quiet = quiet
        self.out = out or sys.stderr
        self.started = time.monotonic()
        self._next = self.started + every
        self._next_retry = self.started
        self.retry_every = every
        self._retry_lock = threading.Lock()

    def message(self, text: str) -> None:
        """A line about one row (a rejection): shown even when quiet."""
        print(text, file=self.out, flush=True)

    def status(self, rows: int, position: int, rejected: int) -> str:
        """``12000 rows, 25000 rows/s, 40% ETA 0:00:03, 2 rejected``."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        text = f"{rows} rows, {rows / elapsed:.0f} rows/s"
        if self.size and position:
            fraction = min(position / self.size, 1.0)
            text += f", {fraction:.0%} ETA {_clock(elapsed * (1 - fraction) / fraction)}"
        return f"{text}, {rejected} rejected"

    def update(self, rows: int, position: int, rejected: int) -> None:
        """Called after each batch read."""
        now = time.monotonic()
        if self.quiet or now < self._next:
            return
        self._next = now + self.every
        print(f"import: {self.status(rows, position, rejected)}", file=self.out, flush=True)

    def retrying(self, reason: str, left: float) -> None:
        """Called by the senders while the collector does not answer: a line at most every ``every`` seconds."""
        now = time.monotonic()
        with self._retry_lock:
            if self.quiet or now < self._next_retry:
                return
            self._next_retry = now + self.retry_every
        self.message(f"import: the collector is unreachable or busy ({reason}); retrying for {max(left, 0):.0f} s more")

    def close(self, rows: int, position: int, rejected: int, done: bool = True) -> None:
        """The last line: ``(done reading)`` when the whole input was read, else ``(stopped reading)``."""
        if not self.quiet:
            end = "done reading" if done else "stopped reading"
            print(f"import: {self.status(rows, position, rejected)} ({end})", file=self.out, flush=True)


class Bar(Progress):
    """A tqdm bar over the file's bytes (its fraction and ETA), labelled with rows, rate and rejections.

    ``37%|█████     | 12,000 rows [00:01<00:02, 9,850 rows/s, rejected 3]``; without a size (stdin), no bar and
    no ETA: ``12,000 rows [00:01, 9,850 rows/s, rejected 3]``. The rows go in tqdm's description and the rate and
    rejections in its postfix (which tqdm writes after ", "), so tqdm's own count, in bytes, is never shown.
    """

    def __init__(self, size: int | None, *, out: IO[str] | None = None) -> None:
        super().__init__(size, every=0.2, out=out)
        self.retry_every = 5.0
        from tqdm import tqdm

        self._bar: Any = tqdm(
            total=size, file=self.out, dynamic_ncols=True, desc=_rows_text(0), postfix=_rate_text(0, 0.0, 0),
            bar_format="{percentage:3.0f}%|{bar}| {desc} [{elapsed}<{remaining}{postfix}]"
            if size else "{desc} [{elapsed}{postfix}]",
        )  # fmt: skip
        self._position = 0

    def message(self, text: str) -> None:
        self._bar.write(text, file=self.out)

    def update(self, rows: int, position: int, rejected: int) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.every
        self._advance(rows, position, rejected)

    def _advance(self, rows: int, position: int, rejected: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self._bar.set_description_str(_rows_text(rows), refresh=False)
        self._bar.set_postfix_str(_rate_text(rows, elapsed, rejected), refresh=False)
        if position > self._position:
            self._bar.update(position - self._position)
            self._position = position
        else:
            self._bar.refresh()

    def close(self, rows: int, position: int, rejected: int, done: bool = True) -> None:
        self._advance(rows, position, rejected)
        self._bar.close()


def _rows_text(rows: int) -> str:
    return f"{rows:,} rows"


def _rate_text(rows: int, elapsed: float, rejected: int) -> str:
    return f"{rows / elapsed if elapsed else 0:,.0f} rows/s, rejected {rejected:,}"


def make_progress(size: int | None, *, quiet: bool, every: float, out: IO[str] | None = None) -> Progress:
    """A bar when ``out`` is a terminal and tqdm is installed, else plain lines."""
    out = out or sys.stderr
    if not quiet and out.isatty():
        try:
            return Bar(size, out=out)
        except ImportError:
            pass
    return Progress(size, every=every, quiet=quiet, out=out)
