"""Flask helper: ``sqreen_mw.flask.instrument(app)`` wraps ``app.wsgi_app`` in the WSGI middleware.

Inside a Flask request the default properties also carry the view arguments (``params.path``) and the form or JSON
fields the view already parsed (``params.form`` / ``params.json``).
"""

from __future__ import annotations

try:
    from flask import Flask
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("sqreen_mw.flask needs Flask: pip install 'sqreen_mw[flask]' "
                      "(from a checkout of sqreen_mw: pip install -e '.[flask]')") from exc

from ._client import Client
from ._exceptions import UserBlocked
from .wsgi import SqreenMiddleware

__all__ = ["SqreenMiddleware", "instrument"]


def instrument(app: Flask, *, client: Client | None = None) -> Flask:
    """Wrap ``app.wsgi_app`` with :class:`sqreen_mw.wsgi.SqreenMiddleware` and return the app.

    :param app: the Flask application.
    :param client: the client to use; default the one ``sqreen_mw.init()`` made.
    """
    app.wsgi_app = SqreenMiddleware(app.wsgi_app, client=client)  # type: ignore[method-assign]
    # A blocked user's UserBlocked left unhandled by the view is the expected way out, not an error: without a
    # handler Flask logs it with a traceback as "Exception on /login" and renders a 500, which the middleware then
    # replaces with the block response. An app's own handler for UserBlocked (registered later) takes precedence.
    if UserBlocked not in app.error_handler_spec[None][None]:
        app.register_error_handler(UserBlocked, _blocked)
    return app


def _blocked(exc: UserBlocked) -> tuple[str, int]:
    return "", 403  # replaced by the block response in the middleware (the request's context is flagged)
