"""FastAPI example: logins, signups, password resets and orders recorded as security events by sqreen_mw.

Run it from the repository root (see README.md)::

    SQREEN_TOKEN=KEY uvicorn examples.fastapi_app.app:app
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import sqreen_mw
from sqreen_mw.asgi import SqreenMiddleware

from .store import Store, bearer_token, issue_token, normalize_email, verify_token

# Reads SQREEN_TOKEN and SQREEN_URL from the environment. Without a token, calls are validated but nothing is sent.
sqreen_mw.init(app_name="fastapi-example")

store = Store()
app = FastAPI(title="sqreen_mw FastAPI example")
app.add_middleware(SqreenMiddleware)  # also flushes queued events at lifespan shutdown

Email = Annotated[str, Form(pattern=r"^[^@\s]+@[^@\s]+$")]


class OrderIn(BaseModel):
    model_config = ConfigDict(strict=True)

    item: str = Field(min_length=1)
    quantity: int = Field(ge=1)
    card_number: str


async def current_user(authorization: Annotated[str | None, Header()] = None) -> str:
    """The email a valid bearer token names, made the user of the request's events; 401 without one."""
    token = bearer_token(authorization)
    email = verify_token(token) if token else None
    if email is None:
        raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
    sqreen_mw.identify({"email": email})
    return email


User = Annotated[str, Depends(current_user)]


@app.exception_handler(StarletteHTTPException)
async def error_body(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Answer errors as ``{"error": ...}``, like the Flask and Django examples."""
    return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)


# login and signup are sync: hashing blocks, so FastAPI runs them in its thread pool. sqreen_mw's request context
# follows them there.
@app.post("/login")
def login(email: Annotated[str, Form()], password: Annotated[str, Form()]) -> dict[str, str]:
    email = normalize_email(email)
    if not store.check_password(email, password):
        sqreen_mw.auth_track(False, email=email)
        raise HTTPException(401, "invalid credentials")
    sqreen_mw.auth_track(True, email=email)  # also identifies the user for the rest of this request
    return {"token": issue_token(email)}


@app.post("/signup", status_code=201)
def signup(email: Email, password: Annotated[str, Form(min_length=8)]) -> dict[str, str]:
    email = normalize_email(email)
    if not store.add_user(email, password):
        raise HTTPException(409, "email already registered")
    sqreen_mw.signup_track(email=email)
    return {"token": issue_token(email)}


@app.post("/password/reset", status_code=202)
async def password_reset(email: Email) -> dict[str, str]:
    # A real app would email a reset link if the account exists; the answer is the same either way.
    sqreen_mw.track("password.reset", properties={"method": "email"})
    return {"status": "accepted"}


@app.post("/orders", status_code=201)
async def place_order(body: OrderIn, email: User) -> dict[str, Any]:
    order = store.add_order(email, body.item, body.quantity)
    # FastAPI has already read the body; collect_body gets it from the middleware's copy. The card number in it is
    # scrubbed before the event leaves the process.
    sqreen_mw.track("order.placed", properties={"item": order.item, "quantity": order.quantity}, collect_body=True)
    return order.to_json()


@app.get("/orders/{order_id}")
async def view_order(order_id: int, email: User) -> dict[str, Any]:
    # Tracked before the lookup: someone walking through other people's order ids is what a playbook should catch.
    sqreen_mw.track("order.viewed", properties={"order_id": order_id})
    order = store.get_order(email, order_id)
    if order is None:
        raise HTTPException(404, "order not found")
    return order.to_json()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
