"""The Event Explorer: the collector's web page at ``/`` where a security team sees and investigates events.

Server-rendered (Starlette + Jinja2 with autoescape), behind a login with the admin token that sets a signed,
``HttpOnly``, ``SameSite=Strict`` session cookie; every form that changes state carries a CSRF token; every page has a
strict ``Content-Security-Policy`` and loads only the collector's own static files (the vendored uPlot chart library
and a small script that shows times in the viewer's time zone).

Mount it with :meth:`Explorer.routes` (``create_app`` does).
"""

from __future__ import annotations

from ._routes import Explorer, ExplorerStorage

__all__ = ["Explorer", "ExplorerStorage"]
