"""Event ids, resume cursors and Redis glob patterns (no server needed)."""

from __future__ import annotations

import pytest

import redkit
from redkit.notify import encode_cursor, parse_cursor
from redkit.notify.events import glob_matches, id_key


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
