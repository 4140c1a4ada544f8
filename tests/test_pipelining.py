"""Automatic pipelining: concurrent script calls share round trips, and nothing is lost."""

from __future__ import annotations

import asyncio
import time

import pytest

import redkit
from redkit import pipelining
from redkit.embedded import ValkeyProcess
from redkit.scripts import Script, ScriptSet

SCRIPTS = ScriptSet("luapkg")
INCR = SCRIPTS["incr_by"]


async def calls(rk: redkit.Redkit, name: str) -> int:
    info = await rk.redis.info("commandstats")
    return int(info.get(f"cmdstat_{name}", {}).get("calls", 0))


async def test_concurrent_calls_share_round_trips_and_each_runs_once(rk: redkit.Redkit) -> None:
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    counter = rk.keys.group("test", "ap").key("n")
    await rk.run(INCR, [counter], [0])  # load the script
    before = await calls(rk, "evalsha")
    results = await asyncio.gather(*(rk.run(INCR, [counter], [1]) for _ in range(300)))
    assert sorted(results) == list(range(1, 301))
    assert await calls(rk, "evalsha") - before == 300  # every call ran exactly once
    assert rk.pipeline.batches >= 1
    assert rk.pipeline.batched_calls >= 250  # most calls travelled in shared pipelines


async def test_a_lone_call_goes_directly(rk: redkit.Redkit) -> None:
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    counter = rk.keys.group("test", "alone").key("n")
    for expected in range(1, 6):
        assert await rk.run(INCR, [counter], [1]) == expected
    assert rk.pipeline.batches == 0


async def test_a_batch_reloads_scripts_the_server_forgot(rk: redkit.Redkit) -> None:
    counter = rk.keys.group("test", "flush").key("n")
    await rk.run(INCR, [counter], [1])
    await rk.redis.execute_command("SCRIPT", "FLUSH")
    results = await asyncio.gather(*(rk.run(INCR, [counter], [1]) for _ in range(50)))
    assert sorted(results) == list(range(2, 52))


async def test_an_error_in_one_call_stays_in_that_call(rk: redkit.Redkit) -> None:
    counter = rk.keys.group("test", "err").key("n")
    await rk.run(INCR, [counter], [0])
    outcomes = await asyncio.gather(
        *(rk.run(INCR, [counter], ["x" if i == 7 else 1]) for i in range(20)),
        return_exceptions=True,
    )
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) == 1
    assert isinstance(errors[0], redkit.ScriptError)
    assert await rk.redis.get(counter) == b"19"


async def test_a_call_cancelled_before_its_batch_is_sent_never_runs(rk: redkit.Redkit) -> None:
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    rk.pipeline.max_in_flight = 1
    slow = SCRIPTS["slow_incr"]
    busy = rk.keys.group("test", "busy").key("n")
    counter = rk.keys.group("test", "cancel").key("n")
    blocker = asyncio.create_task(rk.run(slow, [busy], [150]))
    await asyncio.sleep(0.02)  # the slow call is in flight; the next one must queue
    queued = asyncio.create_task(rk.run(INCR, [counter], [1]))
    await asyncio.sleep(0.02)
    queued.cancel()
    assert await blocker == 1
    with pytest.raises(asyncio.CancelledError):
        await queued
    await asyncio.sleep(0.05)
    assert await rk.redis.get(counter) is None


async def test_a_server_that_dies_mid_batch_fails_every_caller(own_server: ValkeyProcess) -> None:
    async with redkit.connect(own_server.url, "apfail") as rk:
        slow = SCRIPTS["slow_incr"]
        key = rk.keys.group("test", "die").key("n")
        await rk.run(slow, [key], [0])
        waiting = [asyncio.create_task(rk.run(slow, [key], [30])) for _ in range(20)]
        await asyncio.sleep(0.05)
        own_server.kill()
        outcomes = await asyncio.wait_for(
            asyncio.gather(*waiting, return_exceptions=True), timeout=10
        )
        assert any(isinstance(o, redkit.ConnectionLost) for o in outcomes)
        assert all(isinstance(o, int | redkit.ConnectionLost) for o in outcomes)


async def test_auto_pipelining_can_be_turned_off(redis_url: str) -> None:
    async with redkit.connect(redis_url, "noap", auto_pipeline=False) as rk:
        assert rk.pipeline is None
        key = rk.keys.group("test", "off").key("n")
        results = await asyncio.gather(*(rk.run(INCR, [key], [1]) for _ in range(20)))
        assert sorted(results) == list(range(1, 21))
        await rk.redis.delete(key)


def test_scripts_used_here_are_real_scripts() -> None:
    assert isinstance(INCR, Script)


