from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqreen_mw._exceptions import ConfigurationError
from sqreen_mw._schema import REDACTED, TRUNCATION_MARKER
from sqreen_mw._scrub import (
    DEFAULT_SENSITIVE_KEYS,
    DEFAULT_SENSITIVE_VALUES,
    MAX_DEPTH,
    RULES,
    RULES_FILE,
    Scrubber,
    ValueRule,
    _luhn,
)

DEFAULT = Scrubber()

SQREEN_KEYS = ["password", "passwd", "secret", "authorization", "api_key", "apikey", "access_token", "token"]
SENTRY_KEYS = [
    "password", "passwd", "secret", "api_key", "apikey", "auth", "credentials", "mysql_pwd", "privatekey",
    "private_key", "token", "session", "csrftoken", "sessionid", "x_csrftoken", "x_forwarded_for", "set_cookie",
    "cookie", "authorization", "proxy-authorization", "x_api_key", "aiohttp_session", "connect.sid", "csrf_token",
    "csrf", "_csrf", "_csrf_token", "PHPSESSID", "_session", "symfony", "user_session", "_xsrf", "XSRF-TOKEN",
]  # fmt: skip
DATADOG_KEYS = [
    "pass", "pwd", "pword", "password", "secret", "api_key", "api-key", "apikey", "private_key", "public_key",
    "access_key", "token", "consumer_id", "consumer_key", "consumer_secret", "signature", "bearer", "authorization",
    "jsessionid", "phpsessid", "asp.net_sessionid", "asp.net-sessionid", "sid", "jwt",
]  # fmt: skip
MORE_KEYS = [
    "user_password", "passphrase", "pass_phrase", "passcode", "db_pass", "refresh_token", "id_token", "client_secret",
    "aws_secret_access_key", "x-amz-security-token", "x-auth", "basic_auth", "session_id", "session_key", "sessions",
    "cookies", "x-hub-signature-256", "sig", "signed", "otp", "cvv", "cvc2", "creds", "x_jwt_assertion", "auth-token",
    "Set-Cookie", "X-Api-Key", "X-CSRF-Token", "authToken", "apiKey", "accessToken", "passWord", "userPass",
    "sessionId", "privateKey", "xsrfToken", "AUTHORIZATION", "Proxy-Authorization", "user[password]", "user.password",
]  # fmt: skip
NOT_SENSITIVE = [
    "name", "email", "username", "user_id", "path", "verb", "passenger", "passenger_count", "passage", "passive",
    "bypass", "compass", "passport", "inside", "side_effect", "consider", "sidebar", "residence", "author",
    "authority", "oauth_provider", "auth_method", "session_count", "session_duration", "cookie_consent", "signed_in",
    "signed_up", "designed", "assigned", "signal", "design", "keyboard", "monkey", "otpauth_label", "is_valid",
    "sessionStart", "authMethod", "insideOut", "page", "amount", "currency",
]  # fmt: skip


@pytest.mark.parametrize("key", sorted({*SQREEN_KEYS, *SENTRY_KEYS, *DATADOG_KEYS, *MORE_KEYS}))
def test_sensitive_keys(key: str) -> None:
    assert DEFAULT.is_sensitive_key(key)
    if not re.search("[a-z][A-Z]", key):  # upper-casing loses camelCase words
        assert DEFAULT.is_sensitive_key(key.upper())
        assert DEFAULT.is_sensitive_key(key.lower())
    assert DEFAULT.is_sensitive_key(key.replace("_", "-"))
    assert DEFAULT.scrub({key: "hunter2", "other": "kept"}) == {key: REDACTED, "other": "kept"}


@pytest.mark.parametrize("key", NOT_SENSITIVE)
def test_non_sensitive_keys(key: str) -> None:
    assert not DEFAULT.is_sensitive_key(key)
    assert not DEFAULT.is_sensitive_key(key.upper())
    assert DEFAULT.scrub({key: "value"}) == {key: "value"}


