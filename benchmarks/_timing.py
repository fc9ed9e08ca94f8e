"""What the timed benchmarks share: interleaved rounds, the per-request ASGI / WSGI loops, and their text tables.

- ``interleave(loops, n, rounds)`` runs each loop ``n`` times per round, the variants interleaved round by round in
  alternating order (a slow patch of a shared machine hits all of them), ``gc`` disabled during a round and a full
  collection before it, every variant warmed up first; it returns each loop's raw results, round by round.
- ``asgi_loop`` / ``wsgi_loop`` make such a loop of ``n`` requests to an app called in process, a fresh copy of the
  scope / environ per request (a server builds one per request); the loop returns the elapsed time of each clock it
  was given (one ``time.perf_counter_ns`` / ``thread_time_ns`` pair around the whole loop: nothing per request).
- ``tree_cpu(pid)``: the CPU seconds a process and its children have used (a server's workers and threads included);
  ``table`` formats the rows the scripts print.
"""

from __future__ import annotations

import asyncio
import gc
import io
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Clock = Callable[[], int]
#: ``run(n)`` → the elapsed ns of each clock, in order
Loop = Callable[[int], tuple[int, ...]]
WALL: tuple[Clock, ...] = (time.perf_counter_ns,)
WALL_AND_CPU: tuple[Clock, ...] = (time.perf_counter_ns, time.thread_time_ns)


def build() -> str:
    """Which track() the figures are of: the compiled one, or the pure Python (no compiler, SQREEN_MW_PURE_PYTHON)."""
    from sqreen_mw._native import speedups

    return "track() pure Python" if speedups is None else "track() compiled"


def interleave(
    loops: Mapping[str, Callable[[int], T]],
    n: int | Mapping[str, int],
    rounds: int,
    *,
    warmup: int | None = None,
    before: Callable[[], Any] | None = None,
    enter: Callable[[str], Any] | None = None,
    leave: Callable[[str], Any] | None = None,
) -> dict[str, list[T]]:
    """Each loop's result per round, ``rounds`` rounds of ``n`` calls (``n`` may differ per loop).

    ``before()`` runs before every call of a loop, ahead of the collection (a queue drained outside the timed region);
    ``enter(name)`` / ``leave(name)`` around it (a request bound, a client flushed after its round). ``warmup`` calls
    per loop first (default: a fifth of ``n``, 20 at least; 0: none).
    """
    names = list(loops)
    counts = {name: n if isinstance(n, int) else n[name] for name in names}

    def call(name: str, count: int, collect: bool) -> T:
        if before:
            before()
        if collect:
            gc.collect()
        if enter:
            enter(name)
        try:
            if not collect:
                return loops[name](count)
            gc.disable()
            try:
                return loops[name](count)
            finally:
                gc.enable()
        finally:
            if leave:
                leave(name)

    for name in names:
        count = max(counts[name] // 5, 20) if warmup is None else warmup
        if count:
            call(name, count, False)
    out: dict[str, list[T]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(call(name, counts[name], True))
    return out


def asgi_loop(
    app: Any,
    scope: dict[str, Any],
    lp: asyncio.AbstractEventLoop,
    receive: Callable[[], Any],
    send: Callable[[dict[str, Any]], Any],
    clocks: Sequence[Clock] = WALL,
) -> Loop:
    """``run(n)``: n requests ``await app(dict(scope), receive, send)`` on the event loop ``lp``."""

    async def run(n: int) -> tuple[int, ...]:
        starts = [clock() for clock in clocks]
        for _ in range(n):
            await app(dict(scope), receive, send)
        return tuple(clock() - t0 for clock, t0 in zip(clocks, starts, strict=True))

    return lambda n: lp.run_until_complete(run(n))


def wsgi_loop(
    app: Any,
    base: dict[str, Any],
    start_response: Callable[..., Any],
    body: bytes = b"",
    clocks: Sequence[Clock] = WALL,
) -> Loop:
    """``run(n)``: n requests as a WSGI server makes them: the environ copied (a fresh ``wsgi.input`` holding ``body``
    for a POST), ``app(environ, start_response)``, the response iterated and closed."""
    post = base["REQUEST_METHOD"] == "POST"

    def run(n: int) -> tuple[int, ...]:
        bytes_io = io.BytesIO
        starts = [clock() for clock in clocks]
        for _ in range(n):
            env = base.copy()
            if post:
                env["wsgi.input"] = bytes_io(body)
            result = app(env, start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return tuple(clock() - t0 for clock, t0 in zip(clocks, starts, strict=True))

    return run


def first(loop: Loop) -> Callable[[int], int]:
    """The loop's first clock alone."""
    return lambda n: loop(n)[0]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: columns padded to their widest cell, a rule under the headers."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def tree_cpu(pid: int) -> float:
    """utime + stime, in seconds, of the process and all its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = int(fields[11]) + int(fields[12])
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(p, 0) for p in tree) / tick


class Collections:
    """The garbage collections of this process while installed (``gc.callbacks``): per generation, the count and
    the time spent, and the longest pause. ``bench_gc.py`` and ``_wrk_app.py`` (``bench_wrk.py --gc``) report them."""

    def __init__(self) -> None:
        self.runs = {0: 0, 1: 0, 2: 0}
        self.paused = {0: 0.0, 1: 0.0, 2: 0.0}
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        elapsed = time.perf_counter() - self._started
        self.runs[info["generation"]] += 1
        self.paused[info["generation"]] += elapsed
        self.longest = max(self.longest, elapsed)

    def install(self) -> Collections:
        gc.callbacks.append(self)
        return self

    def remove(self) -> None:
        gc.callbacks.remove(self)

    def summary(self) -> dict[str, Any]:
        """Counts, ``paused_ms`` per generation and ``longest_ms``, as JSON can carry them."""
        return {"runs": self.runs, "paused_ms": {g: v * 1000 for g, v in self.paused.items()},
                "longest_ms": self.longest * 1000}
