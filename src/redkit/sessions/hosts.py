"""Which hosts may get a cookie without ``Secure``: shared by every web layer of redkit (the
ASGI session middleware, :mod:`redkit.flask`), and free of any web framework's imports."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_host"]

# Hosts a browser treats as a secure context over plain HTTP, plus Starlette's TestClient
# host: a cookie for them may go without Secure, since no network carries it.
_LOCAL_NAMES = frozenset({"localhost", "testserver"})


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        end = host.find("]")
        return host[1:end] if end > 0 else host
    name, colon, port = host.rpartition(":")
    if colon and ":" not in name and (port.isdigit() or not port):
        return name
    return host


def is_loopback_host(host: str) -> bool:
    """Whether a ``Host`` value (with or without port) names this machine: ``localhost``,
    ``*.localhost``, a loopback address, or ``testserver`` (Starlette's ``TestClient``)."""
    name = _hostname(host).rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