@pytest.mark.parametrize(
    "value",
    [
        "s3cr3t",
        12345,
        None,
        True,
        1.5,
        ["a", "b"],
        ("a",),
        {"nested": {"deep": "x"}, "list": [1, 2]},
        b"raw",
    ],
)
def test_whole_value_under_sensitive_key_is_one_marker(value: object) -> None:
    assert DEFAULT.scrub({"password": value}) == {"password": REDACTED}


VISA = "4111111111111111"
CARDS = [
    VISA,
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5555555555554444",  # Mastercard
    "2223003122003222",  # Mastercard 2-series
    "378282246310005",  # Amex, 15 digits
    "3056 930902 5904",  # Diners, 14 digits
    "6011111111111117",  # Discover
    "6200000000000005",  # UnionPay
    "4222222222222",  # Visa, 13 digits
    "6250941006528599",
    "my card is 4111 1111 1111 1111, thanks",
    "card:4111111111111111;exp=12/29",
    "5 4111 1111 1111 1111",  # a card next to another number
    "4111 1111 1111 1111 5",
    "4111 1111 1111 1111 2222 3333",
]
NOT_CARDS = [
    "4111111111111112",  # Luhn-invalid
    "4111 1111 1111 1112",
    "1234567890123",
    "1700000000000",  # millisecond timestamp
    "1700000000000000",  # microsecond timestamp
    "1111111111111111111",  # starts with 1
    "9999999999999995",  # starts with 9
    "411111111111",  # 12 digits
    "41111111111111111111111",  # a long number: digits glued on both sides
    "+1 (555) 123-4567",
    "+44 20 7946 0958",
    "+33 1 23 45 67 89 01",
    "2024-01-15 12:30:45",
    "4111  1111  1111  1111",  # double separators are not a card layout
    "order 550e8400-e29b-41d4-a716-446655440000",
    "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦",  # non-ASCII digits
    "b_a5b38154563742189260d301d245261a",  # a hex id whose digit run passes Luhn: inside a word, not a card
    "sha 9f4111111111111111e2",
]


@pytest.mark.parametrize("text", CARDS)
def test_card_numbers_are_redacted(text: str) -> None:
    out = DEFAULT.scrub(text)
    assert REDACTED in out and _digits(out) <= _digits(text) - 13  # the card's run replaced, the rest kept
    assert DEFAULT.scrub({"comment": text}) == {"comment": out}


def _digits(text: str) -> int:
    return sum(c.isdigit() for c in text)


@pytest.mark.parametrize("text", NOT_CARDS)
def test_other_numbers_are_kept(text: str) -> None:
    assert DEFAULT.scrub(text) == text


@pytest.mark.parametrize(
    ("number", "redacted"),
    [
        (4111111111111111, True),
        (5555555555554444, True),
        (4222222222222, True),
        (4111111111111112, False),
        (1700000000000123, False),
        (411111111111, False),
        (-4111111111111111, False),
        (2**63, False),
        (10**25, False),
        (42, False),
    ],
)
def test_card_ints(number: int, redacted: bool) -> None:
    assert DEFAULT.scrub(number) == (REDACTED if redacted else number)
    assert DEFAULT.scrub([number]) == [REDACTED if redacted else number]


JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.mark.parametrize(
    "text",
    [
        "Bearer x",
        "bearer abc.def",
        "BEARER eyJ",
        "Authorization: Bearer mF_9.B5f-4.1JqM",
        JWT,
        f"token={JWT}&x=1",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",  # alg=none, empty signature
        "-----BEGIN PRIVATE KEY-----\nMIIEvQ...\n-----END PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----",
        "-----BEGIN EC PRIVATE KEY-----",
        "ghp_" + "a1B2" * 9,
        "github_pat_" + "A" * 40,
    ],
)
def test_secret_values_are_redacted(text: str) -> None:
    out = DEFAULT.scrub(text)
    assert out in (REDACTED, "Authorization: [REDACTED]", "token=[REDACTED]&x=1")
    assert DEFAULT.scrub([text, "ok"]) == [out, "ok"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        "/api/v1/users/42",
        "eyJ only",
        "bearer",
        "-----BEGIN PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----",
        "ghp_short",
        "a.b.c",
        "key=value&other=1",
    ],
)
def test_ordinary_values_are_kept(text: str) -> None:
    assert DEFAULT.scrub(text) == text


