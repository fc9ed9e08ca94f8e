"""The per-request block check with 0 and with 10,000 blocked IPs and networks (DESIGN §9: ≤ +0.3 µs).

Run ``python benchmarks/bench_blocking.py`` (about 10 s, plus a few minutes for the callgrind counts; ``--quick``
fewer rounds and checks, ``--no-callgrind`` skips the instruction counts).

What is measured is the check a middleware runs per request once it knows the client IP, in one function::

    actions = client.actions                      # one attribute: the snapshot the flusher swapped in
    if actions.has_ip_blocks:                     # no IP block: nothing else runs
        block = actions.ip_block(client_ip)     # reads time.time() only when a block covers the address

with ``actions`` holding no block, then 10,000 blocks (``--blocks``): a mix of IPv4 /32 (40 %), /24 (25 %), /16
(5 %), IPv6 /64 (15 %) and /128 (15 %), some nested in others, some with an expiry. The client IPs cycle through 1,000
addresses (IPv4 and IPv6, 10 % of them blocked), as a server sees returning clients; the **cold** row gives every
request a new address (a flood of distinct clients: the address text is parsed, not found in the cache).

Wall time: median of interleaved rounds (``time.perf_counter_ns`` around a loop of ``n`` checks, gc disabled); the
Δ is the median of per-round paired differences against the 0-block loop. Instructions: each variant runs under
``valgrind --tool=callgrind`` twice, with ``n`` and with 0 checks after the same setup; the difference divided by
``n`` is the per-check count, free of the setup and of the interpreter's start-up.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from sqreen_mw._blocking import EMPTY, Actions, build_actions

US = 1000.0
BUDGET_NS = 300.0  # DESIGN §9: the block check ≤ +0.3 µs with 10,000 blocks


def make_actions(count: int, seed: int = 7) -> tuple[Actions, list[str]]:
    """A snapshot of ``count`` IP blocks (the mix of the module docstring) and 1,000 client IPs, 10 % blocked."""
    rng = random.Random(seed)
    entries: list[dict[str, object]] = []
    blocked: list[str] = []
    expiry = "2100-01-01T00:00:00Z"
    for i in range(count):
        pick = rng.random()
        if pick < 0.40:
            net = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}/32"
        elif pick < 0.65:
            net = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.0/24"
        elif pick < 0.70:
            net = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.0.0/16"
        elif pick < 0.85:
            net = f"2001:db8:{rng.randrange(65536):x}:{rng.randrange(65536):x}::/64"
        else:
            net = str(ipaddress.IPv6Address((0x2001_0DB8 << 96) | rng.getrandbits(96))) + "/128"
        entries.append({"id": f"b{i}", "action": "block_ip", "value": net,
                        "expires_at": expiry if i % 3 else None})
        if len(blocked) < 100 and rng.random() < 0.05:
            network = ipaddress.ip_network(net)
            blocked.append(str(network.network_address + rng.randrange(network.num_addresses)))
    actions = build_actions(entries, 1)
    clients = list(blocked)
    while len(clients) < 1000:
        if rng.random() < 0.8:
            clients.append(f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}")
        else:
            clients.append(str(ipaddress.IPv6Address((0x2001_0DB8 << 96) | rng.getrandbits(96))))
    rng.shuffle(clients)
    return actions, clients


class Holder:
    """Stands for the client: the middleware reads the snapshot from one attribute."""

    def __init__(self, actions: Actions) -> None:
        self.actions = actions


def check_loop(holder: Holder, clients: list[str], n: int) -> int:
    """``n`` block checks as the middleware runs them; returns how many were blocked (so nothing is optimised out)."""
    hits = 0
    m = len(clients)
    for i in range(n):
        client_ip = clients[i % m]
        actions = holder.actions
        if actions.has_ip_blocks and actions.ip_block(client_ip) is not None:
            hits += 1
    return hits


def cold_clients(n: int) -> list[str]:
    """``n`` distinct addresses (198.18.0.0/15, found in a block or not: the row measures the parse and bisection)."""
    return [f"198.{18 + (i >> 16) % 2}.{(i >> 8) & 255}.{i & 255}" for i in range(n)]


def rounds_of(fn: Callable[[int], object], n: int, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        t0 = time.perf_counter_ns()
        fn(n)
        out.append((time.perf_counter_ns() - t0) / n)
        gc.enable()
    return out


def interleaved(a: Callable[[int], object], b: Callable[[int], object], n: int, rounds: int
                ) -> tuple[list[float], list[float]]:
    """Per-round ns per call of ``a`` and ``b``, alternating which runs first."""
    ra: list[float] = []
    rb: list[float] = []
    a(n // 10)
    b(n // 10)  # warm-up
    for r in range(rounds):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        x = rounds_of(first, n, 1)[0]
        y = rounds_of(second, n, 1)[0]
        if r % 2 == 0:
            ra.append(x)
            rb.append(y)
        else:
            ra.append(y)
            rb.append(x)
    return ra, rb


# --- callgrind ---------------------------------------------------------------------------------------------------


def _child(variant: str, count: int, n: int) -> None:
    """Runs under valgrind: the same setup for every ``n``, then ``n`` checks."""
    actions, clients = make_actions(count) if variant != "empty" else (EMPTY, make_actions(0)[1])
    if variant == "cold":
        clients = cold_clients(max(n, 1))
    holder = Holder(actions)
    check_loop(holder, clients, len(clients) if variant != "cold" else 0)  # warm the address cache
    check_loop(holder, clients, n)


def instructions(variant: str, count: int, n: int) -> float | None:
    """Instructions per check: callgrind total with ``n`` checks minus the total with none, over ``n``."""
    if shutil.which("valgrind") is None:
        return None
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for runs in (0, n):
            out = os.path.join(tmp, f"cg.{runs}")
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
                   "--child", variant, str(count), str(runs)]
            subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"})  # noqa: S603
            with open(out) as f:
                match = re.search(r"^(?:summary|totals):\s+(\d+)", f.read(), re.M)
            if match is None:
                return None
            totals.append(int(match.group(1)))
    return (totals[1] - totals[0]) / n


# --- report ------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (about 10 s)")
    parser.add_argument("--blocks", type=int, default=10_000, help="blocked IPs and networks (default 10,000)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "BLOCKS", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    rounds = args.rounds or (7 if args.quick else 21)
    n = 20_000 if args.quick else 100_000

    t0 = time.perf_counter()
    full, clients = make_actions(args.blocks)
    build_s = time.perf_counter() - t0
    empty = Holder(EMPTY)
    loaded = Holder(full)
    blocked = check_loop(loaded, clients, len(clients))

    base, with_blocks = interleaved(lambda k: check_loop(empty, clients, k), lambda k: check_loop(loaded, clients, k),
                                    n, rounds)
    deltas = [b - a for a, b in zip(base, with_blocks, strict=True)]
    cold = cold_clients(n)
    cold_rounds = []
    for _ in range(max(3, rounds // 3)):
        full._found.clear()  # every address new to the snapshot's answer cache
        cold_rounds.extend(rounds_of(lambda k: check_loop(loaded, cold, k), n, 1))

    print(f"sqreen_mw block check — Python {sys.version.split()[0]}, {args.blocks:,} blocks "
          f"({len(full._starts):,} segments), built in {build_s * 1000:.0f} ms; "
          f"{blocked} of {len(clients)} client IPs blocked; {rounds} rounds x {n:,} checks")
    rows = [
        ("0 blocks (has_ip_blocks is False)", statistics.median(base), base),
        (f"{args.blocks:,} blocks, returning clients", statistics.median(with_blocks), with_blocks),
        (f"{args.blocks:,} blocks, every client new (cold)", statistics.median(cold_rounds), cold_rounds),
    ]
    print(f"{'check':48} {'ns/check':>9} {'spread':>15}")
    for name, value, spread in rows:
        print(f"{name:48} {value:9.1f} {min(spread):7.1f}..{max(spread):<7.1f}")
    delta = statistics.median(deltas)
    verdict = "PASS" if delta <= BUDGET_NS else "OVER"
    print(f"Δ {args.blocks:,} blocks vs 0: {delta:+.1f} ns (budget ≤ +{BUDGET_NS:.0f} ns) {verdict}; "
          f"paired spread {min(deltas):+.1f}..{max(deltas):+.1f}")

    if not args.no_callgrind:
        k = 2_000 if args.quick else 10_000
        counts = {v: instructions(v, args.blocks, k) for v in ("empty", "loaded", "cold")}
        if counts["empty"] is None:
            print("instructions: valgrind not found (apt-get install valgrind)")
        else:
            print(f"instructions per check (callgrind, {k:,} checks): 0 blocks {counts['empty']:.0f}, "
                  f"{args.blocks:,} blocks {counts['loaded']:.0f} "
                  f"(Δ {counts['loaded'] - counts['empty']:+.0f}), cold {counts['cold']:.0f}")  # type: ignore[operator]


if __name__ == "__main__":
    main()
