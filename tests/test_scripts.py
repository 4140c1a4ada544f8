"""The script runner: EVALSHA, reload on NOSCRIPT, errors, and the header rule."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

import redkit
from redkit.scripts import Script, ScriptSet, _expand, check_header

SCRIPTS = ScriptSet("luapkg")


def test_a_script_set_reads_every_lua_file_once() -> None:
    # _double.lua is a piece for `-- @include`, not a script.
    assert {s.name for s in SCRIPTS} == {"doubled", "echo_keys", "incr_by", "slow_incr"}
    assert len(SCRIPTS["echo_keys"].sha) == 40
    with pytest.raises(KeyError, match=r"no script missing\.lua"):
        SCRIPTS["missing"]


async def _flush_scripts(rk: redkit.Redkit) -> None:
    if isinstance(rk.redis, RedisCluster):
        for node in rk.redis.get_primaries():
            await rk.redis.execute_command("SCRIPT", "FLUSH", target_nodes=node)
    else:
        await rk.redis.execute_command("SCRIPT", "FLUSH")


@pytest.mark.cluster
async def test_scripts_run_by_sha_and_reload_after_script_flush(rk: redkit.Redkit) -> None:
    counter = rk.keys.group("test", "counter").key("n")
    script = SCRIPTS["incr_by"]
    assert await script(rk.redis, [counter], [2]) == 2
    await _flush_scripts(rk)
    # The server forgot the script: the runner sees NOSCRIPT and sends it again, invisibly.
    assert await script(rk.redis, [counter], [3]) == 5
    # ...and the EVAL that recovered also cached it on the node that owns the key.
    if isinstance(rk.redis, RedisCluster):
        node = rk.redis.get_node_from_key(counter)
        exists = await rk.redis.execute_command("SCRIPT EXISTS", script.sha, target_nodes=node)
    else:
        exists = await rk.redis.script_exists(script.sha)
    assert exists == [True]
    assert await script(rk.redis, [counter], [1]) == 6


async def _evals(rk: redkit.Redkit) -> int:
    """``EVAL`` calls so far, summed over every primary."""
    nodes: list[Any] = rk.redis.get_primaries() if isinstance(rk.redis, RedisCluster) else [None]
    total = 0
    for node in nodes:
        kwargs = {"target_nodes": node} if node is not None else {}
        info = await rk.redis.info("commandstats", **kwargs)
        total += int(info.get("cmdstat_eval", {}).get("calls", 0))
    return total


@pytest.mark.cluster
async def test_a_burst_after_script_flush_sends_the_source_once(rk: redkit.Redkit) -> None:
    counter = rk.keys.group("test", "burst").key("n")
    script = SCRIPTS["incr_by"]
    assert await script(rk.redis, [counter], [0]) == 0
    await _flush_scripts(rk)
    evals = await _evals(rk)
    results = await asyncio.gather(*(script(rk.redis, [counter], [1]) for _ in range(100)))
    assert sorted(results) == list(range(1, 101))
    # One call sent the source; the others that met NOSCRIPT meanwhile waited and used the SHA.
    assert await _evals(rk) - evals == 1


@pytest.mark.cluster
async def test_keys_and_args_reach_the_script_in_order(rk: redkit.Redkit) -> None:
    group = rk.keys.group("test", "echo")
    keys = [group.key("a"), group.key("b")]
    result = await SCRIPTS["echo_keys"](rk.redis, keys, ["x", 7])
    assert result == [2, keys[0].encode(), keys[1].encode(), b"x", b"7"]


@pytest.mark.cluster
async def test_keys_in_different_slots_are_refused_before_anything_is_sent(
    rk: redkit.Redkit,
) -> None:
    a = rk.keys.group("test", "a").key("n")
    b = rk.keys.group("test", "b").key("n")
    with pytest.raises(redkit.CrossSlotKeys):
        await SCRIPTS["incr_by"](rk.redis, [a, b], [1])
    assert await rk.redis.exists(a) == 0
    assert await rk.redis.exists(b) == 0


async def test_a_script_needs_a_key(rk: redkit.Redkit) -> None:
    with pytest.raises(redkit.InvalidInput, match="at least one key"):
        await SCRIPTS["echo_keys"](rk.redis, [], [])


@pytest.mark.cluster
async def test_an_error_inside_a_script_is_a_script_error(rk: redkit.Redkit) -> None:
    counter = rk.keys.group("test", "bad").key("n")
    with pytest.raises(redkit.ScriptError, match="incr_by"):
        await SCRIPTS["incr_by"](rk.redis, [counter], ["not-a-number"])
    # The same holds on the NOSCRIPT path, where the script is sent with EVAL.
    fresh = Script("fresh_error", "-- KEYS ARGV Returns\nreturn redis.error_reply('boom')")
    with pytest.raises(redkit.ScriptError, match="boom"):
        await fresh(rk.redis, [counter])


def test_a_lua_file_without_its_header_comment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(redkit.InvalidInput, match=r"argv, returns"):
        check_header("bad", "-- KEYS[1]: a key\nreturn 1\n-- ARGV: too late")
    check_header("good", "-- KEYS[1]: k\n-- ARGV[1]: v\n-- Returns: 1\nreturn 1")


def test_every_script_shipped_in_redkit_documents_keys_argv_and_return() -> None:
    lua_files = list((Path(redkit.__file__).parent).rglob("*.lua"))
    for path in lua_files:
        if not path.stem.startswith("_"):  # pieces for -- @include are not run alone
            check_header(path.stem, path.read_text())
    # The test scripts follow the same rule (ScriptSet refused them otherwise).
    assert len(SCRIPTS) == 4


@pytest.mark.cluster
async def test_an_included_piece_is_pasted_where_the_script_asks(rk: redkit.Redkit) -> None:
    doubled = SCRIPTS["doubled"]
    assert "local function double" in doubled.source
    assert not any(line.startswith("-- @include") for line in doubled.source.splitlines())
    assert await rk.run(doubled, [rk.keys.key("test", "any")], [21]) == 42


def test_a_missing_or_nested_piece_is_refused() -> None:
    with pytest.raises(redkit.InvalidInput, match=r"_nothing\.lua, which is not there"):
        _expand("broken", "-- @include _nothing\nreturn 1", {})
    pieces = {"_a": "-- @include _b\nlocal x = 1", "_b": "local y = 2"}
    with pytest.raises(redkit.InvalidInput, match="keep it flat"):
        _expand("nested", "-- @include _a\nreturn 1", pieces)


def test_a_tuple_of_keys_is_checked_once_and_a_bad_one_every_time() -> None:
    script = Script("t", "-- KEYS[1]: a\n-- ARGV: none\n-- Returns: 1\nreturn 1")
    bad = ("a:{x}:1", "a:{y}:1")
    for _ in range(2):  # a refused tuple is not remembered: refused again
        with pytest.raises(redkit.CrossSlotKeys):
            script.check_keys(bad)
    good = ("a:{x}:1", "a:{x}:2")
    script.check_keys(good)
    assert script._passed is good
    # A list may change between calls, so it is checked every time.
    keys = ["a:{x}:1", "a:{x}:2"]
    script.check_keys(keys)
    keys[1] = "a:{y}:2"
    with pytest.raises(redkit.CrossSlotKeys):
        script.check_keys(keys)
