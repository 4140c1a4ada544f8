"""Event ids, resume cursors and Redis glob patterns (no server needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import redkit
from redkit.notify import encode_cursor, parse_cursor
from redkit.notify.events import (
    MAX_CURSOR_CHANNELS,
    check_pattern,
    glob_matches,
    id_key,
    pattern_prefix,
)


def test_ids_sort_by_time_then_sequence() -> None:
    assert id_key("9-5") < id_key("10-0") < id_key("10-1")


def test_a_cursor_round_trips_channel_names_with_any_characters() -> None:
    positions = {"deployment:p1": "1-0", "a=b;c d": "2-3", "ünï": "4-5"}
    cursor = encode_cursor(positions)
    assert cursor.isascii()
    assert "\n" not in cursor
    assert parse_cursor(cursor, ()) == positions


def test_a_plain_id_applies_to_every_named_channel() -> None:
    assert parse_cursor("7-1", ("a", "b")) == {"a": "7-1", "b": "7-1"}
    assert parse_cursor({"a": "1-1"}, ("a",)) == {"a": "1-1"}


@pytest.mark.parametrize("bad", ["", "x", "a=", "a=1", "=1-0", "a=1-0;b"])
def test_malformed_cursors_are_refused(bad: str) -> None:
    with pytest.raises(redkit.InvalidInput):
        parse_cursor(bad, ("a",))


@pytest.mark.parametrize(
    ("pattern", "channel", "matches"),
    [
        ("deployment:*", "deployment:p1", True),
        ("deployment:*", "deployments", False),
        ("d?p", "dap", True),
        ("d[ae]p", "dep", True),
        ("d[^ae]p", "dep", False),
        ("d[a-c]p", "dbp", True),
        (r"a\*", "a*", True),
        (r"a\*", "ab", False),
        ("*", "any:thing}{", True),
    ],
)
def test_glob_matching_follows_redis(pattern: str, channel: str, matches: bool) -> None:
    assert glob_matches(pattern, channel) is matches


# -- Redis glob semantics, in linear time -------------------------------------------------


def test_a_pattern_with_many_stars_is_matched_without_backtracking() -> None:
    # Run in a child process: an exponential match holds the interpreter (and its event
    # loop) for ever; the child can be killed, this process reports the failure.
    code = (
        "from redkit.notify.events import glob_matches\n"
        "stars = '*a' * 30 + '*b'\n"
        "assert not glob_matches(stars, 'a' * 256)\n"
        "assert glob_matches(stars, 'a' * 255 + 'b')\n"
        "assert not glob_matches('project:p1:' + stars, 'project:p1:' + 'a' * 245)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("pattern", "channel", "matches"),
    [
        ("*a*b", "xaybz", False),
        ("*a*b", "xaybzb", True),
        ("a*b*c", "abc", True),
        ("a*b*c", "ac", False),
        ("a**b", "ab", True),
        ("?*?", "a", False),
        ("?*?", "ab", True),
        ("[]]", "]", False),  # Redis: an empty set, then a literal ']'
        ("[]]", "", False),
        ("[^]]", "x]", True),  # a negated empty set matches any one character
        ("[z-a]", "m", True),  # a reversed range, as Redis takes it
        ("[a-]]", "_", True),  # ']' to 'a' (the range ends at the first ']')
        (r"[\]]", "]", True),
        (r"[\-]", "-", True),
        (r"\[x]", "[x]", True),
        ("caf?", "café", False),  # '?' is one byte, as on the server
        ("caf??", "café", True),
        ("[*]", "*", True),
        ("a\\\\", "a\\", True),
    ],
)
def test_glob_matching_follows_redis_byte_for_byte(
    pattern: str, channel: str, matches: bool
) -> None:
    assert glob_matches(pattern, channel) is matches


@pytest.mark.parametrize("bad", ["a[bc", "[", "a\\", "deploy:[^a-", "[a-]"])
def test_a_malformed_pattern_is_refused_rather_than_guessed(bad: str) -> None:
    # On the server the pattern is followed by redkit's '}', which an open '[' or a trailing
    # backslash would swallow: it would match other channels than it says.
    with pytest.raises(redkit.InvalidInput):
        check_pattern(bad)


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        ("project:p1:*", "project:p1:"),
        ("project:p1*", "project:p1"),
        ("project:p1:deploy-?", "project:p1:deploy-"),
        (r"a\*b*", "a*b"),
        ("*", ""),
        ("[ab]:x", ""),
        ("exact", "exact"),
    ],
)
def test_pattern_prefix_is_what_every_match_begins_with(pattern: str, prefix: str) -> None:
    assert pattern_prefix(pattern) == prefix


def test_a_cursor_naming_too_many_channels_is_refused() -> None:
    many = {f"c{i}": "1-0" for i in range(MAX_CURSOR_CHANNELS + 1)}
    with pytest.raises(redkit.InvalidInput, match="at most"):
        parse_cursor(encode_cursor(many), ())
    with pytest.raises(redkit.InvalidInput, match="at most"):
        parse_cursor(many, ())
    del many["c0"]
    assert len(parse_cursor(encode_cursor(many), ())) == MAX_CURSOR_CHANNELS


@pytest.mark.parametrize(
    "bad", ["18446744073709551616-0", "1-18446744073709551616", "99999999999999999999-0"]
)
def test_an_id_beyond_what_the_server_can_write_is_refused(bad: str) -> None:
    with pytest.raises(redkit.InvalidInput, match="not an event id"):
        parse_cursor(bad, ("a",))
    with pytest.raises(redkit.InvalidInput, match="not an event id"):
        parse_cursor(f"a={bad}", ("a",))
    assert parse_cursor("18446744073709551615-18446744073709551615", ("a",))


_TRICKY = [
    "*a*b",
    "a*b*c",
    "?*?",
    "[]]",
    "[^]]",
    "[z-a]",
    "[a-]]",
    r"[\]]",
    r"\[x]",
    "caf?",
    "caf??",
    "[*]",
    "x[^a-c]?",
    "*:*:*",
    "[a-c-e]",
]
_NAMES = [
    "",
    "a",
    "ab",
    "xaybz",
    "xaybzb",
    "abc",
    "ac",
    "]",
    "x]",
    "m",
    "_",
    "[x]",
    "café",
    "*",
    "xd1",
    "xb1",
    "a:b:c",
    "d",
    "-",
    "e",
    "a\\",
]


async def test_glob_matching_agrees_with_the_server(rk: redkit.Redkit) -> None:
    # SCAN MATCH runs the same matcher as PSUBSCRIBE (stringmatchlen) on the server.
    prefix = f"{rk.namespace}:glob:"
    for i, name in enumerate(_NAMES):
        await rk.redis.set(f"{prefix}{name}", i)
    for pattern in _TRICKY:
        found = {
            key.decode()[len(prefix) :]
            async for key in rk.redis.scan_iter(match=prefix + pattern, count=1000)
        }
        assert found == {n for n in _NAMES if glob_matches(pattern, n)}, pattern
