"""Who is calling, by address: the client IP of an ASGI scope, and the rate-limit key it gets.

Everything here reads attacker-written input (``X-Forwarded-For`` is whatever the client
sent, plus what each proxy appended), so the rules are strict:

* The TCP peer is the client, unless the peer is one of the *trusted proxies*. Only then
  is ``X-Forwarded-For`` read: every line of it, as one list (a proxy that appends a line
  of its own leaves the client's line in front of it), walked from the right past the
  trusted hops. The first hop that is not a trusted proxy is the client.
* A hop must be a valid IP address (``203.0.113.5``, ``203.0.113.5:4711``, ``2001:db8::1``,
  ``[2001:db8::1]:4711``); anything else stops the walk, and the trusted hop that passed it
  on is taken as the client (the client never chooses its key). At most
  :data:`MAX_FORWARDED_HOPS` hops are walked.
* Addresses are normalised (:mod:`ipaddress`): every spelling of one address is one key, and
  an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack socket reports) is the
  IPv4 address, for the key and for the trusted-proxy check alike.
* IPv6 clients are keyed by their network, ``/64`` by default (``ipv6_prefix``): one
  subscriber gets a whole /64 (often more) and could otherwise take a fresh limit per
  address.
* Behind a Unix socket (``uvicorn --uds``) there is no TCP peer; the proxy in front is the
  only one that knows the client. Trust it explicitly with ``"unix"`` in ``trusted_proxies``:
  the client then comes from its ``X-Forwarded-For``. Without that (or when the proxy sends
  no usable header) no address can be found: every such request shares the key
  ``ip:unknown``, and a warning is logged (once per :class:`ClientIP`) so it never happens
  silently.

Note that uvicorn has proxy handling of its own (``--proxy-headers``, on by default, trusting
``--forwarded-allow-ips``, 127.0.0.1 by default): it rewrites the scope's client before any
middleware runs, and this module then starts from what uvicorn decided.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from redkit.errors import InvalidInput

__all__ = [
    "MAX_FORWARDED_HOPS",
    "UNIX",
    "ClientIP",
    "IPAddress",
    "TrustedProxies",
    "client_ip",
    "parse_ip",
]

log = logging.getLogger("redkit.ratelimit")

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Scope: TypeAlias = Mapping[str, Any]

UNIX = "unix"
"""The ``trusted_proxies`` entry that trusts the peer of a Unix socket (no TCP address)."""

MAX_FORWARDED_HOPS = 16
"""How many ``X-Forwarded-For`` hops are walked at most: a chain of trusted proxies is short,
and the walk must not cost more for a client that sends a long header."""

# The longest hop worth parsing: "[" + a full IPv6 spelling with an IPv4 tail (45) + "]:65535".
_MAX_HOP_CHARS = 64
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_ip(text: str) -> IPAddress | None:
    """``text`` as a normalised IP address, or ``None`` when it is not one.

    Accepts ``a.b.c.d``, ``a.b.c.d:port``, an IPv6 address (a zone such as ``%eth0`` is
    dropped) and ``[v6]`` or ``[v6]:port``. An IPv4-mapped IPv6 address becomes IPv4.
    """
    text = text.strip()
    if not text or len(text) > _MAX_HOP_CHARS:
        return None
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :]
        if end == -1 or (rest and not _is_port_suffix(rest)):
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port (an IPv6 address has at least two colons)
        host, _, port = text.partition(":")
        if not _is_port_suffix(":" + port):
            return None
        text = host
    text = text.partition("%")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_port_suffix(text: str) -> bool:
    port = text[1:]
    return text[:1] == ":" and 0 < len(port) <= 5 and port.isascii() and port.isdigit()


def _network(text: str) -> IPNetwork:
    net = ipaddress.ip_network(text.strip(), strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        # "::ffff:10.0.0.0/104" is 10.0.0.0/8: peers are compared in their IPv4 form.
        return ipaddress.IPv4Network(
            (int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96), strict=False
        )
    return net


class TrustedProxies:
    """Addresses or networks of proxies whose ``X-Forwarded-For`` may be believed.

    Entries are IP addresses or networks (``"10.0.0.0/8"``, ``"2001:db8::/32"``), and
    :data:`UNIX` (``"unix"``) to trust the peer of a Unix socket. Anything else is an
    :class:`~redkit.errors.InvalidInput` error.
    """

    def __init__(self, proxies: Iterable[str] = ()) -> None:
        if isinstance(proxies, str):
            # A lone string would be iterated character by character: take it as one entry.
            proxies = [proxies]
        networks: list[IPNetwork] = []
        self.unix = False
        for entry in proxies:
            if not isinstance(entry, str):
                raise InvalidInput(f"a trusted proxy must be a string, got {entry!r}")
            if entry.strip().lower() == UNIX:
                self.unix = True
                continue
            try:
                networks.append(_network(entry))
            except ValueError as exc:
                raise InvalidInput(
                    f"bad trusted proxy address: {exc} (use an IP address, a network such as "
                    f"'10.0.0.0/8', or {UNIX!r} for the peer of a Unix socket)"
                ) from exc
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return self.unix or bool(self.networks)

    def __repr__(self) -> str:
        entries = [str(net) for net in self.networks] + ([UNIX] if self.unix else [])
        return f"<TrustedProxies {entries}>"

    def trusts(self, ip: IPAddress) -> bool:
        """Is ``ip`` (already normalised, see :func:`parse_ip`) a trusted proxy?"""
        return any(ip in net for net in self.networks)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str) or not self.networks:
            return False
        ip = parse_ip(address)
        return ip is not None and self.trusts(ip)


def _forwarded_hops(scope: Scope) -> list[str]:
    """The last :data:`MAX_FORWARDED_HOPS` hops of every ``X-Forwarded-For`` line, right first."""
    lines = [
        bytes(value).decode("latin-1")
        for name, value in scope.get("headers") or ()
        if bytes(name).lower() == b"x-forwarded-for"
    ]
    if not lines:
        return []
    # Several lines are one list, in order (RFC 9110, 5.3): the last line is the nearest hop.
    hops = ",".join(lines).rsplit(",", MAX_FORWARDED_HOPS)[-MAX_FORWARDED_HOPS:]
    hops.reverse()
    return hops


def find_client(scope: Scope, trusted: TrustedProxies | None) -> IPAddress | None:
    """The caller's normalised address, or ``None`` when the scope does not tell."""
    client = scope.get("client")
    if client:
        peer = parse_ip(str(client[0]))
        if peer is None or trusted is None or not trusted.trusts(peer):
            return peer
    elif trusted is None or not trusted.unix:
        return None
    else:
        peer = None  # a trusted Unix socket peer: only its header knows the client
    nearest: IPAddress | None = peer
    for hop in _forwarded_hops(scope):
        ip = parse_ip(hop)
        if ip is None:
            # Not an address: whatever wrote it, the trusted hop that passed it on is the
            # last one that can be believed.
            break
        if not trusted.trusts(ip):
            return ip
        nearest = ip
    return nearest