async def test_a_time_limit_bounds_a_call_waiting_for_its_batch(rk: redkit.Redkit) -> None:
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    rk.pipeline.max_in_flight = 1
    slow = SCRIPTS["slow_incr"]
    busy = rk.keys.group("test", "busy").key("n")
    counter = rk.keys.group("test", "limited").key("n")
    blocker = asyncio.create_task(rk.run(slow, [busy], [300]))
    await asyncio.sleep(0.02)
    began = asyncio.get_running_loop().time()
    with pytest.raises(redkit.ConnectionLost):
        await rk.run(INCR, [counter], [1], time_limit=0.05)
    assert asyncio.get_running_loop().time() - began < 0.25  # not the slow call's 300 ms
    await blocker
    await asyncio.sleep(0.05)
    assert await rk.redis.get(counter) is None  # it never left the queue


async def test_a_time_limit_bounds_a_lone_call(rk: redkit.Redkit) -> None:
    slow = SCRIPTS["slow_incr"]
    key = rk.keys.group("test", "lone").key("n")
    with pytest.raises(redkit.ConnectionLost):
        await rk.run(slow, [key], [300], time_limit=0.05)
    await asyncio.sleep(0.4)  # let the server finish the script before the namespace is emptied


async def test_a_time_limit_never_cuts_short_a_neighbour_in_its_batch(rk: redkit.Redkit) -> None:
    busy = rk.keys.group("test", "stall").key("n")
    keys = [rk.keys.group("test", name).key("n") for name in ("a", "b", "c")]
    # Stall the server on another connection (not through the pipeline).
    stall = asyncio.create_task(SCRIPTS["slow_incr"](rk.redis, [busy], [300]))
    await asyncio.sleep(0.02)
    outcomes: list[object] = await asyncio.gather(
        rk.run(INCR, [keys[0]], [1]),  # goes alone
        rk.run(INCR, [keys[1]], [1], time_limit=0.05),  # these two share a batch
        rk.run(INCR, [keys[2]], [1]),
        return_exceptions=True,
    )
    first, limited, neighbour = outcomes
    await stall
    assert isinstance(limited, redkit.ConnectionLost)
    assert first == 1
    assert neighbour == 1  # answered after the stall, not failed with its neighbour


async def _kept_connection_id(rk: redkit.Redkit) -> int:
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    assert len(rk.pipeline._idle) == 1
    conn = rk.pipeline._idle[0]
    await conn.send_command("CLIENT", "ID")
    return int(await conn.read_response())


@pytest.mark.parametrize("noticed", [True, False], ids=["eof-seen", "eof-unseen"])
async def test_a_kept_connection_the_server_closed_is_replaced(
    rk: redkit.Redkit, noticed: bool
) -> None:
    key = rk.keys.group("test", "kept").key("n")
    assert await rk.run(INCR, [key], [1]) == 1
    killed = await _kept_connection_id(rk)
    assert await rk.redis.client_kill_filter(_id=str(killed)) == 1
    if noticed:
        await asyncio.sleep(0.05)  # the event loop reads the close before the next call
    # Either the close is seen before the call, or the call's write meets it and is retried
    # once on a fresh connection: the caller sees neither, and the call runs once.
    assert await rk.run(INCR, [key], [1]) == 2
    assert await _kept_connection_id(rk) != killed


async def test_kept_connections_stay_within_the_pipelines_bound(rk: redkit.Redkit) -> None:
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    pool = rk.pipeline.client.connection_pool
    key = rk.keys.group("test", "bound").key("n")
    for _ in range(3):
        await asyncio.gather(*(rk.run(INCR, [key], [1]) for _ in range(500)))
        assert len(rk.pipeline._idle) <= rk.pipeline.max_in_flight
        assert len(pool._in_use_connections) <= rk.pipeline.max_in_flight


async def test_closing_hands_kept_connections_back(redis_url: str) -> None:
    rk = await redkit.connect(redis_url, "kept-close")
    key = rk.keys.group("test", "close").key("n")
    await asyncio.gather(*(rk.run(INCR, [key], [1]) for _ in range(50)))
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    pool = rk.pipeline.client.connection_pool
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    assert rk.pipeline._idle
    await rk.redis.delete(key)
    await rk.close()
    assert not rk.pipeline._idle
    assert not pool._in_use_connections


async def test_a_small_pool_keeps_no_connection_back_from_other_commands(redis_url: str) -> None:
    async with redkit.connect(redis_url, "kept-small", max_connections=1) as rk:
        assert isinstance(rk.pipeline, pipelining.AutoPipeline)
        key = rk.keys.group("test", "small").key("n")
        assert await rk.run(INCR, [key], [1]) == 1
        assert not rk.pipeline._idle
        # The pool's only connection is free for a plain command at once.
        assert await asyncio.wait_for(rk.redis.get(key), 1) == b"1"
        await rk.redis.delete(key)


