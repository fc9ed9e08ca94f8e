"""Flask example: logins, signups, password resets and orders recorded as security events by sqreen_mw.

Run it from the repository root (see README.md)::

    SQREEN_TOKEN=KEY gunicorn -w 2 --preload 'examples.flask_app.app:app'
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue

import sqreen_mw
from sqreen_mw.flask import instrument

from .store import Store, bearer_token, issue_token, normalize_email, order_error, verify_token

# Reads SQREEN_TOKEN and SQREEN_URL from the environment. Without a token, calls are validated but nothing is sent.
sqreen_mw.init(app_name="flask-example")

bp = Blueprint("example", __name__)
View = Callable[..., ResponseReturnValue]


def store() -> Store:
    found: Store = current_app.extensions["example_store"]
    return found


@bp.before_app_request
def load_user() -> None:
    """Name the user of every request with a valid token: the request's later events carry their email."""
    token = bearer_token(request.headers.get("Authorization"))
    g.email = verify_token(token) if token else None
    if g.email is not None:
        sqreen_mw.identify({"email": g.email})


def token_required(view: View) -> View:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        if g.email is None:
            return jsonify(error="authentication required"), 401, {"WWW-Authenticate": "Bearer"}
        return view(*args, **kwargs)

    return wrapper


@bp.post("/login")
def login() -> ResponseReturnValue:
    email, password = normalize_email(request.form.get("email", "")), request.form.get("password", "")
    if not email or not password:
        return jsonify(error="email and password are required"), 422
    if not store().check_password(email, password):
        sqreen_mw.auth_track(False, email=email)
        return jsonify(error="invalid credentials"), 401
    sqreen_mw.auth_track(True, email=email)  # also identifies the user for the rest of this request
    return jsonify(token=issue_token(email))


@bp.post("/signup")
def signup() -> ResponseReturnValue:
    email, password = normalize_email(request.form.get("email", "")), request.form.get("password", "")
    if "@" not in email or len(password) < 8:
        return jsonify(error="an email and a password of at least 8 characters are required"), 422
    if not store().add_user(email, password):
        return jsonify(error="email already registered"), 409
    sqreen_mw.signup_track(email=email)
    return jsonify(token=issue_token(email)), 201


@bp.post("/password/reset")
def password_reset() -> ResponseReturnValue:
    if "@" not in request.form.get("email", ""):
        return jsonify(error="email is required"), 422
    # A real app would email a reset link if the account exists; the answer is the same either way.
    sqreen_mw.track("password.reset", properties={"method": "email"})
    return jsonify(status="accepted"), 202


@bp.post("/orders")
@token_required
def place_order() -> ResponseReturnValue:
    data: Any = request.get_json(silent=True)  # the app reads its body as usual: the middleware keeps a copy
    error = order_error(data)
    if error is not None:
        return jsonify(error=error), 422
    order = store().add_order(g.email, data["item"], data["quantity"])
    # collect_body attaches the JSON body; the card number in it is scrubbed before the event leaves the process.
    sqreen_mw.track("order.placed", properties={"item": order.item, "quantity": order.quantity}, collect_body=True)
    return jsonify(order.to_json()), 201


@bp.get("/orders/<int:order_id>")
@token_required
def view_order(order_id: int) -> ResponseReturnValue:
    # Tracked before the lookup: someone walking through other people's order ids is what a playbook should catch.
    sqreen_mw.track("order.viewed", properties={"order_id": order_id})
    order = store().get_order(g.email, order_id)
    if order is None:
        return jsonify(error="order not found"), 404
    return jsonify(order.to_json())


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok")


def create_app() -> Flask:
    """A new app with its own in-memory store, wrapped in sqreen_mw's WSGI middleware."""
    app = Flask(__name__)
    app.extensions["example_store"] = Store()
    app.register_blueprint(bp)
    return instrument(app)


app = create_app()
