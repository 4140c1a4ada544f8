"""Host header values as an attacker writes them: one reading for every web layer."""

from __future__ import annotations

import pytest

import redkit
from redkit.hosts import AllowedHosts, host_name, is_loopback_host


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("Example.COM", "example.com"),
        ("example.com:8443", "example.com"),
        ("example.com.", "example.com"),
        ("example.com.:443", "example.com"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),  # a bare IPv6 address is not split at its last colon
        ("127.0.0.1:80", "127.0.0.1"),
        ("example.com:", "example.com"),
        ("example.com:80x", "example.com:80x"),  # not a port: kept, so it matches nothing
    ],
)
def test_the_name_of_a_host_value_is_its_lower_case_name_without_port(
    value: str, name: str
) -> None:
    assert host_name(value) == name


@pytest.mark.parametrize(
    "value", ["localhost:8000", "app.localhost", "127.0.0.1", "[::1]:9", "127.8.9.1", "testserver"]
)
def test_loopback_hosts(value: str) -> None:
    assert is_loopback_host(value)


@pytest.mark.parametrize(
    "value", ["example.com", "localhost.example.com", "10.0.0.1", "[::2]", "", "[::1"]
)
def test_hosts_that_are_not_loopback(value: str) -> None:
    assert not is_loopback_host(value)


def test_allowed_hosts_match_names_subdomains_and_addresses_with_any_port() -> None:
    allowed = AllowedHosts(["Example.com", "*.apps.example.com", "127.0.0.1", "[::1]"])
    for host in ("example.com", "EXAMPLE.com:8443", "a.apps.example.com", "127.0.0.1:80"):
        assert allowed.allows(host), host
    assert allowed.allows("[::1]:8000")
    for host in (
        "apps.example.com",  # "*." means the subdomains, not the name itself
        "example.com.evil.org",
        "evilexample.com",
        "xapps.example.com",
        "127.0.0.2",
        "",
        "example.com:80x",
        "example.com/",
        "example.com@evil.org",
    ):
        assert not allowed.allows(host), host


@pytest.mark.parametrize(
    "entries",
    [["exa mple.com"], ["*"], [""], "example.com", ["example.com:80"], ["http://a.b"], [], [3]],
)
def test_a_bad_allowed_hosts_entry_is_refused_when_the_set_is_made(entries: object) -> None:
    with pytest.raises(redkit.InvalidInput):
        AllowedHosts(entries)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "host",
    [
        "[::1]evil.com",  # found by an attack pass: the text after "]" was ignored
        "[::1].evil.com",
        "[::1]@evil.com",
        "[::1]]",
        "[::1]:80x",
        "localhost:\u00b2",  # a digit to str.isdigit, not in a URL
        "localhost:\u0663",
        "localhost:99999999",
        "[x].apps.example.com",
        "[x].localhost",
    ],
)
def test_a_host_a_parser_cannot_read_is_allowed_nowhere_and_is_not_loopback(host: str) -> None:
    allowed = AllowedHosts(["localhost", "*.localhost", "[::1]", "*.apps.example.com"])
    assert not allowed.allows(host)
    assert not is_loopback_host(host)