async def test_a_dropped_connection_drops_its_kept_siblings_before_the_retry(
    rk: redkit.Redkit, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    # As when the event loop has not read the closes yet: only the exchange finds out.
    monkeypatch.setattr(pipelining, "_sound", lambda conn: conn.is_connected)
    key = rk.keys.group("test", "siblings").key("n")
    await asyncio.gather(*(rk.run(INCR, [key], [1]) for _ in range(200)))
    kept = list(rk.pipeline._idle)
    assert len(kept) == 2
    ids = []
    for conn in kept:
        await conn.send_command("CLIENT", "ID")
        ids.append(int(await conn.read_response()))
    for client_id in ids:  # as a failover or a restart would, to every kept connection
        await rk.redis.client_kill_filter(_id=str(client_id))
    # Whichever connection the call meets first fails; the one retry must get a fresh one.
    assert await rk.run(INCR, [key], [1]) == 201


async def test_plain_commands_travel_alone_or_with_script_calls(rk: redkit.Redkit) -> None:
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    key = rk.keys.group("test", "plain").key("n")
    ping, (secs, _micros) = await rk.pipeline.execute([("PING",), ("TIME",)])
    assert ping is True or ping == b"PONG"
    assert int(secs) > 1_700_000_000
    assert await rk.pipeline.execute([]) == []
    # Mixed in one batch: each caller gets its own replies, in order.
    before = rk.pipeline.batches
    got = await asyncio.gather(
        rk.run(INCR, [key], [5]),
        rk.pipeline.execute([("GET", key), ("STRLEN", key)]),
        rk.run(INCR, [key], [1]),
        rk.pipeline.execute([("EXISTS", key)]),
    )
    assert got[0] == 5
    assert got[2] == 6
    assert got[1] in ([b"5", 1], [b"6", 1])  # after the first call, before or after the third
    assert got[3] == [1]
    assert rk.pipeline.batches > before  # the calls after the first one shared a batch
    await rk.redis.delete(key)


async def test_a_refused_plain_command_raises_server_error_alone(rk: redkit.Redkit) -> None:
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    key = rk.keys.group("test", "refused").key("s")
    await rk.redis.set(key, "text")
    results = await asyncio.gather(
        rk.pipeline.execute([("GET", key), ("LPUSH", key, "x")]),
        rk.pipeline.execute([("GET", key)]),
        return_exceptions=True,
    )
    assert isinstance(results[0], redkit.ServerError)
    assert "LPUSH" in str(results[0])
    assert "WRONGTYPE" in str(results[0])
    assert results[1] == [b"text"]
    await rk.redis.delete(key)


async def test_the_spin_wait_comes_from_the_settings_and_can_be_off(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDKIT_SPIN_WAIT", "0")
    async with redkit.connect(redis_url, "spin-off") as rk:
        assert isinstance(rk.pipeline, pipelining.AutoPipeline)
        assert rk.pipeline.spin_wait == 0
        key = rk.keys.group("test", "spin-off").key("n")
        assert await rk.run(INCR, [key], [1]) == 1
        await rk.redis.delete(key)
    monkeypatch.setenv("REDKIT_SPIN_WAIT", "0.5")  # past the bound: refused, not obeyed
    with pytest.raises(redkit.ConfigurationError):
        await redkit.connect(redis_url, "spin-bad")


async def test_a_call_waiting_for_its_reply_lets_other_tasks_run(rk: redkit.Redkit) -> None:
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    rk.pipeline.spin_wait = 0.01  # far longer than usual: the loop must stay free anyway
    key = rk.keys.group("test", "spin").key("n")
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    # ~30 ms in the server: long enough that the client gets the CPU meanwhile even on a
    # shared 2-core machine, where the woken server may preempt it for a few milliseconds.
    assert await rk.run(SCRIPTS["slow_incr"], [key], [30]) == 1
    stop.set()
    await task
    assert ticks - before > 10  # the ticker kept running while the call spun
    await rk.redis.delete(key)


async def test_closing_with_calls_in_flight_keeps_no_connection(redis_url: str) -> None:
    rk = await redkit.connect(redis_url, "close-in-flight")
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    pool = rk.pipeline.client.connection_pool
    calls = [
        asyncio.create_task(rk.pipeline.execute([("BLPOP", "close-in-flight:none", "0.3")]))
        for _ in range(4)
    ]
    await asyncio.sleep(0.05)
    await rk.close()
    await asyncio.gather(*calls, return_exceptions=True)
    assert not rk.pipeline._idle
    assert not pool._in_use_connections


async def test_a_connection_cut_after_some_replies_is_not_retried(rk: redkit.Redkit) -> None:
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    key = rk.keys.group("test", "cut").key("n")
    await rk.run(INCR, [key], [0])
    own_id = await _kept_connection_id(rk)
    # The first INCR runs and answers; then the connection is closed under the exchange.
    commands: list[tuple[object, ...]] = [
        ("INCR", key),
        ("CLIENT", "KILL", "ID", own_id, "SKIPME", "no"),
        ("INCR", key),
    ]
    with pytest.raises(redkit.ConnectionLost):
        await rk.pipeline.execute(commands)
    # Retrying the whole exchange would have run the first INCR a second time.
    assert int(await rk.redis.get(key) or 0) == 1
    await rk.redis.delete(key)


async def test_settled_calls_do_not_wait_for_their_time_limit_to_be_forgotten(
    rk: redkit.Redkit,
) -> None:
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    key = rk.keys.group("test", "forget").key("n")
    await asyncio.gather(*(rk.run(INCR, [key], [1], time_limit=30) for _ in range(500)))
    # Kept until the 30 s limit, every settled call (and its future, keys and arguments)
    # would pile up under load: a rate limiter's calls all carry a limit.
    assert len(rk.pipeline._timed) == 0
    await rk.redis.delete(key)


async def reads(rk: redkit.Redkit) -> int:
    """Read events the server has processed: about one per round trip of small requests."""
    return int((await rk.redis.info("stats"))["total_reads_processed"])


async def script_sends(rk: redkit.Redkit) -> int:
    """How often a script's source went to the server (``EVAL`` or ``SCRIPT LOAD``).

    Redis 6.2 counts SCRIPT as one command (subcommands have their own stats from 7.0): the
    tests take differences, and between two readings no other SCRIPT subcommand runs.
    """
    return await calls(rk, "eval") + await calls(rk, "script|load") + await calls(rk, "script")


async def test_a_noscript_storm_loads_the_script_once_and_runs_every_call_once(
    rk: redkit.Redkit,
) -> None:
    assert isinstance(rk.pipeline, pipelining.AutoPipeline)
    counter = rk.keys.group("test", "storm").key("n")
    await rk.run(INCR, [counter], [0])
    await rk.redis.execute_command("SCRIPT", "FLUSH")
    sends = await script_sends(rk)
    before = await reads(rk)
    results = await asyncio.gather(
        *(rk.run(INCR, [counter], [1], time_limit=5) for _ in range(300))
    )
    # A handful of round trips (batches, one load, the calls sent again in batches), not
    # one round trip per call that met NOSCRIPT.
    assert await reads(rk) - before < 60
    assert sorted(results) == list(range(1, 301))
    assert await script_sends(rk) - sends == 1  # one SCRIPT LOAD


async def test_replies_left_unread_by_a_busy_event_loop_are_not_timeouts(
    rk: redkit.Redkit,
) -> None:
    counter = rk.keys.group("test", "unread").key("n")
    await rk.run(INCR, [counter], [0])

    async def hog() -> None:
        # Callbacks that hold the event loop (as CPU-bound work would) far past the calls'
        # limit: the server answers meanwhile, and its replies wait unread.
        for _ in range(4):
            time.sleep(0.15)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(rk.run(INCR, [counter], [1], time_limit=0.05)) for _ in range(300)]
    hogging = asyncio.create_task(hog())
    results = await asyncio.gather(*tasks)
    await hogging
    assert sorted(results) == list(range(1, 301))


async def test_a_new_connection_to_a_hung_server_is_bounded_by_the_time_limit(
    own_server: ValkeyProcess,
) -> None:
    async with redkit.connect(own_server.url, "aphang") as rk:
        assert isinstance(rk.pipeline, pipelining.AutoPipeline)
        key = rk.keys.group("test", "hang").key("n")
        assert await rk.run(INCR, [key], [1]) == 1
        await rk.pipeline.aclose()  # no kept connection: the next call needs a new one
        await rk.pipeline.client.connection_pool.disconnect()
        own_server.pause()
        try:
            began = time.perf_counter()
            with pytest.raises(redkit.ConnectionLost):
                await rk.run(INCR, [key], [1], time_limit=0.2)
            # The handshake alone would wait for the 2 s command timeout.
            assert time.perf_counter() - began < 1.0
        finally:
            own_server.resume()
        # The handshake cut short left nothing behind whose late reply a command would read.
        for expected in (2, 3):
            assert await rk.run(INCR, [key], [1]) == expected
        assert await rk.redis.incr(key) == 4