def test_nested_structures() -> None:
    data = {
        "user": {"name": "alice", "password": "x", "cards": [VISA, "none"]},
        "items": ({"token": 1}, {"id": 2, "note": "Bearer abc"}),
        "headers": {"X-Api-Key": "k", "Accept": "text/html"},
        "numbers": {1, 2},
        7: "int key kept",
    }
    assert DEFAULT.scrub(data) == {
        "user": {"name": "alice", "password": REDACTED, "cards": [REDACTED, "none"]},
        "items": [{"token": REDACTED}, {"id": 2, "note": REDACTED}],
        "headers": {"X-Api-Key": REDACTED, "Accept": "text/html"},
        "numbers": [1, 2],
        7: "int key kept",
    }


def test_types_and_subclasses() -> None:
    class Text(str):
        pass

    class Number(int):
        pass

    class Ordered(dict[str, Any]):
        pass

    class Key(str):
        pass

    assert DEFAULT.scrub({Key("password"): "x", Key("name"): "y"}) == {"password": REDACTED, "name": "y"}
    obj = object()
    out = DEFAULT.scrub(
        {"a": Text(VISA), "b": Number(4111111111111111), "c": Ordered(token="t", ok=1), "d": obj, "e": False}
    )
    assert out == {"a": REDACTED, "b": REDACTED, "c": {"token": REDACTED, "ok": 1}, "d": obj, "e": False}
    assert type(out["c"]) is dict
    assert DEFAULT.scrub(b"4111111111111111") == REDACTED
    assert DEFAULT.scrub(bytearray(b"plain")) == b"plain"
    assert DEFAULT.scrub(frozenset({"x"})) == ["x"]


def test_depth_cap() -> None:
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH + 5):
        deep = {"k": deep}
    out = DEFAULT.scrub(deep)
    for _ in range(MAX_DEPTH):
        out = out["k"]
    assert out == REDACTED

    shallow: Any = "leaf"
    for _ in range(MAX_DEPTH):
        shallow = [shallow]
    assert DEFAULT.scrub(shallow) == shallow

    loop: list[Any] = []
    loop.append(loop)
    out_loop = DEFAULT.scrub(loop)  # terminates: the cycle is cut at MAX_DEPTH
    for _ in range(MAX_DEPTH):
        assert isinstance(out_loop, list) and len(out_loop) == 1
        out_loop = out_loop[0]
    assert out_loop == REDACTED


def test_disabled_returns_the_same_object() -> None:
    scrubber = Scrubber(enabled=False)
    data = {"password": "x", "card": VISA}
    assert scrubber.scrub(data) is data
    assert not scrubber.enabled
    assert DEFAULT.enabled


def test_custom_key_regex_replaces_default() -> None:
    scrubber = Scrubber(sensitive_keys=r"^(?:ssn|dob)$")
    assert scrubber.scrub({"SSN": "1", "dob": "2", "password": "3"}) == {
        "SSN": REDACTED,
        "dob": REDACTED,
        "password": "3",
    }
    assert Scrubber(sensitive_keys=r"^X_Internal").is_sensitive_key("x-internal-id")  # regex is case-insensitive


def test_extra_keys_add_to_default() -> None:
    scrubber = Scrubber(sensitive_keys=["SSN", "X-Internal-Id", "dateOfBirth"])
    for key in ("ssn", "x_internal_id", "X-INTERNAL-ID", "password", "date_of_birth", "DATEOFBIRTH"):
        assert scrubber.is_sensitive_key(key), key
    assert not scrubber.is_sensitive_key("ssn_count")


def test_empty_regexes_disable_a_rule() -> None:
    scrubber = Scrubber(sensitive_keys="", sensitive_values="")
    data = {"password": VISA, "x": "Bearer abc", "n": 4111111111111111}
    assert scrubber.scrub(data) == data


def test_custom_value_regex_replaces_default() -> None:
    scrubber = Scrubber(sensitive_values=r"\bAKIA[0-9A-Z]{16}\b")
    assert scrubber.scrub(["AKIAIOSFODNN7EXAMPLE", VISA, "Bearer x", 4111111111111111]) == [
        REDACTED,
        VISA,
        "Bearer x",
        4111111111111111,
    ]


