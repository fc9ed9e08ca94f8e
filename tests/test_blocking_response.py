"""The block response: defaults, Accept negotiation, init() options and their environment variables."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

import sqreen_mw
from sqreen_mw import ConfigurationError
from sqreen_mw._block_response import DEFAULT_HTML, DEFAULT_JSON, BlockResponse

MakeClient = Callable[..., sqreen_mw.Client]
DEFAULT = BlockResponse()


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # a browser
        ("text/html", True),
        ("application/json, text/html", False),
        ("text/html;q=0.9, application/json", True),  # order, not q-values: a rough rule, documented
        ("application/problem+json", False),
        ("text/plain", False),
    ],
)
def test_default_response_by_accept(accept: str | None, html: bool) -> None:
    rendered = DEFAULT.for_accept(accept)
    assert rendered.status == 403 and rendered.status_line == "403 Forbidden"
    if html:
        assert rendered.content_type == "text/html; charset=utf-8" and rendered.body == DEFAULT_HTML
    else:
        assert rendered.content_type == "application/json" and rendered.body == DEFAULT_JSON
        assert json.loads(rendered.body)["error"] == "blocked"
    assert dict(rendered.wsgi_headers) == {
        "Content-Type": rendered.content_type, "Content-Length": str(len(rendered.body)), "Cache-Control": "no-store"}
    assert dict(rendered.asgi_headers) == {
        b"content-type": rendered.content_type.encode(), b"content-length": str(len(rendered.body)).encode(),
        b"cache-control": b"no-store"}


def test_rendered_once() -> None:
    assert DEFAULT.for_accept("text/html") is DEFAULT.for_accept("text/html, */*")
    assert DEFAULT.for_accept(None) is DEFAULT.for_accept("application/json")


def test_default_html_is_self_contained() -> None:
    text = DEFAULT_HTML.decode()
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")


@pytest.mark.parametrize(
    ("body", "content_type", "expected_type"),
    [
        (b'{"error": "nope"}', None, "application/json"),
        (b"<h1>Go away</h1>", None, "text/html; charset=utf-8"),
        (b"  <!doctype html><p>x", None, "text/html; charset=utf-8"),
        (b"Blocked.", None, "text/plain; charset=utf-8"),
        (b"Blocked.", "text/markdown", "text/markdown"),
        (b"{}", "application/problem+json", "application/problem+json"),
    ],
)
def test_custom_body(body: bytes, content_type: str | None, expected_type: str) -> None:
    response = BlockResponse(451, body, content_type)
    for accept in (None, "text/html", "application/json"):
        rendered = response.for_accept(accept)
        assert (rendered.status, rendered.status_line) == (451, "451 Unavailable For Legal Reasons")
        assert rendered.body == body
        assert rendered.content_type == expected_type


def test_status_without_a_reason_phrase() -> None:
    assert BlockResponse(499).for_accept(None).status_line == "499 Blocked"


def test_content_type_needs_a_body() -> None:
    with pytest.raises(ConfigurationError, match=r"block_content_type .* set block_body too"):
        BlockResponse(403, None, "text/html")


def test_init_options(make_client: MakeClient) -> None:
    client = make_client(block_status=429, block_body="<p>slow down</p>")
    assert client.settings["block_status"] == 429
    assert client.settings["block_body"] == b"<p>slow down</p>"
    assert client.settings["block_content_type"] is None
    client = make_client(block_body=b"\xffno", block_content_type=" text/plain; charset=latin-1 ")
    assert client.settings["block_body"] == b"\xffno"
    assert client.settings["block_content_type"] == "text/plain; charset=latin-1"
    assert make_client().settings["block_status"] == 403


@pytest.mark.parametrize(
    ("variable", "value", "setting", "expected"),
    [
        ("SQREEN_BLOCK_STATUS", "429", "block_status", 429),
        ("SQREEN_BLOCK_BODY", "Blocked.", "block_body", b"Blocked."),
        ("SQREEN_BLOCK_CONTENT_TYPE", "text/plain", "block_content_type", "text/plain"),
    ],
)
def test_environment_variables(
    monkeypatch: pytest.MonkeyPatch, make_client: MakeClient, variable: str, value: str, setting: str, expected: object
) -> None:
    monkeypatch.setenv(variable, value)
    if variable == "SQREEN_BLOCK_CONTENT_TYPE":
        monkeypatch.setenv("SQREEN_BLOCK_BODY", "Blocked.")  # the type of a custom body
    assert make_client().settings[setting] == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"block_status": 200}, "block_status must be an HTTP status from 400 to 599, got 200"),
        ({"block_status": "teapot"}, "block_status must be an HTTP status from 400 to 599, got 'teapot'"),
        ({"block_status": True}, "block_status must be an HTTP status"),
        ({"block_status": 600}, "got 600"),
        ({"block_body": 403}, "block_body must be a str or bytes, got int"),
        ({"block_body": "x", "block_content_type": "text/html\r\nX-Evil: 1"}, "block_content_type must be a one-line"),
        ({"block_body": "x", "block_content_type": ""}, "block_content_type must be a one-line"),
        ({"block_body": "x", "block_content_type": 5}, "block_content_type must be a one-line"),
    ],
)
def test_bad_options_name_the_option(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match="block_") as info:
        sqreen_mw.Client(install_signal_handler=False, **options)
    assert message in str(info.value)


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQREEN_BLOCK_STATUS", "abc")
    with pytest.raises(ConfigurationError, match="SQREEN_BLOCK_STATUS must be an HTTP status"):
        sqreen_mw.Client(install_signal_handler=False)
