"""sqreen_mw set-up, called from settings.py."""

from __future__ import annotations

import functools

import sqreen_mw


@functools.cache  # settings can be executed twice in one process (imported under two names, reloaded by tests)
def init_sqreen() -> sqreen_mw.Client:
    """Configure sqreen_mw once per process from SQREEN_TOKEN and SQREEN_URL; without a token nothing is sent."""
    return sqreen_mw.init(app_name="django-example")