def test_extra_value_regexes_add_to_default() -> None:
    scrubber = Scrubber(sensitive_values=[r"^sk_live_", r"\d{3}-\d{2}-\d{4}"])
    assert scrubber.scrub(["sk_live_abc", "078-05-1120", VISA, "Bearer x", "ok", 4111111111111111]) == [
        REDACTED,
        REDACTED,
        REDACTED,
        REDACTED,
        "ok",
        REDACTED,
    ]


def test_card_group_in_custom_regex_needs_luhn() -> None:
    scrubber = Scrubber(sensitive_values=r"(?P<card>\d{16})")
    assert scrubber.scrub([VISA, "4111111111111112"]) == [REDACTED, "4111111111111112"]


def test_default_constants_compile() -> None:
    assert re.compile(DEFAULT_SENSITIVE_KEYS).search("password")
    assert re.compile(DEFAULT_SENSITIVE_VALUES).search("Bearer x")
    assert Scrubber(sensitive_keys=DEFAULT_SENSITIVE_KEYS).is_sensitive_key("X-Api-Key")
    assert Scrubber(sensitive_values=DEFAULT_SENSITIVE_VALUES).scrub(JWT) == REDACTED


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sensitive_keys": "pass("}, r"sensitive_keys: invalid regex 'pass\(': missing \)"),
        ({"sensitive_values": "[a-"}, r"sensitive_values: invalid regex '\[a-'"),
        ({"sensitive_values": ["ok", "(?P<x"]}, r"sensitive_values: invalid regex '\(\?P<x'"),
        ({"sensitive_keys": 3}, "sensitive_keys must be a str regex or an iterable of str, got int"),
        ({"sensitive_keys": b"token"}, "sensitive_keys must be a str regex or an iterable of str, got bytes"),
        ({"sensitive_values": [1]}, "sensitive_values entries must be non-empty str, got int 1"),
        ({"sensitive_keys": [""]}, "sensitive_keys entries must be non-empty str"),
    ],
)
def test_configuration_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Scrubber(**kwargs)


def test_key_cache_is_bounded() -> None:
    scrubber = Scrubber()
    for i in range(10_000):
        scrubber.is_sensitive_key(f"field_{i}")
    assert len(scrubber._key_cache) <= 4096
    assert scrubber.is_sensitive_key("password")


@pytest.mark.parametrize(
    ("digits", "valid"), [("4111111111111111", True), ("79927398713", True), ("79927398710", False), ("0", True)]
)
def test_luhn(digits: str, valid: bool) -> None:
    assert _luhn(digits) is valid


def _with_check_digit(body: str) -> str:
    return next(body + d for d in "0123456789" if _luhn(body + d))


_cards = st.builds(
    lambda first, rest: _with_check_digit(first + rest),
    st.sampled_from("23456"),
    st.integers(11, 17).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n)),
)


def _layout(card: str, sep: str) -> str:
    return sep.join(card[i : i + 4] for i in range(0, len(card), 4)) if sep else card


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


_around = st.text(max_size=10) | st.text("0123456789 -x", max_size=12)


@given(card=_cards, sep=st.sampled_from(["", " ", "-"]), before=_around, after=_around)
def test_no_luhn_valid_card_survives(card: str, sep: str, before: str, after: str) -> None:
    # Glued to ASCII letters or digits the run is part of a word (another number, a hex id, a hash); anything else
    # around it must not hide the card.
    before = before if not before or not (before[-1].isascii() and before[-1].isalnum()) else before + " "
    after = after if not after or not (after[0].isascii() and after[0].isalnum()) else " " + after
    text = before + _layout(card, sep) + after
    out = DEFAULT.scrub({"comment": text, "list": [text], "int": int(card)})
    assert REDACTED in out["comment"] and _layout(card, sep) not in out["comment"]
    assert out["list"] == [out["comment"]] and out["int"] == REDACTED


