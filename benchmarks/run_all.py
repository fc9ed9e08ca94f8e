"""The whole performance suite in one command: every benchmark script in turn, each printing its tables.

Run ``python benchmarks/run_all.py --quick`` (about 6 minutes on a quiet 2-core machine) or without ``--quick`` (the
scripts' full runs: about 40 minutes; the soak alone takes 3.5). ``--only sdk,peers`` / ``--skip soak,postgres``
choose scripts by the names below; ``--plots DIR`` has ``bench_peers.py`` write its PNG charts there (they are not
kept in the repository); ``--list`` prints the commands without running them. Each script runs in its own process,
bounded by a time limit (killed past it, its process group included, and reported as such); the scripts' own output
is passed through as it comes, and a summary at the end lists each command, its exit status and its wall and CPU time
(the child's user + system CPU, its own children included). The load average is printed before each script: the
figures of a busy machine are ratios within one script's run, not absolutes.

Everything stays on loopback; the PostgreSQL benchmark starts a throwaway server (Debian's binaries) and is skipped,
like every script, when what it needs is missing (its own message says why). The scripts are those of
``benchmarks/README.md``; the callgrind modes (``bench_sdk.py --callgrind``, ``bench_peers.py --callgrind``,
``callgrind_collector.py``: several minutes each under valgrind) run with ``--callgrind``. The scripts import the
sqreen_mw of this checkout (its root is put first on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _timing import table  # noqa: E402


@dataclass(frozen=True)
class Script:
    name: str
    file: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ("--quick",)
    limit_s: int = 900  # full run; quick runs get a third, 120 s at least
    callgrind: bool = False  # run only with --callgrind


SUITE = (
    Script("sdk", "bench_sdk.py"),
    Script("peers", "bench_peers.py"),
    Script("wrk", "bench_wrk.py"),
    Script("gc", "bench_gc.py"),
    Script("blocking", "bench_blocking.py"),
    Script("protect", "bench_protect.py", quick=("--attacks", "10")),
    Script("collector", "bench_collector.py"),
    Script("playbooks", "bench_playbooks.py"),
    Script("backtest", "bench_backtest.py", quick=("--events", "100000")),
    Script("explorer", "bench_explorer.py", quick=("--events", "100000"), limit_s=1200),
    Script("import", "bench_import.py"),
    Script("postgres", "bench_postgres.py"),
    Script("soak", "soak.py", quick=("--minutes", "1", "--interval", "1"), limit_s=600),
    Script("sdk-callgrind", "bench_sdk.py", ("--callgrind",), ("--callgrind", "--quick"), 1200, True),
    Script("peers-callgrind", "bench_peers.py", ("--callgrind",), ("--callgrind", "--quick"), 1800, True),
    Script("collector-callgrind", "callgrind_collector.py", (), (), 1200, True),
)


def command(script: Script, quick: bool, plots: Path | None) -> list[str]:
    args = [sys.executable, str(HERE / script.file), *(script.quick if quick else script.full)]
    if plots is not None and script.name == "peers":
        args += ["--plots", str(plots)]
    return args


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the script's process group (the scripts stop their servers on it), SIGKILL 30 s later."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run(args: list[str], limit: float) -> tuple[str, float, float]:
    """(status, wall s, CPU s) of one script, its output passed through."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # this checkout's sqreen_mw first, whatever copy the environment has installed
    path = os.pathsep.join(filter(None, (str(HERE.parent), os.environ.get("PYTHONPATH"))))
    proc = subprocess.Popen(  # noqa: S603 - the suite's own scripts
        args, cwd=HERE.parent, env={**os.environ, "PYTHONPATH": path}, start_new_session=True
    )
    try:
        code = proc.wait(timeout=limit)
        status = "ok" if code == 0 else f"exit {code}"
    except subprocess.TimeoutExpired:
        stop(proc)
        status = f"killed after {limit:.0f} s"
    except BaseException:  # interrupted (SIGTERM, Ctrl-C): the script and its servers go too
        stop(proc)
        raise
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return status, wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    names = [s.name for s in SUITE]
    parser.add_argument("--quick", action="store_true", help="each script's quick mode")
    parser.add_argument("--only", help=f"comma-separated scripts among {','.join(names)}")
    parser.add_argument("--skip", default="", help="comma-separated scripts to leave out")
    parser.add_argument("--callgrind", action="store_true", help="also the callgrind modes (valgrind; slow)")
    parser.add_argument("--plots", type=Path, metavar="DIR", help="bench_peers.py writes its PNG charts into DIR")
    parser.add_argument("--list", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args()
    chosen = set(args.only.split(",")) if args.only else {s.name for s in SUITE if args.callgrind or not s.callgrind}
    unknown = (chosen | set(filter(None, args.skip.split(",")))) - set(names)
    if unknown:
        parser.error(f"unknown script(s) {', '.join(sorted(unknown))}: choose among {', '.join(names)}")
    chosen -= set(args.skip.split(","))
    scripts = [s for s in SUITE if s.name in chosen]
    rows = []
    started = time.perf_counter()
    for script in scripts:
        cmd = command(script, args.quick, args.plots)
        shown = " ".join(["python", str(Path(cmd[1]).relative_to(HERE.parent)), *cmd[2:]])
        if args.list:
            print(shown)
            continue
        limit = max(120, script.limit_s // 3) if args.quick else script.limit_s
        load = os.getloadavg()
        print(f"\n=== {shown}  (load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; limit {limit} s)", flush=True)
        status, wall, cpu = run(cmd, limit)
        rows.append((shown, status, f"{wall:.0f}", f"{cpu:.0f}", f"{load[0]:.2f}"))
    if args.list:
        return 0
    load = os.getloadavg()
    print(f"\n=== suite: {len(rows)} script(s), {time.perf_counter() - started:.0f} s; "
          f"load at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(table(("command", "status", "wall s", "CPU s", "load at start"), rows))
    return 0 if all(r[1] == "ok" for r in rows) else 1


if __name__ == "__main__":
    # SIGTERM ends through sys.exit: the running script (in a session of its own) is stopped on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())
