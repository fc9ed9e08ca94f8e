"""The public door: the names users import are pinned."""

from __future__ import annotations

import subprocess
import sys

import sqreen_mw


def test_exported_members() -> None:
    assert sorted(sqreen_mw.__all__) == sorted([
        "Client", "ConfigurationError", "InvalidEvent", "SqreenError", "UserBlocked", "__version__",
        "auth_track", "flush", "identify", "init", "shutdown", "signup_track", "track",
    ])
    for name in sqreen_mw.__all__:
        assert hasattr(sqreen_mw, name), name


def test_exception_tree() -> None:
    assert issubclass(sqreen_mw.InvalidEvent, ValueError)
    for exc in (sqreen_mw.InvalidEvent, sqreen_mw.ConfigurationError, sqreen_mw.UserBlocked):
        assert issubclass(exc, sqreen_mw.SqreenError)
    assert issubclass(sqreen_mw.UserBlocked, Exception)


def test_import_does_not_import_frameworks() -> None:
    code = "import sys, sqreen_mw, sqreen_mw.asgi, sqreen_mw.wsgi, sqreen_mw.testing; " \
           "print(sorted(m for m in ('flask', 'django', 'fastapi', 'uvicorn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_framework_adapters_name_the_extra_to_install() -> None:
    for module, framework in (("sqreen_mw.flask", "flask"), ("sqreen_mw.django", "django")):
        code = f"import sys; sys.modules[{framework!r}] = None\ntry:\n    import {module}\n" \
               f"except ImportError as exc:\n    print(exc)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
        assert f"pip install 'sqreen_mw[{framework}]'" in out.stdout, out.stdout + out.stderr
        assert f"from a checkout of sqreen_mw: pip install -e '.[{framework}]'" in out.stdout, out.stdout
