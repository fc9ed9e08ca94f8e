"""Client IP resolution through trusted proxies.

Most SDKs take the first public address of ``X-Forwarded-For``, which any client forges. Here the answer starts from
the socket peer and only believes a header when the hop that wrote it is a trusted proxy:

1. The peer is not trusted: it is the client, and every forwarding header is ignored (spoofing has no effect).
2. The peer is trusted and ``ip_header`` is configured (e.g. ``CF-Connecting-IP``, case-insensitive) and holds a
   valid address: that address is the client (the right-most valid one when the header holds a list).
3. Otherwise the first present header of ``X-Forwarded-For``, ``Forwarded`` (the ``for=`` parameters of RFC 7239)
   and ``X-Real-IP`` is walked from the right: while the current hop is trusted, step one address left. The first
   untrusted address is the client; when every address is trusted, the left-most one is.
4. An entry that is not an IP address (garbage, RFC 7239 ``unknown`` or ``_obfuscated`` identifiers, an element
   without ``for=``) ends the walk: the last good hop, which may be the peer itself, is the answer. An address
   written left of such an entry was relayed by a node we cannot vouch for. Empty list entries are skipped.

Addresses may be IPv4 or IPv6, with ports (``1.2.3.4:80``, ``[::1]:80``), brackets, quotes or zone ids
(``fe80::1%eth0``); those are stripped, IPv4-mapped IPv6 (``::ffff:1.2.3.4``) becomes IPv4, and the result is the
canonical compressed form (``2001:db8::1``).

``peer=None`` (or ``""``) means a unix socket or a server that does not know the peer; the local front end is then
trusted and the headers decide (``None`` when there are none). A peer that is not an IP address (e.g. Starlette's
``"testclient"``) is untrusted and yields ``None``.

Trusted by default (:data:`DEFAULT_TRUSTED_PROXIES`): loopback only, ``127.0.0.0/8`` and ``::1``, as uvicorn and
gunicorn do (``forwarded_allow_ips``). Trusting every private network by default would let any host of a 10/8
office or container network write its own ``X-Forwarded-For`` and pick the address that blocking acts on.

``trusted_proxies="private"`` (alone or as one entry of a list, e.g. ``"private, 100.64.0.0/10"``) trusts
:data:`PRIVATE_TRUSTED_PROXIES`: loopback, RFC 1918 ``10.0.0.0/8``, ``172.16.0.0/12`` and ``192.168.0.0/16``,
link-local ``169.254.0.0/16`` and ``fe80::/10``, unique-local ``fc00::/7``. This is deliberately *not*
:attr:`ipaddress.IPv4Address.is_private`, which also calls the documentation ranges (``192.0.2.0/24``,
``198.51.100.0/24``, ``203.0.113.0/24``, ``2001:db8::/32``), ``0.0.0.0/8``, benchmarking and reserved networks
private: nobody runs proxies there, and addresses from those ranges in tests and examples must behave like the public
addresses they stand for. ``trusted_proxies="*"`` trusts every hop (the left-most valid address wins: only for apps
reachable solely through proxies that overwrite the header); ``trusted_proxies=""`` trusts nothing, so the peer is
always the client.

A forwarding header (or the configured ``ip_header``) arriving from a peer that is not trusted is ignored, and the
first time that happens in a process one warning on logger ``sqreen_mw`` names the peer and the option to set: an app
behind a proxy that is not on loopback would otherwise record (and block) its proxy's address for every client. A
header that contains the peer's own address is not reported: the server already applied it (uvicorn's
``--proxy-headers`` makes the client it read there the peer).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping

from ._exceptions import ConfigurationError

logger = logging.getLogger("sqreen_mw")

#: The networks trusted when ``trusted_proxies`` is not given: loopback only.
DEFAULT_TRUSTED_PROXIES: tuple[str, ...] = ("127.0.0.0/8", "::1/128")

#: The networks ``trusted_proxies="private"`` stands for: loopback, RFC 1918, link-local and unique-local.
PRIVATE_TRUSTED_PROXIES: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fe80::/10",
    "fc00::/7",
)

_CACHE_SIZE = 4096
_FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
_warned_untrusted = False  # the untrusted-peer warning is logged once per process
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(text: str) -> _Address | None:
    """The address in one header entry or peer string, or ``None`` when it is not one."""
    s = text.strip()
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        s = s[1:-1].strip()
    if s.startswith("["):
        end = s.find("]")
        rest = s[end + 1 :]
        if end < 0 or (rest and not (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit())):
            return None
        s = s[1:end]
    elif s.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has at least two colons
        s, _, port = s.partition(":")
        if not (port.isascii() and port.isdigit()):
            return None
    if ":" in s:
        s = s.partition("%")[0]  # zone id: meaningless beyond the host that wrote it
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_network(entry: str) -> _Network | None:
    """The network (or single address, as a /32 or /128) an entry names, or ``None`` when it is not one.

    Host bits are ignored (``10.0.0.1/8`` is ``10.0.0.0/8``), brackets are stripped, and an IPv4-mapped IPv6 network
    becomes the IPv4 network it maps, since addresses are unmapped before any check.
    """
    try:
        net = ipaddress.ip_network(entry.strip().strip("[]"), strict=False)
    except ValueError:
        return None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:  # ::ffff:10.0.0.0/104 means 10.0.0.0/8: addresses are unmapped before the check
            return ipaddress.IPv4Network(f"{mapped}/{net.prefixlen - 96}")
    return net


def _bare(peer: str) -> str:
    """The address part of a peer string (``[::1]:80`` -> ``::1``, ``1.2.3.4:80`` -> ``1.2.3.4``)."""
    if peer.startswith("["):
        return peer[1:].partition("]")[0]
    return peer.partition(":")[0] if peer.count(":") == 1 else peer


def _forwarded_for(value: str) -> list[str]:
    # RFC 7239: elements separated by ",", pairs by ";". An element without for= becomes "unknown": it ends the walk.
    nodes = []
    for element in value.split(","):
        if not element.strip():
            continue
        node = "unknown"
        for pair in element.split(";"):
            name, eq, val = pair.partition("=")
            if eq and name.strip().lower() == "for":
                node = val
                break
        nodes.append(node)
    return nodes


class ClientIPResolver:
    """Finds the client address of a request behind zero or more trusted proxies (see the module docstring).

    :param trusted_proxies: ``None`` for :data:`DEFAULT_TRUSTED_PROXIES` (loopback); ``"*"`` to trust every hop;
        ``"private"`` for :data:`PRIVATE_TRUSTED_PROXIES`; otherwise CIDRs or single addresses (``"private"`` may be
        one of them), as one comma-separated string or an iterable of strings.
    :param ip_header: a header set by the trusted front end that holds the client address (e.g.
        ``"CF-Connecting-IP"``), consulted before ``X-Forwarded-For``; case-insensitive.
    :raises ConfigurationError: an entry of ``trusted_proxies`` is not an address or network, or an option has the
        wrong type.
    """

    __slots__ = ("_cache", "_ip_header", "_networks", "_resolved", "_trust_all")

    def __init__(self, trusted_proxies: str | Iterable[str] | None = None, ip_header: str | None = None) -> None:
        if trusted_proxies is None:
            entries: list[str] = list(DEFAULT_TRUSTED_PROXIES)
        elif isinstance(trusted_proxies, str):
            entries = trusted_proxies.split(",")
        elif isinstance(trusted_proxies, Iterable):
            entries = list(trusted_proxies)
        else:
            raise ConfigurationError(
                f"trusted_proxies must be a str or an iterable of str, got {type(trusted_proxies).__name__}"
            )
        self._trust_all = False
        self._networks: tuple[_Network, ...] = ()
        networks: list[_Network] = []
        for entry in entries:
            if not isinstance(entry, str):
                raise ConfigurationError(f"trusted_proxies entries must be str, got {type(entry).__name__} {entry!r}")
            if entry.strip() == "*":
                self._trust_all = True
            elif entry.strip().lower() == "private":
                networks.extend(net for net in map(parse_network, PRIVATE_TRUSTED_PROXIES) if net is not None)
            elif entry.strip():
                net = parse_network(entry)
                if net is None:
                    raise ConfigurationError(f"trusted_proxies: {entry.strip()!r} is not an IP address or CIDR network")
                networks.append(net)
        self._networks = tuple(dict.fromkeys(networks))  # "private, 10.0.0.0/8" lists 10/8 once
        if ip_header is not None and not isinstance(ip_header, str):
            raise ConfigurationError(f"ip_header must be a str header name, got {type(ip_header).__name__}")
        self._ip_header = (ip_header.strip().lower() or None) if ip_header else None
        # raw entry -> (canonical address or None when invalid, trusted)
        self._cache: dict[str, tuple[str | None, bool]] = {}
        # (peer, the header values resolve() reads) -> client address, for resolve_cached()
        self._resolved: dict[tuple[str | None, ...], str | None] = {}

    @property
    def ip_header(self) -> str | None:
        """The configured client-address header, lower-cased, or ``None``."""
        return self._ip_header

    @property
    def trust_all(self) -> bool:
        """Whether every hop is trusted (``trusted_proxies="*"``)."""
        return self._trust_all

    @property
    def networks(self) -> tuple[str, ...]:
        """The trusted networks in CIDR form (``("127.0.0.0/8", "::1/128")`` by default); empty with ``"*"`` alone."""
        return tuple(str(net) for net in self._networks)

    def is_trusted(self, address: str) -> bool:
        """Whether ``address`` (any accepted spelling) is a trusted proxy.

        :param address: an IP address, possibly with a port, brackets or a zone id.
        :return: ``True`` when it parses and lies in a trusted network (or everything is trusted).
        """
        return self._lookup(address)[1]

    def _lookup(self, raw: str) -> tuple[str | None, bool]:
        info = self._cache.get(raw)
        if info is None:
            addr = _parse(raw)
            if addr is None:
                info = (None, False)
            else:
                trusted = self._trust_all or any(addr in net for net in self._networks if net.version == addr.version)
                info = (str(addr), trusted)
            if len(self._cache) >= _CACHE_SIZE:  # bounded: a client sending random headers cannot grow it
                self._cache.clear()
            self._cache[raw] = info
        return info

    def resolve(self, peer: str | None, headers: Mapping[str, str]) -> str | None:
        """The client address of one request.

        :param peer: the socket peer address (ASGI ``scope["client"][0]``, WSGI ``REMOTE_ADDR``); ``None`` for a
            unix socket.
        :param headers: lower-cased header names to values, repeated headers joined with ``", "``.
        :return: the canonical client address, or ``None`` when it cannot be known.
        """
        if peer:
            client, trusted = self._cache.get(peer) or self._lookup(peer)
            if not trusted:
                if not _warned_untrusted:
                    self._warn_if_forwarded(peer, headers)
                return client
        else:
            client = None
        if self._ip_header is not None:
            value = headers.get(self._ip_header)
            if value:
                for entry in reversed(value.split(",")):
                    found = self._lookup(entry.strip())[0]
                    if found is not None:
                        return found
        value = headers.get("x-forwarded-for")
        if value:
            hops = value.split(",")
        else:
            value = headers.get("forwarded")
            if value:
                hops = _forwarded_for(value)
            else:
                value = headers.get("x-real-ip")
                if not value:
                    return client
                hops = value.split(",")
        for hop in reversed(hops):
            hop = hop.strip()
            if not hop:
                continue
            found, trusted = self._lookup(hop)
            if found is None:
                break
            client = found
            if not trusted:
                break
        return client

    def resolve_cached(self, peer: str | None, headers: Mapping[str, str]) -> str | None:
        """:meth:`resolve`, remembered per distinct peer and forwarding header values (bounded like the hop cache).

        Most requests of an app come through the same proxies from a limited set of clients: the walk is done once
        per distinct ``(peer, ip_header, X-Forwarded-For, Forwarded, X-Real-IP)``.
        """
        get = headers.get
        key = (peer, get(self._ip_header) if self._ip_header is not None else None, get("x-forwarded-for"),
               get("forwarded"), get("x-real-ip"))
        try:
            return self._resolved[key]
        except KeyError:
            pass
        client = self.resolve(peer, headers)
        if len(self._resolved) >= _CACHE_SIZE:  # bounded: a client sending random headers cannot grow it
            self._resolved.clear()
        self._resolved[key] = client
        return client

    def _warn_if_forwarded(self, peer: str, headers: Mapping[str, str]) -> None:
        global _warned_untrusted
        names = (*_FORWARDING_HEADERS, self._ip_header) if self._ip_header else _FORWARDING_HEADERS
        for name in names:
            value = headers.get(name)
            if value and _bare(peer) not in value:
                # (A header that names the peer itself was already applied by the server: uvicorn's
                # --proxy-headers replaces the peer with the client it read there. Nothing was ignored.)
                _warned_untrusted = True
                logger.warning(
                    "sqreen_mw ignored the %s header of a request from %s, which is not a trusted proxy: the peer is "
                    "taken as the client IP. If the app runs behind a proxy, set trusted_proxies "
                    "(SQREEN_TRUSTED_PROXIES) to its address or network, or to \"private\" (this is logged once)",
                    name, peer,
                )
                return