@given(data=_json)
def test_scrub_does_not_mutate_and_is_idempotent(data: Any) -> None:
    snapshot = copy.deepcopy(data)
    once = DEFAULT.scrub(data)
    assert data == snapshot
    assert DEFAULT.scrub(once) == once


@given(data=st.dictionaries(st.sampled_from([*SQREEN_KEYS, "name", "id"]), _json, max_size=6))
def test_sensitive_keys_never_leak(data: dict[str, Any]) -> None:
    out = DEFAULT.scrub(data)
    assert out.keys() == data.keys()
    for key in data:
        if key in SQREEN_KEYS:
            assert out[key] == REDACTED


# --- A corpus of realistic cases, one per category: (input, the secret that must not survive). ---------------------
SECRET_CORPUS: list[tuple[Any, str]] = [
    # bracketed and other form keys
    ({"user[pass]": "hunter2"}, "hunter2"),
    ({"card[cvv]": "123"}, "123"),
    ({"a[b][password]": "hunter2"}, "hunter2"),
    ({"user[password_confirmation]": "hunter2"}, "hunter2"),
    ({"payment[card_number]": "4111111111111111"}, "4111111111111111"),
    # keys outside the classic lists
    ({"otp": "492817"}, "492817"),
    ({"totp": "492817"}, "492817"),
    ({"2fa_code": "492817"}, "492817"),
    ({"mfaCode": "492817"}, "492817"),
    ({"sms_code": "492817"}, "492817"),
    ({"pin": "4821"}, "4821"),
    ({"card_pin": "4821"}, "4821"),
    ({"ssn": "078-05-1120"}, "078-05-1120"),
    ({"nin": "QQ123456C"}, "QQ123456C"),
    ({"national_id": "1850312345678"}, "1850312345678"),
    ({"cvc": "123"}, "123"),
    ({"csc": "1234"}, "1234"),
    ({"security_code": "123"}, "123"),
    ({"recovery_codes": ["a1b2-c3d4", "e5f6-g7h8"]}, "a1b2-c3d4"),
    ({"query": "mutation Login($pw: String!) { login(pw: $pw) }", "variables": {"pw": "hunter2"}}, "hunter2"),
    ({"query": 'mutation { login(email: "a@b.c", password: "hunter2") }'}, "hunter2"),
    ({"variables": '{"password": "hunter2", "email": "a@b.c"}'}, "hunter2"),
    # secrets in the URL path
    ({"path": "/reset/9f8e7d6c5b4a39281706f5e4d3c2b1a0"}, "9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
    ({"path": "/password-reset/Zx8kP2qL9mN4vB7c"}, "Zx8kP2qL9mN4vB7c"),
    ({"path": "/api/key/sk_live_4eC39HqLyjWDarjtT1zdp7dc"}, "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ({"path": "/invite/a1b2c3d4e5f6g7h8/accept"}, "a1b2c3d4e5f6g7h8"),
    ({"path": "/confirm/550e8400-e29b-41d4-a716-446655440000"}, "550e8400-e29b-41d4-a716-446655440000"),
    ({"path": "/callback?access_token=ya29.a0AfH6SMBx&state=1"}, "ya29.a0AfH6SMBx"),
    # raw and cut bodies
    ({"body": "email=bob%40example.com&password=hunter2&remember=1"}, "hunter2"),
    ({"body": "email=bob%40example.com&user%5Bpassword%5D=hunter2"}, "hunter2"),
    ({"body": '{"email": "bob@example.com", "password": "hunter2", "note": "aaaa' + TRUNCATION_MARKER}, "hunter2"),
    ({"body": '{"email": "bob@example.com", "password": "hunt' + TRUNCATION_MARKER}, "hunt"),
    ({"body": '{"user": {"pin": 4821, "name": "x"' + TRUNCATION_MARKER}, "4821"),
    ({"body": "password: hunter2\nremember: yes"}, "hunter2"),
    ({"body": "Authorization: Token 9a8b7c6d5e4f\r\nAccept: */*"}, "9a8b7c6d5e4f"),
    # JSON sent as text, JSON inside a string
    ({"body": '{"email": "bob@example.com", "password": "hunter2"}'}, "hunter2"),
    ({"body": '[{"token": "t0k3n-value"}]'}, "t0k3n-value"),
    ({"payload": '{"nested": "{\\"api_key\\": \\"k-123456\\"}"}'}, "k-123456"),
    # well-known credential shapes
    ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("key ASIAY34FZKBOKMUTVV7A in use", "ASIAY34FZKBOKMUTVV7A"),
    ("aws wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("rk_live_51H8x2yKZvKYlo2C0aBcDeFgH", "rk_live_51H8x2yKZvKYlo2C0aBcDeFgH"),
    ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "github_pat_11ABCDEFG"),
    ("glpat-xxxxxxxxxxxxxxxxxxxx", "glpat-xxxxxxxxxxxxxxxxxxxx"),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "AbCdEfGhIjKlMnOpQrStUvWx"),
    ("xoxp-123456789012-123456789012-123456789012-abcdef", "abcdef"),
    ("hook https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX", "XXXXXXXXXXXX"),
    ("https://discord.com/api/webhooks/123456789012345678/AbCdEf-GhIjKl_MnOpQr", "AbCdEf-GhIjKl_MnOpQr"),
    ("AIzaSyA-1234567890abcdefghijklmnopqrstu", "AIzaSyA-1234567890abcdefghijklmnopqrstu"),
    ("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD", "abcdefghijklmnopqrstuvwxyz0123456789"),
    ("npm_abcdefghijklmnopqrstuvwxyz0123456789", "npm_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("SG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "abcdefghijklmnopqrstuv"),
    ("postgres://app:s3cr3t-pw@db.internal:5432/shop", "s3cr3t-pw"),
    ("redis://:r3d1s-pw@cache:6379/0", "r3d1s-pw"),
    ("amqp://guest:guestpw@rabbit//", "guestpw"),
    ("Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "YWxhZGRpbjpvcGVuc2VzYW1l"),
    ("curl -H 'Authorization: Bearer mF_9.B5f-4.1JqM' https://api", "mF_9.B5f-4.1JqM"),
    (f"jwt {JWT} end", JWT),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXk"),
    ("paid with 4111 1111 1111 1111 today", "4111 1111 1111 1111"),
    # user agents with a token-like part
    ("MyApp/2.1 (iPhone; token=abc123def456ghi) CFNetwork/1408", "abc123def456ghi"),
    ("okhttp/4.9.0 Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", "eyJhbGciOiJub25lIn0"),
    ("Bot/1.0 (+https://example.com; key=AKIAIOSFODNN7EXAMPLE)", "AKIAIOSFODNN7EXAMPLE"),
]

KEPT_CORPUS: list[Any] = [
    "alice@example.com",
    "Alice O'Hara",
    "José Ramírez-Núñez",
    "ord_8f3a2c",
    "ORDER-2026-000123",
    "SKU-1234-XL",
    "550e8400-e29b-41d4-a716-446655440000",
    "2026-12-02T05:51:43Z",
    "2026-12-02 05:51:43.123456+00:00",
    "1764654703123",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "curl/8.4.0",
    "python-httpx/0.27.0",
    "/api/v1/orders/42/items",
    "/orders/550e8400-e29b-41d4-a716-446655440000",
    "/reset",
    "/reset/done",
    "/keys/42",
    "https://example.com/docs?page=2&sort=asc",
    "postgres://db.internal:5432/shop",
    "pk_live_51H8x2yKZvKYlo2C0",  # a publishable key is public by design
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",  # a SHA-1 (git commit id)
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "The basic plan costs 10 EUR",
    "Basic information",
    "skip-navigation-link",
    "note: ring the bell twice",
    "price: 12.50, qty: 2",
    '{"sku": "SKU-1", "qty": 2}',
    "[1, 2, 3]",
    "+1 (555) 123-4567",
    {"passenger_count": 2, "author": "bob", "session_count": 3, "signed_in": True},
    {"email": "alice@example.com", "name": "Alice", "order_id": "ord_8f3a2c", "amount": 129.9, "currency": "EUR"},
]


@pytest.mark.parametrize(("value", "secret"), SECRET_CORPUS)
def test_corpus_secrets_are_redacted(value: Any, secret: str) -> None:
    out = DEFAULT.scrub(value)
    assert secret not in repr(out) and secret not in json.dumps(out)
    assert DEFAULT.scrub(out) == out


@pytest.mark.parametrize("value", KEPT_CORPUS)
def test_corpus_ordinary_data_is_kept(value: Any) -> None:
    assert DEFAULT.scrub(value) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MyApp/2.1 (iPhone; token=abc123def456ghi) CFNetwork", "MyApp/2.1 (iPhone; token=[REDACTED]) CFNetwork"),
        ("postgres://app:pw@db/x", "postgres://app:[REDACTED]@db/x"),
        ("/reset/9f8e7d6c5b4a3928", "/reset/[REDACTED]"),
        ("https://hooks.slack.com/services/T0/B0/XXXX", "https://hooks.slack.com/services/[REDACTED]"),
        ("a=1&password=x&b=2", "a=1&password=[REDACTED]&b=2"),
        ('{"password": "hunt' + TRUNCATION_MARKER, '{"password": "[REDACTED]' + TRUNCATION_MARKER),
        ('{"a": 1, "pin": "1234"}', '{"a": 1, "pin": "[REDACTED]"}'),
        ('{"a":1}', '{"a":1}'),  # nothing redacted: the text is kept as written
        ("card 4111 1111 1111 1111 exp 12/29", "card [REDACTED] exp 12/29"),
    ],
)
def test_only_the_secret_part_goes(text: str, expected: str) -> None:
    assert DEFAULT.scrub(text) == expected
    assert DEFAULT.is_sensitive_value(text) is (text != expected)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_every_rule_redacts_its_example(rule: ValueRule) -> None:
    out = DEFAULT.scrub(rule.example)
    assert REDACTED in out and out != rule.example
    assert DEFAULT.scrub(out) == out
    assert re.compile(rule.pattern).search(REDACTED) is None  # the marker never matches: idempotence


