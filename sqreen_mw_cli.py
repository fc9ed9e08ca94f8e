"""The ``sqreen-mw`` command's entry point: loads the package, then runs :func:`sqreen_mw.collector.cli.main`.

It lives outside the package so that a Ctrl-C while Python is still loading it (a second or so on a busy machine)
ends the command with one line and exit status 130, instead of a ``KeyboardInterrupt`` traceback from an import.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from sqreen_mw.collector.cli import main as run
    except KeyboardInterrupt:
        print("sqreen-mw: interrupted while starting", file=sys.stderr)
        return 130
    return run()
