"""The ``sqreen-mw`` entry point: a Ctrl-C while Python is still loading the package is one line, not a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

# A real SIGINT, delivered while Python imports the command's module (where a Ctrl-C right after starting lands).
_INTERRUPTED_WHILE_LOADING = """
import importlib.abc, os, signal, sys

class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "sqreen_mw.collector.cli":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.modules.pop("sqreen_mw.collector.cli", None)
sys.meta_path.insert(0, Interrupt())
import sqreen_mw_cli
sys.exit(sqreen_mw_cli.main())
"""


def test_a_ctrl_c_while_the_command_loads_ends_it_with_one_line() -> None:
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_WHILE_LOADING], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "sqreen-mw: interrupted while starting"


def test_the_installed_command_runs_through_the_entry_point() -> None:
    command = shutil.which("sqreen-mw")
    if command is None:
        pytest.skip("sqreen-mw is not on PATH (the package is not installed in this environment)")
    done = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    with open(command, encoding="utf-8") as script:
        assert "sqreen_mw_cli" in script.read()