def client_ip(scope: Scope, trusted: TrustedProxies | None = None) -> str:
    """The caller's IP as text: the TCP peer, or through trusted proxies the first untrusted
    hop of ``X-Forwarded-For``; ``"unknown"`` when the scope does not tell."""
    ip = find_client(scope, trusted)
    return "unknown" if ip is None else str(ip)


class ClientIP:
    """The rate-limit key of an anonymous caller: ``ip:`` and its address (or network).

    ``trusted_proxies`` as in :class:`TrustedProxies`; ``ipv6_prefix`` (default 64) is the
    size of the IPv6 network that shares one key (128 keys each address on its own).
    """

    def __init__(
        self, trusted_proxies: Iterable[str] | TrustedProxies = (), *, ipv6_prefix: int = 64
    ) -> None:
        if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int):
            raise InvalidInput(f"ipv6_prefix must be an int, got {ipv6_prefix!r}")
        if not 8 <= ipv6_prefix <= 128:
            raise InvalidInput(f"ipv6_prefix must be between 8 and 128, got {ipv6_prefix}")
        self.trusted = (
            trusted_proxies
            if isinstance(trusted_proxies, TrustedProxies)
            else TrustedProxies(trusted_proxies)
        )
        self.ipv6_prefix = ipv6_prefix
        self._warned = False

    def __repr__(self) -> str:
        return f"<ClientIP trusted={self.trusted!r} ipv6_prefix=/{self.ipv6_prefix}>"

    def key_of(self, ip: IPAddress) -> str:
        """``ip:203.0.113.5`` for IPv4, ``ip:2001:db8:1:2::/64`` for IPv6 (by the prefix)."""
        if isinstance(ip, ipaddress.IPv4Address) or self.ipv6_prefix == 128:
            return f"ip:{ip}"
        network = ipaddress.IPv6Network((ip, self.ipv6_prefix), strict=False)
        return f"ip:{network}"

    def key(self, scope: Scope) -> str:
        """The key of the caller of ``scope`` (``ip:unknown``, with a warning, if none)."""
        ip = find_client(scope, self.trusted)
        if ip is not None:
            return self.key_of(ip)
        if not self._warned:
            self._warned = True
            log.warning(
                "rate limiting: no client address for a %s request (client %r): every such "
                "request shares the key 'ip:unknown'. Behind a Unix socket, put %r in "
                "trusted_proxies and have the proxy send X-Forwarded-For.",
                scope.get("type", "?"),
                scope.get("client"),
                UNIX,
            )
        return "ip:unknown"