def test_rules_file_is_shipped_and_documented() -> None:
    text = resources.files("sqreen_mw").joinpath(RULES_FILE).read_text("utf-8")
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names)) >= 15
    docs = (Path(__file__).parent.parent / "docs" / "scrubbing.md").read_text("utf-8")
    for name in names:
        assert f'name = "{name}"' in text
        assert f"`{name}`" in docs, f"docs/scrubbing.md does not describe rule {name}"


def test_user_value_regex_with_secret_group_redacts_that_part() -> None:
    scrubber = Scrubber(sensitive_values=[r"emp-(?P<secret>[0-9]{6})"])
    assert scrubber.scrub("badge emp-123456 ok") == "badge emp-[REDACTED] ok"
    assert scrubber.scrub("emp-1") == "emp-1"


def test_disabled_key_rules_leave_key_value_text() -> None:
    assert Scrubber(sensitive_keys="").scrub("password=hunter2") == "password=hunter2"


_text_with_secrets = st.lists(
    st.sampled_from([ex for _, ex in [(r.name, r.example) for r in RULES]] + ["password=x", '"pin": "12', "&", " "])
    | st.text(max_size=15),
    max_size=6,
).map("".join)


@given(text=_text_with_secrets)
def test_scrubbing_text_never_raises_and_is_idempotent(text: str) -> None:
    once = DEFAULT.scrub(text)
    assert isinstance(once, str)
    assert DEFAULT.scrub(once) == once


@given(data=_json)
def test_scrub_never_raises(data: Any) -> None:
    DEFAULT.scrub({"body": json.dumps(data), "raw": repr(data), "data": data})


@given(prefix=st.text(max_size=12), suffix=st.text(max_size=12), rule=st.sampled_from(RULES))
def test_secret_never_grows(prefix: str, suffix: str, rule: ValueRule) -> None:
    # Around anything, an example's secret does not come out longer, and nothing is added to the text around it.
    text = f"{prefix} {rule.example} {suffix}"
    out = DEFAULT.scrub(text)
    assert len(out) <= len(text) + len(REDACTED)
    assert DEFAULT.scrub(out) == out
