"""The compiled twins of track()'s hottest steps (``_speedups.c``), or None.

None when the package was installed without a C compiler, or when ``SQREEN_MW_PURE_PYTHON=1`` is set: sqreen_mw
then runs the Python code the compiled steps stand for, which gives the same results.
"""

from __future__ import annotations

import os

__all__ = ["speedups"]

try:
    if os.environ.get("SQREEN_MW_PURE_PYTHON", "") not in ("", "0"):
        raise ImportError("SQREEN_MW_PURE_PYTHON is set")
    from . import _speedups as speedups
except ImportError:  # built without a compiler, or turned off: the pure-Python code
    speedups = None  # type: ignore[assignment]
