"""In-memory users, tokens and orders for the example (no database: each worker process keeps its own copy).

The same file ships with every example app. Nothing here knows about sqreen_mw.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

SEED_USERS = (("alice@example.com", "wonderland"), ("bob@example.com", "builder"))
# Tokens are signed rather than stored, so every worker of a multi-process server accepts them.
SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "dev-only-secret-change-me").encode()
TOKEN_TTL = 3600  # seconds
ITERATIONS = 100_000  # PBKDF2-SHA256 rounds, kept low so the example starts fast (OWASP suggests 600,000)


def hash_password(password: str, salt: bytes | None = None) -> tuple[bytes, bytes]:
    """Return ``(salt, hash)``; a new random salt unless one is given."""
    salt = salt or secrets.token_bytes(16)
    return salt, hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ITERATIONS)


@dataclass(frozen=True, slots=True)
class Order:
    order_id: int
    owner: str
    item: str
    quantity: int

    def to_json(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "item": self.item, "quantity": self.quantity}


class Store:
    """Users (email -> salted hash) and orders, seeded with alice, bob and one order of alice's."""

    def __init__(self) -> None:
        self._users: dict[str, tuple[bytes, bytes]] = {}
        self._orders: dict[int, Order] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._dummy = hash_password("no such user")
        for email, password in SEED_USERS:
            self.add_user(email, password)
        self.add_order("alice@example.com", "teapot", 1)

    def add_user(self, email: str, password: str) -> bool:
        """Register a user; False when the email is taken."""
        salted = hash_password(password)
        with self._lock:
            if email in self._users:
                return False
            self._users[email] = salted
        return True

    def check_password(self, email: str, password: str) -> bool:
        # Hash even for unknown emails so the response time does not tell which emails exist.
        salt, expected = self._users.get(email, self._dummy)
        return hmac.compare_digest(hash_password(password, salt)[1], expected) and email in self._users

    def add_order(self, owner: str, item: str, quantity: int) -> Order:
        with self._lock:
            order = Order(next(self._ids), owner, item, quantity)
            self._orders[order.order_id] = order
        return order

    def get_order(self, owner: str, order_id: int) -> Order | None:
        """The order if it exists and belongs to ``owner``."""
        order = self._orders.get(order_id)
        return order if order is not None and order.owner == owner else None


def normalize_email(email: str) -> str:
    return email.strip().lower()


def order_error(data: Any) -> str | None:
    """Why a decoded JSON order body is unusable, or None when it is fine."""
    if not isinstance(data, dict):
        return "expected a JSON object"
    if not isinstance(data.get("item"), str) or not data["item"]:
        return "item must be a non-empty string"
    quantity = data.get("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        return "quantity must be a positive integer"
    if not isinstance(data.get("card_number"), str):
        return "card_number must be a string"
    return None


def issue_token(email: str) -> str:
    """A bearer token naming ``email``, valid for ``TOKEN_TTL`` seconds."""
    payload = base64.urlsafe_b64encode(f"{email}|{int(time.time()) + TOKEN_TTL}".encode()).decode()
    return f"{payload}.{_sign(payload)}"


def verify_token(token: str) -> str | None:
    """The email a valid, unexpired token names, else None."""
    payload, _, signature = token.partition(".")
    try:
        if not hmac.compare_digest(signature.encode(), _sign(payload).encode()):
            return None
        email, _, expires = base64.urlsafe_b64decode(payload).decode().rpartition("|")
        return email if int(expires) > time.time() else None
    except ValueError:  # bad base64, UTF-8 or expiry
        return None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _sign(payload: str) -> str:
    return hmac.new(SECRET_KEY, payload.encode(), hashlib.sha256).hexdigest()
