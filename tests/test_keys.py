"""Key names: namespace prefixes and hash tags that keep one operation's keys in one slot."""

from __future__ import annotations

import pytest

import redkit
from redkit.keys import Keyspace, check_same_slot, key_slot


def test_group_keys_carry_namespace_and_share_one_slot() -> None:
    group = Keyspace("rk").group("lock", "db:p1")
    owner, fence = group.key("owner"), group.key("fence")
    assert owner == "rk:{lock:db:p1}:owner"
    assert fence == "rk:{lock:db:p1}:fence"
    assert key_slot(owner) == key_slot(fence) == group.slot
    check_same_slot([owner, fence, group.key()])


@pytest.mark.parametrize("ident", ["", "}", "}x", "{", "{a}", "a}b{c", "ü-ñ", "x" * 300])
def test_identifiers_with_braces_or_odd_text_keep_a_group_in_one_slot(ident: str) -> None:
    group = Keyspace("app").group("session", ident)
    keys = [group.key("a"), group.key("b", 1), group.key("zzz"), group.key()]
    check_same_slot(keys)
    assert all(key.startswith("app:") for key in keys)


def test_different_groups_usually_land_in_different_slots() -> None:
    ks = Keyspace("rk")
    slots = {ks.group("lock", f"name-{i}").slot for i in range(100)}
    assert len(slots) > 90  # hash tags spread objects over the Cluster


def test_cross_slot_keys_are_rejected_with_a_clear_error() -> None:
    ks = Keyspace("rk")
    a, b = ks.group("lock", "a").key("owner"), ks.group("lock", "b").key("owner")
    assert key_slot(a) != key_slot(b)
    with pytest.raises(redkit.CrossSlotKeys, match="different Cluster slots"):
        check_same_slot([a, b])
    # CrossSlotKeys is an InvalidInput, so a caller can catch all bad-input errors at once.
    assert issubclass(redkit.CrossSlotKeys, redkit.InvalidInput)


@pytest.mark.parametrize("bad", ["", "a b", "x{y", "y}", "a*", "q?", "[a]", "x" * 65])
def test_unsafe_namespaces_are_refused(bad: str) -> None:
    with pytest.raises(redkit.InvalidInput, match="namespace"):
        Keyspace(bad)


def test_kind_must_be_a_plain_word() -> None:
    with pytest.raises(redkit.InvalidInput):
        Keyspace("rk").group("Bad Kind", "x")


def test_plain_keys_and_the_namespace_pattern() -> None:
    ks = Keyspace("proj-1")
    assert ks.key("counter", 3) == "proj-1:counter:3"
    assert ks.pattern == "proj-1:*"
    with pytest.raises(redkit.InvalidInput):
        ks.key()


@pytest.mark.cluster
async def test_a_group_can_be_written_atomically_on_every_server(rk: redkit.Redkit) -> None:
    group = rk.keys.group("test", "multi")
    async with rk.redis.pipeline(transaction=True) as pipe:
        pipe.set(group.key("a"), 1)
        pipe.set(group.key("b"), 2)
        pipe.get(group.key("a"))
        pipe.get(group.key("b"))
        results = await pipe.execute()
    assert results[-2:] == [b"1", b"2"]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("ns:{t}:a", "other:{t}:b"),  # same tag, different text around it
        ("ns:{t}:a", "ns:{u}:a"),  # different tags
        ("{}:a", "{}:b"),  # an empty tag hashes the whole key
        ("x{", "x{"),
        ("{a}{b}", "{a}{c}"),  # only the first tag counts
        ("a{b}}c", "z{b}"),
        ("plain", "plain"),
        ("plain", "plain2"),
        ("{{x}}", "{x}"),  # the tag is "{x", not "x"
        ("a{x}", "a{x"),  # the second key starts like the first but has no closing brace
        ("a{x}:1", "a{x}:2"),  # the same text up to the closing brace
        ("ab{x}", "{x}q"),  # the same tag after different text
        ("{x}", b"{x}"),  # bytes take the CRC path
    ],
)
def test_the_same_slot_check_agrees_with_the_cluster_hash(a: str, b: str | bytes) -> None:
    if key_slot(a) == key_slot(b):
        check_same_slot([a, b])
    else:
        with pytest.raises(redkit.CrossSlotKeys):
            check_same_slot([a, b])


# -- names that become keys: one documented alphabet and length per kind ----------------------


@pytest.mark.parametrize("bad", ["a b{", "a b", "x{y}", "tab\there", "new\nline", "é", "*", ""])
def test_queue_names_with_spaces_braces_or_odd_characters_are_refused(
    rk: redkit.Redkit, bad: str
) -> None:
    with pytest.raises(redkit.InvalidInput) as refused:
        rk.queue(bad)
    message = str(refused.value)
    assert message.startswith("queue name ")
    assert "use 1-128 characters from letters, digits and _ . - :" in message


def test_a_queue_name_longer_than_the_limit_is_refused_without_echoing_it(
    rk: redkit.Redkit,
) -> None:
    with pytest.raises(redkit.InvalidInput, match="129 characters long") as refused:
        rk.queue("q" * 129)
    assert len(str(refused.value)) < 200
    with pytest.raises(redkit.InvalidInput, match="5,000,000 characters long"):
        rk.queue("q" * 5_000_000)
    with pytest.raises(redkit.InvalidInput, match="not a string"):
        rk.queue(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("good", ["email", "deploy:high", "v1.2_bulk-x", "q" * 128])
def test_plain_queue_names_are_accepted(rk: redkit.Redkit, good: str) -> None:
    assert rk.queue(good).name == good


@pytest.mark.parametrize("bad", ["a:b", "a b", "{x}", "", "c" * 65])
def test_cache_names_hold_no_colon_space_or_brace(rk: redkit.Redkit, bad: str) -> None:
    with pytest.raises(redkit.InvalidInput, match=r"cache name .*letters, digits and _ . -"):
        rk.cache(name=bad)
    assert rk.cache(name="c" * 64).name == "c" * 64


@pytest.mark.parametrize("bad", ["a b", "tab\t", "line\n", "nul\x00", "\x85", "", "l" * 513])
def test_lock_names_refuse_whitespace_control_characters_and_excess_length(
    rk: redkit.Redkit, bad: str
) -> None:
    for make in (rk.lock, rk.read_write_lock, lambda n: rk.semaphore(n, limit=2)):
        with pytest.raises(redkit.InvalidInput, match=r"name .*whitespace and control"):
            make(bad)


@pytest.mark.parametrize("good", ["db:{p1}", "user:alice@example.com", "ü/ñ#1", "l" * 512])
def test_lock_names_built_from_data_are_accepted(rk: redkit.Redkit, good: str) -> None:
    assert rk.lock(good).name == good
