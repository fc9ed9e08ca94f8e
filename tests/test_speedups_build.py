"""Whether the compiled part was built and is used, and that ``SQREEN_MW_PURE_PYTHON=1`` turns it off."""

from __future__ import annotations

import os
import subprocess
import sys

import sqreen_mw
from sqreen_mw._client import Client
from sqreen_mw._native import speedups


def test_compiled_part_is_used_when_built() -> None:
    # CI sets SQREEN_MW_REQUIRE_SPEEDUPS=1: a build that silently fell back to Python fails there.
    pure = os.environ.get("SQREEN_MW_PURE_PYTHON", "") not in ("", "0")
    if os.environ.get("SQREEN_MW_REQUIRE_SPEEDUPS") == "1" and not pure:
        assert speedups is not None, "sqreen_mw._speedups was not built (no C compiler or Python headers?)"
    names = (type(sqreen_mw.track).__name__, type(Client(token=None)._track).__name__)
    assert names == (("function", "method") if speedups is None else ("Front", "Tracker"))


def test_pure_python_switch_turns_it_off() -> None:
    code = ("import sqreen_mw, sqreen_mw._native as n; "
            "print(n.speedups is None, type(sqreen_mw.track).__name__, type(sqreen_mw.Client()._track).__name__)")
    env = dict(os.environ, SQREEN_MW_PURE_PYTHON="1")
    env.pop("SQREEN_TOKEN", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "function", "method"]
