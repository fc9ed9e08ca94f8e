"""track / identify / auth_track / signup_track as users call them, seen through capture_events()."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

import sqreen_mw
from sqreen_mw import ConfigurationError, InvalidEvent
from sqreen_mw.testing import capture_events

MakeClient = Callable[..., sqreen_mw.Client]


def test_track_outside_a_request_has_no_request_and_no_user(make_client: MakeClient) -> None:
    make_client()
    with capture_events() as events:
        assert sqreen_mw.track("order.placed", properties={"amount": 12.5, "currency": "EUR", "gift": False})
    (event,) = events
    assert event["name"] == "order.placed"
    assert event["properties"] == {"amount": 12.5, "currency": "EUR", "gift": False}
    assert event["request"] is None and event["user_identifiers"] is None and event["body"] is None
    assert uuid.UUID(event["id"]).version == 7


def test_options_mapping_is_the_same_as_keywords(make_client: MakeClient) -> None:
    make_client()
    when = datetime(2018, 3, 15, 13, 42, tzinfo=UTC)
    with capture_events() as events:
        sqreen_mw.track("a", {"properties": {"foo": "bar"}, "user_identifiers": {"id": 1}, "timestamp": when})
        sqreen_mw.track("a", properties={"foo": "bar"}, user_identifiers={"id": 1}, timestamp=when)
    first, second = ({k: v for k, v in e.items() if k != "id"} for e in events)
    assert first == second
    assert first["timestamp"] == "2018-03-15T13:42:00.000000Z"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sqreen_mw.track("a", {"propertys": {}}), "options has unknown keys ['propertys']"),
        (lambda: sqreen_mw.track("a", {"properties": {}}, properties={"x": 1}), "properties was given both"),
        (lambda: sqreen_mw.track("a", ["properties"]), "options must be a mapping"),  # type: ignore[arg-type]
        (lambda: sqreen_mw.track("a", properties={"x": object()}), "properties['x'] must be a str"),
        (lambda: sqreen_mw.track("a", properties="x=1"), "properties must be a mapping"),  # type: ignore[arg-type]
        (lambda: sqreen_mw.track("a", timestamp=1520000000), "timestamp must be a datetime, got int"),
        (lambda: sqreen_mw.track("a", request=object()), "request must be a Starlette"),
        (lambda: sqreen_mw.identify({}), "at least one identifier"),
        (lambda: sqreen_mw.identify({"id": 1}, traits={"plan": ["pro"]}), "traits['plan']"),
        (lambda: sqreen_mw.auth_track("yes", email="a@b.c"), "success must be a bool"),  # type: ignore[arg-type]
        (lambda: sqreen_mw.auth_track(True), "auth_track user identifiers must name the user"),
        (lambda: sqreen_mw.signup_track(), "signup_track user identifiers must name the user"),
        (lambda: sqreen_mw.track("sq.auth_track"), "reserved"),
    ],
)
def test_bad_calls_raise_at_the_call_site(make_client: MakeClient, call: Callable[[], Any], message: str) -> None:
    make_client()
    with capture_events() as events, pytest.raises(InvalidEvent) as info:
        call()
    assert message in str(info.value)
    assert events == []


def test_auth_and_signup_are_sdk_events(make_client: MakeClient) -> None:
    make_client()
    with capture_events() as events:
        sqreen_mw.auth_track(False, email="eve@example.com")
        sqreen_mw.auth_track(True, email="bob@example.com", shop=3)
        sqreen_mw.signup_track(email="new@example.com")
    assert [(e["name"], e["properties"], e["user_identifiers"]) for e in events] == [
        ("sq.auth_track", {"success": False}, {"email": "eve@example.com"}),
        ("sq.auth_track", {"success": True}, {"email": "bob@example.com", "shop": 3}),
        ("sq.signup_track", {}, {"email": "new@example.com"}),
    ]


def test_properties_are_scrubbed_before_they_leave(make_client: MakeClient) -> None:
    make_client()
    with capture_events() as events:
        sqreen_mw.track("payment.failed", properties={"card": "4111 1111 1111 1111", "api_key": "k", "step": 2})
    assert events[0]["properties"] == {"card": "[REDACTED]", "api_key": "[REDACTED]", "step": 2}


def test_scrubbing_can_be_turned_off(make_client: MakeClient) -> None:
    make_client(strip_sensitive_data=False)
    with capture_events() as events:
        sqreen_mw.track("x", properties={"password": "hunter2"})
    assert events[0]["properties"] == {"password": "hunter2"}


def test_ids_are_unique_and_time_ordered(make_client: MakeClient) -> None:
    make_client()
    with capture_events() as events:
        for _ in range(2000):
            sqreen_mw.track("x")
    ids = [e["id"] for e in events]
    assert len(set(ids)) == 2000
    assert ids == sorted(ids)


def test_without_token_calls_are_validated_and_nothing_is_queued(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    assert sqreen_mw.track("x") is False
    with pytest.raises(InvalidEvent):
        sqreen_mw.track("")
    assert client.statistics()["queued"] == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "sqreen_mw" and r.levelno == logging.WARNING]
    assert sum("no token" in w for w in warnings) == 1


def test_unknown_option_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown init\\(\\) option 'heartbeat_intervall'; did you mean "
                                                 "'heartbeat_interval'"):
        sqreen_mw.Client(heartbeat_intervall=5)
    with pytest.raises(ConfigurationError, match="heartbeat_interval must be > 0"):
        sqreen_mw.Client(heartbeat_interval=0)
    with pytest.raises(ConfigurationError, match="url must be an http"):
        sqreen_mw.Client(url="127.0.0.1:8707")


def test_environment_configures_the_client(monkeypatch: pytest.MonkeyPatch, make_client: MakeClient) -> None:
    monkeypatch.setenv("SQREEN_TOKEN", "from-env")
    monkeypatch.setenv("SQREEN_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("SQREEN_HEARTBEAT_INTERVAL", "5")
    client = make_client()
    assert client.settings["token"] == "from-env"
    assert client.settings["url"] == "http://127.0.0.1:9"
    assert client.settings["heartbeat_interval"] == 5.0
    monkeypatch.setenv("SQREEN_HEARTBEAT_INTERVAL", "soon")
    with pytest.raises(ConfigurationError, match="SQREEN_HEARTBEAT_INTERVAL must be a number of seconds, got 'soon'"):
        sqreen_mw.Client()


def test_track_after_shutdown_is_counted(make_client: MakeClient) -> None:
    client = make_client(token="k", url="http://127.0.0.1:9")
    client.shutdown(timeout=0.1)
    assert sqreen_mw.track("late") is False
    assert client.statistics()["tracked"] == 0
    assert client.statistics()["dropped"] == {"after_shutdown": 1}


def test_unreadable_request_argument_is_an_invalid_event(make_client: MakeClient) -> None:
    make_client()

    class Broken:
        @property
        def scope(self) -> dict[str, Any]:
            raise KeyError("no scope here")

    with pytest.raises(InvalidEvent, match=r"request could not be read \(KeyError"):
        sqreen_mw.track("x", request=Broken())


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://collector:87o7", "url is not a valid URL"),
        ("http://[::1", "url is not a valid URL"),
        ("http://", "url must name a host"),
    ],
)
def test_bad_collector_urls_are_refused_at_init(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        sqreen_mw.Client(url=url)


def test_sigterm_chains_to_a_server_handler_without_closing(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqreen_mw import _lifecycle

    client = make_client(token="k", url="http://127.0.0.1:9")
    calls: list[int] = []
    monkeypatch.setattr(_lifecycle, "_previous_sigterm", lambda signum, frame: calls.append(signum))
    _lifecycle._on_sigterm(15, None)
    assert calls == [15]
    assert sqreen_mw.track("during.drain") is True  # requests still running may track; atexit delivers them
    assert client.statistics()["queued"] == 1


def test_empty_environment_value_can_mean_trust_no_proxy(
    monkeypatch: pytest.MonkeyPatch, make_client: MakeClient
) -> None:
    monkeypatch.setenv("SQREEN_TRUSTED_PROXIES", "")
    make_client()
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "1.2.3.4"}
    with capture_events() as events:
        sqreen_mw.track("x", request=environ)
    assert events[0]["request"] is not None and events[0]["request"]["client_ip"] == "127.0.0.1"


def test_collect_body_must_be_a_bool(make_client: MakeClient) -> None:
    make_client()
    with pytest.raises(InvalidEvent, match="collect_body must be a bool, got str 'yes'"):
        sqreen_mw.track("x", collect_body="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("variable", "value", "setting", "expected"),
    [
        ("SQREEN_TOKEN", "t0k", "token", "t0k"),
        ("SQREEN_URL", "https://collector.example:9443/", "url", "https://collector.example:9443"),
        ("SQREEN_APP_NAME", "shop", "app_name", "shop"),
        ("SQREEN_HEARTBEAT_INTERVAL", "15", "heartbeat_interval", 15.0),
        ("SQREEN_BATCH_SIZE", "50", "batch_size", 50),
        ("SQREEN_MAX_QUEUE_EVENTS", "500", "max_queue_events", 500),
        ("SQREEN_MAX_QUEUE_BYTES", "100000", "max_queue_bytes", 100000),
        ("SQREEN_MAX_EVENT_AGE", "60", "max_event_age", 60.0),
        ("SQREEN_SHUTDOWN_TIMEOUT", "0.5", "shutdown_timeout", 0.5),
        ("SQREEN_REQUEST_TIMEOUT", "3", "request_timeout", 3.0),
        ("SQREEN_TRUSTED_PROXIES", "10.0.0.0/8", "trusted_proxies", "10.0.0.0/8"),
        ("SQREEN_IP_HEADER", "CF-Connecting-IP", "ip_header", "CF-Connecting-IP"),
        ("SQREEN_STRIP_SENSITIVE_DATA", "false", "strip_sensitive_data", False),
        ("SQREEN_SENSITIVE_KEYS", "^pin$", "sensitive_keys", "^pin$"),
        ("SQREEN_SENSITIVE_VALUES", "^x{8}$", "sensitive_values", "^x{8}$"),
        ("SQREEN_MAX_BODY_BYTES", "2048", "max_body_bytes", 2048),
        ("SQREEN_INSTALL_SIGNAL_HANDLER", "off", "install_signal_handler", False),
    ],
)
def test_every_environment_variable_of_the_readme(
    monkeypatch: pytest.MonkeyPatch, make_client: MakeClient, variable: str, value: str, setting: str, expected: Any
) -> None:
    monkeypatch.setenv(variable, value)
    assert make_client().settings[setting] == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SQREEN_BATCH_SIZE", "0"),
        ("SQREEN_MAX_QUEUE_EVENTS", "many"),
        ("SQREEN_STRIP_SENSITIVE_DATA", "maybe"),
        ("SQREEN_URL", "ftp://collector"),
        ("SQREEN_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("SQREEN_SENSITIVE_KEYS", "pass("),
    ],
)
def test_bad_environment_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    option = variable.removeprefix("SQREEN_").lower()
    with pytest.raises(ConfigurationError) as info:
        sqreen_mw.Client()
    assert variable in str(info.value) or option in str(info.value)
