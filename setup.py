"""The optional compiled part of sqreen_mw (``sqreen_mw/_speedups.c``); everything else is in pyproject.toml.

Without a C compiler (or with ``SQREEN_MW_PURE_PYTHON=1`` at install time) the build goes on without it and
sqreen_mw runs its pure-Python code, which does the same.
"""

import os

from setuptools import Extension, setup

extensions = []
if os.environ.get("SQREEN_MW_PURE_PYTHON", "") in ("", "0"):
    extensions.append(Extension("sqreen_mw._speedups", ["sqreen_mw/_speedups.c"], optional=True,
                                extra_compile_args=["-O2"]))
setup(ext_modules=extensions)
