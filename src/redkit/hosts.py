"""``Host`` header values, read as an attacker may write them: shared by every web layer of
redkit (the session middleware's ``Secure`` choice, the cache's ``allowed_hosts``,
:mod:`redkit.flask`, a gateway in front of services), and free of any web framework's imports."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from redkit.errors import InvalidInput

__all__ = ["AllowedHosts", "host_name", "is_loopback_host"]

# Hosts a browser treats as a secure context over plain HTTP, plus Starlette's TestClient
# host: a cookie for them may go without Secure, since no network carries it.
_LOCAL_NAMES = frozenset({"localhost", "testserver"})

# What an allowed-hosts entry may be: a DNS name (``*.`` for its subdomains), an IPv4
# address, or an IPv6 address in brackets; never a port, a scheme or a path.
_DNS = r"[a-z0-9_](?:[a-z0-9_-]{0,62})(?:\.[a-z0-9_](?:[a-z0-9_-]{0,62}))*"
_PATTERN = re.compile(rf"(?:\*\.)?{_DNS}|\[[0-9a-f:.]{{2,45}}\]")
# A name a subdomain rule may match: a DNS name, nothing a parser left whole.
_NAME = re.compile(_DNS)


def host_name(host: str) -> str:
    """The name part of a ``Host`` value, lower case, without port, brackets or a final dot:
    ``[::1]:8000`` -> ``::1``, ``Example.COM.:443`` -> ``example.com``. A bare IPv6 address
    is kept whole; anything else unparsable is returned as it came (lower case), so that it
    matches no allowed name."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :] if end > 0 else None
        # Only a port may follow the bracket: "[::1]evil.com" is no name of ours.
        if rest == "" or (rest and rest[0] == ":" and _port(rest[1:])):
            return host[1:end]
        return host
    name, colon, port = host.rpartition(":")
    if colon and ":" not in name and _port(port):
        host = name
    return host.rstrip(".")


def _port(text: str) -> bool:
    """Whether ``text`` (after a colon) is a port: empty or up to five ASCII digits ("²" and
    "٣" are digits to ``str.isdigit``, not in a URL)."""
    return not text or (len(text) <= 5 and text.isascii() and text.isdigit())


def is_loopback_host(host: str) -> bool:
    """Whether a ``Host`` value (with or without port) names this machine: ``localhost``,
    ``*.localhost``, a loopback address, or ``testserver`` (Starlette's ``TestClient``)."""
    name = host_name(host)
    if name in _LOCAL_NAMES or (name.endswith(".localhost") and _NAME.fullmatch(name)):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class AllowedHosts:
    """A set of host names a ``Host`` header must name: ``example.com``, ``*.example.com``
    (its subdomains, not itself), ``127.0.0.1``, ``[::1]``. Entries are checked when the set
    is made (:class:`~redkit.errors.InvalidInput` for a port, a scheme or a typo), so a bad
    setting fails at start-up rather than refusing every request later."""

    __slots__ = ("_names", "_suffixes", "entries")

    def __init__(self, entries: Iterable[str], *, what: str = "allowed_hosts") -> None:
        if isinstance(entries, str):
            raise InvalidInput(f"{what} must be a list of host names, got {entries!r}")
        names: set[str] = set()
        suffixes: list[str] = []
        kept: list[str] = []
        for entry in entries:
            if not isinstance(entry, str) or not _PATTERN.fullmatch(entry.strip().lower()):
                raise InvalidInput(
                    f"{what}: {entry!r} is not a host name (no port, no scheme; "
                    "'*.example.com' for subdomains, '[::1]' for an IPv6 address)"
                )
            entry = entry.strip().lower()
            kept.append(entry)
            if entry.startswith("*."):
                suffixes.append("." + host_name(entry[2:]))
            else:
                names.add(host_name(entry))
        if not kept:
            raise InvalidInput(f"{what} is empty: name at least one host (or leave it out)")
        self.entries: tuple[str, ...] = tuple(kept)
        self._names = frozenset(names)
        self._suffixes = tuple(suffixes)

    def __repr__(self) -> str:
        return f"AllowedHosts({list(self.entries)!r})"

    def allows(self, host: str) -> bool:
        """Whether the ``Host`` value ``host`` (port allowed) names one of the entries."""
        name = host_name(host)
        if name in self._names:
            return True
        return (
            bool(self._suffixes) and name.endswith(self._suffixes) and bool(_NAME.fullmatch(name))
        )
