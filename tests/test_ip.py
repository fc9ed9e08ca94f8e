from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqreen_mw import _ip
from sqreen_mw._exceptions import ConfigurationError
from sqreen_mw._ip import DEFAULT_TRUSTED_PROXIES, PRIVATE_TRUSTED_PROXIES, ClientIPResolver, _parse

DEFAULT = ClientIPResolver()
PRIVATE = ClientIPResolver("private")


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        # no forwarding headers: the peer, trusted or not
        ("203.0.113.9", {}, "203.0.113.9"),
        ("127.0.0.1", {}, "127.0.0.1"),
        ("::1", {}, "::1"),
        (None, {}, None),
        ("", {}, None),
        ("testclient", {}, None),
        ("testclient", {"x-forwarded-for": "1.2.3.4"}, None),
        # spoofing from an untrusted peer has no effect
        ("8.8.8.8", {"x-forwarded-for": "1.2.3.4"}, "8.8.8.8"),
        ("8.8.8.8", {"x-forwarded-for": "1.2.3.4, 10.0.0.1"}, "8.8.8.8"),
        ("8.8.8.8", {"forwarded": "for=1.2.3.4"}, "8.8.8.8"),
        ("8.8.8.8", {"x-real-ip": "1.2.3.4"}, "8.8.8.8"),
        ("2001:4860::8888", {"x-forwarded-for": "1.2.3.4"}, "2001:4860::8888"),
        # documentation ranges are public for us: a 192.0.2.x / 198.51.100.x / 203.0.113.x peer is not a proxy
        ("192.0.2.10", {"x-forwarded-for": "1.2.3.4"}, "192.0.2.10"),
        ("198.51.100.10", {"x-forwarded-for": "1.2.3.4"}, "198.51.100.10"),
        ("203.0.113.10", {"x-forwarded-for": "1.2.3.4"}, "203.0.113.10"),
        ("2001:db8::10", {"x-forwarded-for": "1.2.3.4"}, "2001:db8::10"),
        ("100.64.0.1", {"x-forwarded-for": "1.2.3.4"}, "100.64.0.1"),  # CGNAT: not trusted by default
        # one trusted proxy
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("10.1.2.3", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("172.16.0.1", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("172.31.255.254", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("172.32.0.1", {"x-forwarded-for": "203.0.113.7"}, "172.32.0.1"),  # outside 172.16/12
        ("192.168.1.1", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("169.254.1.1", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("fe80::1", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("fd00::1", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("::ffff:10.0.0.1", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        # a chain: the client forged the left-most entry, the right-most untrusted one wins
        ("10.0.0.1", {"x-forwarded-for": "6.6.6.6, 203.0.113.7, 10.0.0.2"}, "203.0.113.7"),
        ("10.0.0.1", {"x-forwarded-for": "6.6.6.6,203.0.113.7,10.0.0.2,10.0.0.3"}, "203.0.113.7"),
        ("10.0.0.1", {"x-forwarded-for": "203.0.113.7, 198.51.100.1"}, "198.51.100.1"),
        # every hop trusted: the left-most valid one
        ("10.0.0.1", {"x-forwarded-for": "192.168.0.5, 10.0.0.2"}, "192.168.0.5"),
        (None, {"x-forwarded-for": "10.0.0.9"}, "10.0.0.9"),
        (None, {"x-forwarded-for": "203.0.113.7, 127.0.0.1"}, "203.0.113.7"),
        # garbage ends the walk: the last good hop is the answer
        ("10.0.0.1", {"x-forwarded-for": "203.0.113.7, garbage"}, "10.0.0.1"),
        ("10.0.0.1", {"x-forwarded-for": "203.0.113.7, garbage, 10.0.0.2"}, "10.0.0.2"),
        ("10.0.0.1", {"x-forwarded-for": "garbage, 203.0.113.7"}, "203.0.113.7"),
        ("10.0.0.1", {"x-forwarded-for": "1.2.3.4.5"}, "10.0.0.1"),
        ("10.0.0.1", {"x-forwarded-for": "01.2.3.4"}, "10.0.0.1"),
        ("10.0.0.1", {"x-forwarded-for": "[::1"}, "10.0.0.1"),
        ("10.0.0.1", {"x-forwarded-for": "1.2.3.4:http"}, "10.0.0.1"),
        ("10.0.0.1", {"x-forwarded-for": "[2001:db8::1]x"}, "10.0.0.1"),
        ("10.0.0.1", {"x-forwarded-for": "1.2.3.4%eth0"}, "10.0.0.1"),
        # empty entries are skipped; an empty header counts as absent
        ("10.0.0.1", {"x-forwarded-for": "203.0.113.7, , 10.0.0.2,"}, "203.0.113.7"),
        ("10.0.0.1", {"x-forwarded-for": ""}, "10.0.0.1"),
        ("10.0.0.1", {"x-forwarded-for": " , "}, "10.0.0.1"),
        # ports, brackets, zone ids, mapped addresses, canonical form
        ("10.0.0.1", {"x-forwarded-for": "203.0.113.7:4711"}, "203.0.113.7"),
        ("10.0.0.1", {"x-forwarded-for": "[2001:DB8:0:0::1]:443"}, "2001:db8::1"),
        ("10.0.0.1", {"x-forwarded-for": "[2001:db8::1]"}, "2001:db8::1"),
        ("10.0.0.1", {"x-forwarded-for": "2001:0db8:0000:0000:0000:0000:0000:0001"}, "2001:db8::1"),
        ("10.0.0.1", {"x-forwarded-for": "fe80::1%eth0, 10.0.0.2"}, "fe80::1"),
        ("10.0.0.1", {"x-forwarded-for": "::ffff:203.0.113.7"}, "203.0.113.7"),
        ("10.0.0.1", {"x-forwarded-for": "[::ffff:203.0.113.7]:80"}, "203.0.113.7"),
        ("::ffff:8.8.8.8", {"x-forwarded-for": "1.2.3.4"}, "8.8.8.8"),
        ("[::1]:8000", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("127.0.0.1:8000", {}, "127.0.0.1"),
        # Forwarded (RFC 7239), used when X-Forwarded-For is absent
        ("10.0.0.1", {"forwarded": "for=203.0.113.7"}, "203.0.113.7"),
        ("10.0.0.1", {"forwarded": "For=203.0.113.7;proto=https;by=10.0.0.1"}, "203.0.113.7"),
        ("10.0.0.1", {"forwarded": 'for="[2001:db8:cafe::17]:4711"'}, "2001:db8:cafe::17"),
        ("10.0.0.1", {"forwarded": 'for="203.0.113.7:4711"'}, "203.0.113.7"),
        ("10.0.0.1", {"forwarded": "for=6.6.6.6, for=203.0.113.7, for=10.0.0.2"}, "203.0.113.7"),
        ("10.0.0.1", {"forwarded": "proto=https;for=203.0.113.7, for=10.0.0.2"}, "203.0.113.7"),
        ("10.0.0.1", {"forwarded": "for=203.0.113.7, for=unknown"}, "10.0.0.1"),
        ("10.0.0.1", {"forwarded": "for=203.0.113.7, for=_hidden, for=10.0.0.2"}, "10.0.0.2"),
        ("10.0.0.1", {"forwarded": "for=203.0.113.7, proto=https"}, "10.0.0.1"),  # element without for=
        ("10.0.0.1", {"forwarded": "for=unknown, for=203.0.113.7"}, "203.0.113.7"),
        ("10.0.0.1", {"forwarded": "for=203.0.113.7", "x-forwarded-for": "198.51.100.1"}, "198.51.100.1"),
        # X-Real-IP, used when both others are absent
        ("10.0.0.1", {"x-real-ip": "203.0.113.7"}, "203.0.113.7"),
        ("10.0.0.1", {"x-real-ip": "garbage"}, "10.0.0.1"),
        ("10.0.0.1", {"x-real-ip": "203.0.113.7", "forwarded": "for=198.51.100.1"}, "198.51.100.1"),
    ],
)
def test_resolve_private(peer: str | None, headers: dict[str, str], expected: str | None) -> None:
    assert PRIVATE.resolve(peer, headers) == expected
    assert PRIVATE.resolve(peer, headers) == expected  # the cached answer is the same


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        # the default trusts loopback only, as uvicorn and gunicorn do
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("127.8.9.10", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("::1", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("[::1]:8000", {"forwarded": "for=203.0.113.7"}, "203.0.113.7"),
        ("::ffff:127.0.0.1", {"x-real-ip": "203.0.113.7"}, "203.0.113.7"),
        # a private peer is no proxy unless configured: it cannot pick its own recorded (and blocked) address
        ("10.1.2.3", {"x-forwarded-for": "203.0.113.7"}, "10.1.2.3"),
        ("172.16.0.1", {"x-forwarded-for": "203.0.113.7"}, "172.16.0.1"),
        ("192.168.1.1", {"forwarded": "for=203.0.113.7"}, "192.168.1.1"),
        ("169.254.1.1", {"x-real-ip": "203.0.113.7"}, "169.254.1.1"),
        ("fe80::1", {"x-forwarded-for": "203.0.113.7"}, "fe80::1"),
        ("fd00::1", {"x-forwarded-for": "203.0.113.7"}, "fd00::1"),
        # behind loopback, a private hop is where the walk stops
        ("127.0.0.1", {"x-forwarded-for": "6.6.6.6, 10.0.0.2"}, "10.0.0.2"),
        ("127.0.0.1", {"x-forwarded-for": "6.6.6.6, 203.0.113.7, 127.0.0.1"}, "203.0.113.7"),
        (None, {"x-forwarded-for": "203.0.113.7, 127.0.0.1"}, "203.0.113.7"),
        ("8.8.8.8", {"x-forwarded-for": "1.2.3.4"}, "8.8.8.8"),
    ],
)
def test_resolve_default(peer: str | None, headers: dict[str, str], expected: str | None) -> None:
    assert DEFAULT.resolve(peer, headers) == expected
    assert DEFAULT.resolve(peer, headers) == expected  # the cached answer is the same


def test_default_is_loopback_only() -> None:
    assert DEFAULT_TRUSTED_PROXIES == ("127.0.0.0/8", "::1/128")
    assert DEFAULT.networks == DEFAULT_TRUSTED_PROXIES
    assert not DEFAULT.trust_all
    assert PRIVATE.networks == PRIVATE_TRUSTED_PROXIES
    assert ClientIPResolver("*").trust_all and ClientIPResolver("*").networks == ()


@pytest.mark.parametrize(
    ("trusted", "networks"),
    [
        ("private", PRIVATE_TRUSTED_PROXIES),
        ("PRIVATE", PRIVATE_TRUSTED_PROXIES),
        (["private"], PRIVATE_TRUSTED_PROXIES),
        ("private, 100.64.0.0/10", (*PRIVATE_TRUSTED_PROXIES, "100.64.0.0/10")),
        ("10.0.0.0/8, private", ("10.0.0.0/8", *(n for n in PRIVATE_TRUSTED_PROXIES if n != "10.0.0.0/8"))),
        ("198.51.100.7", ("198.51.100.7/32",)),
        ("", ()),
    ],
)
def test_private_keyword_and_networks(trusted: str | list[str], networks: tuple[str, ...]) -> None:
    assert ClientIPResolver(trusted).networks == networks


@pytest.fixture
def fresh_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_ip, "_warned_untrusted", False)


@pytest.mark.parametrize(
    ("headers", "name"),
    [
        ({"x-forwarded-for": "203.0.113.7"}, "x-forwarded-for"),
        ({"forwarded": "for=203.0.113.7"}, "forwarded"),
        ({"x-real-ip": "203.0.113.7"}, "x-real-ip"),
        ({"cf-connecting-ip": "203.0.113.7"}, "cf-connecting-ip"),
    ],
)
def test_forwarding_header_from_untrusted_peer_warns_once(
    fresh_warning: None, caplog: pytest.LogCaptureFixture, headers: dict[str, str], name: str
) -> None:
    resolver = ClientIPResolver(ip_header="CF-Connecting-IP")
    assert resolver.resolve("10.0.0.5", headers) == "10.0.0.5"
    assert resolver.resolve("10.0.0.6", headers) == "10.0.0.6"
    assert ClientIPResolver().resolve("10.0.0.7", {"x-forwarded-for": "1.2.3.4"}) == "10.0.0.7"
    warnings = [r for r in caplog.records if r.name == "sqreen_mw" and "trusted proxy" in r.getMessage()]
    assert len(warnings) == 1, "one warning per process"
    message = warnings[0].getMessage()
    assert name in message and "10.0.0.5" in message
    assert "trusted_proxies" in message and "SQREEN_TRUSTED_PROXIES" in message and '"private"' in message


@pytest.mark.parametrize(
    ("peer", "headers"),
    [
        ("10.0.0.5", {}),  # no forwarding header: nothing to say
        ("10.0.0.5", {"x-forwarded-for": ""}),
        ("10.0.0.5", {"user-agent": "x"}),
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.7"}),  # trusted peer: the header is used
        (None, {"x-forwarded-for": "203.0.113.7"}),
        # uvicorn --proxy-headers already made the header's client the peer: nothing was ignored
        ("198.51.100.10", {"x-forwarded-for": "198.51.100.10"}),
        ("198.51.100.10:4711", {"x-forwarded-for": "6.6.6.6, 198.51.100.10"}),
        ("[2001:db8::7]:80", {"x-forwarded-for": "2001:db8::7"}),
    ],
)
def test_no_warning_without_an_ignored_header(
    fresh_warning: None, caplog: pytest.LogCaptureFixture, peer: str | None, headers: dict[str, str]
) -> None:
    DEFAULT.resolve(peer, headers)
    assert not [r for r in caplog.records if r.name == "sqreen_mw"]


@pytest.mark.parametrize(
    ("trusted", "peer", "headers", "expected"),
    [
        ("*", "8.8.8.8", {"x-forwarded-for": "6.6.6.6, 1.2.3.4"}, "6.6.6.6"),
        ("*", "8.8.8.8", {"x-forwarded-for": "6.6.6.6, junk, 1.2.3.4"}, "1.2.3.4"),
        (["*"], "8.8.8.8", {}, "8.8.8.8"),
        ("", "127.0.0.1", {"x-forwarded-for": "203.0.113.7"}, "127.0.0.1"),
        ([], "10.0.0.1", {"x-forwarded-for": "203.0.113.7"}, "10.0.0.1"),
        ("198.51.100.0/24", "198.51.100.3", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("198.51.100.0/24", "127.0.0.1", {"x-forwarded-for": "203.0.113.7"}, "127.0.0.1"),  # replaces defaults
        ("198.51.100.3, 2001:db8::/32", "2001:db8::5", {"x-forwarded-for": "198.51.100.3, 8.8.8.8"}, "8.8.8.8"),
        ("198.51.100.3, 2001:db8::/32", "2001:db8::5", {"x-forwarded-for": "1.1.1.1, 198.51.100.3"}, "1.1.1.1"),
        (("10.0.0.0/8", "[::1]"), "::1", {"x-forwarded-for": "10.9.9.9"}, "10.9.9.9"),
        (["::ffff:10.0.0.0/104"], "10.1.1.1", {"x-forwarded-for": "8.8.8.8"}, "8.8.8.8"),
        (["10.0.0.1/8"], "10.200.0.1", {"x-forwarded-for": "8.8.8.8"}, "8.8.8.8"),  # host bits ignored
        ([" 10.0.0.1 ", ""], "10.0.0.1", {"x-forwarded-for": "8.8.8.8"}, "8.8.8.8"),
        (PRIVATE_TRUSTED_PROXIES, "192.168.3.3", {"x-forwarded-for": "8.8.8.8"}, "8.8.8.8"),
        (DEFAULT_TRUSTED_PROXIES, "192.168.3.3", {"x-forwarded-for": "8.8.8.8"}, "192.168.3.3"),
        ("private, 100.64.0.0/10", "100.64.0.1", {"x-forwarded-for": "8.8.8.8"}, "8.8.8.8"),
    ],
)
def test_resolve_configured(trusted: str | list[str], peer: str, headers: dict[str, str], expected: str) -> None:
    assert ClientIPResolver(trusted).resolve(peer, headers) == expected


CF = ClientIPResolver("private", ip_header="CF-Connecting-IP")


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("10.0.0.1", {"cf-connecting-ip": "203.0.113.7", "x-forwarded-for": "6.6.6.6"}, "203.0.113.7"),
        ("10.0.0.1", {"cf-connecting-ip": "2001:db8::7"}, "2001:db8::7"),
        ("10.0.0.1", {"cf-connecting-ip": "6.6.6.6, 203.0.113.7, junk"}, "203.0.113.7"),
        ("10.0.0.1", {"cf-connecting-ip": "10.0.0.5"}, "10.0.0.5"),  # the front end's word, even if private
        ("10.0.0.1", {"cf-connecting-ip": "junk", "x-forwarded-for": "198.51.100.1"}, "198.51.100.1"),
        ("10.0.0.1", {"cf-connecting-ip": "", "x-forwarded-for": "198.51.100.1"}, "198.51.100.1"),
        ("10.0.0.1", {"x-forwarded-for": "198.51.100.1"}, "198.51.100.1"),
        ("10.0.0.1", {"cf-connecting-ip": "junk"}, "10.0.0.1"),
        ("8.8.8.8", {"cf-connecting-ip": "203.0.113.7"}, "8.8.8.8"),  # untrusted peer: ignored
    ],
)
def test_ip_header(peer: str, headers: dict[str, str], expected: str) -> None:
    assert CF.resolve(peer, headers) == expected


def test_ip_header_is_normalised() -> None:
    assert CF.ip_header == "cf-connecting-ip"
    assert ClientIPResolver(ip_header="  ").ip_header is None
    assert ClientIPResolver(ip_header="").ip_header is None
    assert ClientIPResolver().ip_header is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trusted_proxies": "10.0.0.0/8, not-an-ip"}, "'not-an-ip'"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "'10.0.0.0/33'"),
        ({"trusted_proxies": ["localhost"]}, "'localhost'"),
        ({"trusted_proxies": "1.2.3.4:80"}, "'1.2.3.4:80'"),
        ({"trusted_proxies": [10]}, "must be str"),
        ({"trusted_proxies": 10}, "must be a str or an iterable"),
        ({"ip_header": 1}, "ip_header must be a str"),
    ],
)
def test_configuration_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=r"trusted_proxies|ip_header") as info:
        ClientIPResolver(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("address", "trusted"),
    [
        ("127.0.0.1", True),
        ("127.255.0.1", True),
        ("::1", True),
        ("[::1]:80", True),
        ("10.255.255.255", True),
        ("172.15.255.255", False),
        ("192.168.255.1", True),
        ("169.254.169.254", True),
        ("fe80::abcd%eth0", True),
        ("fc00::1", True),
        ("fdff::1", True),
        ("fe00::1", False),
        ("192.0.2.1", False),
        ("198.51.100.1", False),
        ("203.0.113.1", False),
        ("2001:db8::1", False),
        ("0.0.0.0", False),
        ("8.8.8.8", False),
        ("garbage", False),
    ],
)
def test_private_trust(address: str, trusted: bool) -> None:
    assert PRIVATE.is_trusted(address) is trusted
    loopback = address in ("127.0.0.1", "127.255.0.1", "::1", "[::1]:80")
    assert DEFAULT.is_trusted(address) is loopback


def test_documentation_ranges_differ_from_is_private() -> None:
    # The reason PRIVATE_TRUSTED_PROXIES is spelled out: ipaddress calls these private.
    for address in ("192.0.2.1", "198.51.100.1", "203.0.113.1"):
        assert ipaddress.ip_address(address).is_private
        assert not PRIVATE.is_trusted(address)


def test_cache_is_bounded() -> None:
    resolver = ClientIPResolver("private")
    for i in range(10_000):
        assert resolver.resolve("10.0.0.1", {"x-forwarded-for": f"8.8.{i // 256}.{i % 256}"}) is not None
    assert len(resolver._cache) <= 4096


_ipv4 = st.ip_addresses(v=4).map(str)
_any_ip = st.ip_addresses().map(str)
_public = _any_ip.filter(lambda a: not PRIVATE.is_trusted(a))
_entry = st.one_of(_any_ip, st.text(max_size=12), _ipv4.map(lambda a: f"{a}:80"))


@given(peer=_public, xff=st.lists(_entry, max_size=5), forwarded=st.text(max_size=40), real=st.text(max_size=20))
def test_untrusted_peer_is_always_the_answer(peer: str, xff: list[str], forwarded: str, real: str) -> None:
    headers = {"x-forwarded-for": ", ".join(xff), "forwarded": forwarded, "x-real-ip": real, "cf-connecting-ip": real}
    expected = str(_parse(peer))
    assert DEFAULT.resolve(peer, headers) == expected
    assert PRIVATE.resolve(peer, headers) == expected
    assert CF.resolve(peer, headers) == expected


@given(peer=st.one_of(st.none(), _any_ip), xff=st.lists(_entry, max_size=6))
def test_answer_is_the_peer_or_a_canonical_header_address(peer: str | None, xff: list[str]) -> None:
    result = DEFAULT.resolve(peer, {"x-forwarded-for": ", ".join(xff)})
    if result is not None:
        assert str(ipaddress.ip_address(result)) == result
        candidates = {str(_parse(x)) for x in [*xff, peer or ""] if _parse(x) is not None}
        assert result in candidates
    # trusted hops to the right of the answer: everything between the answer and the peer was a trusted proxy
    if result is not None and peer is not None and result != str(_parse(peer)):
        assert DEFAULT.is_trusted(peer)


@given(client=_public, proxies=st.lists(st.sampled_from(["10.0.0.2", "192.168.1.1", "::1", "fd00::9"]), max_size=4))
def test_chain_of_trusted_proxies_yields_the_client(client: str, proxies: list[str]) -> None:
    headers = {"x-forwarded-for": ", ".join(["6.6.6.6", client, *proxies])}
    assert PRIVATE.resolve("127.0.0.1", headers) == str(_parse(client))
