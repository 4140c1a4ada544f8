"""Values as JSON: NaN and the infinities are refused everywhere a value is stored.

orjson writes a non-finite float as ``null``, so without a check ``{"x": nan}`` reads back as
``{"x": None}``. Every primitive that stores a value must refuse it before writing anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
from typing import Any

import orjson
import pytest

import redkit
from redkit.codec import dumps, loads, refuse_non_finite

NON_FINITE = [math.nan, math.inf, -math.inf]


async def snapshot(rk: redkit.Redkit) -> dict[bytes, bytes | None]:
    """Every key of the namespace with its serialised content: equal snapshots, no write."""
    found: dict[bytes, bytes | None] = {}
    async for key in rk.redis.scan_iter(match=rk.keys.pattern, count=1000):
        found[key] = await rk.redis.dump(key)
    return found


@dataclasses.dataclass
class Point:
    x: float
    label: str | None = None


class Level(float, enum.Enum):
    UNKNOWN = math.nan


@pytest.mark.parametrize("bad", NON_FINITE)
@pytest.mark.parametrize(
    "wrap",
    [
        lambda v: v,
        lambda v: {"x": v},
        lambda v: {"a": None, "b": [1, {"c": (2, v)}]},
        lambda v: [None, "null", v],
        lambda v: {v: "as a key"},
        lambda v: Point(v),
        lambda v: {"p": [Point(1.0, None), Point(v)]},
    ],
    ids=["bare", "field", "nested", "list", "key", "dataclass", "nested dataclass"],
)
def test_non_finite_floats_are_not_json_and_are_refused(bad: float, wrap: Any) -> None:
    with pytest.raises(redkit.InvalidInput, match="not JSON"):
        dumps(wrap(bad), what="the value")


def test_an_enum_whose_value_is_nan_is_refused() -> None:
    with pytest.raises(redkit.InvalidInput, match="not JSON"):
        dumps({"level": Level.UNKNOWN})


@pytest.mark.parametrize(
    "value",
    [
        None,
        {"x": None, "y": "null", "nullable": True},
        [1.5, -0.0, 1e308, None, {"null": None}],
        {None: 1, 2.5: 2},
        Point(2.0),
    ],
)
def test_none_and_finite_floats_still_round_trip(value: Any) -> None:
    data = dumps(value)
    assert loads(data) == orjson_round_trip(value)
    refuse_non_finite(value)  # and the walk itself accepts them


def orjson_round_trip(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))


# -- every primitive refuses them before it writes ---------------------------------------------


@pytest.mark.cluster
async def test_a_session_is_not_created_with_nan_in_its_data(rk: redkit.Redkit) -> None:
    store = rk.sessions()
    for bad in NON_FINITE:
        with pytest.raises(redkit.InvalidInput, match="not JSON"):
            await store.create("alice", {"score": bad})
    assert await snapshot(rk) == {}
    assert await store.list("alice") == []


@pytest.mark.cluster
async def test_a_session_update_with_infinity_writes_nothing(rk: redkit.Redkit) -> None:
    store = rk.sessions()
    session = await store.create("alice", {"score": 1.5})
    before = await snapshot(rk)
    for bad in NON_FINITE:
        with pytest.raises(redkit.InvalidInput, match="not JSON"):
            await store.update(session.id, {"score": bad, "other": 1})
    assert await snapshot(rk) == before
    again = await store.get(session.id)
    assert again is not None
    assert again.data == {"score": 1.5}


@pytest.mark.cluster
async def test_cached_permissions_refuse_nan(rk: redkit.Redkit) -> None:
    permissions = rk.sessions().permissions("alice", "p1")
    for bad in NON_FINITE:
        with pytest.raises(redkit.InvalidInput, match="not JSON"):
            await permissions.set({"quota": bad})
    assert await snapshot(rk) == {}
    assert await permissions.get() is None


@pytest.mark.cluster
async def test_the_cache_does_not_store_nan(rk: redkit.Redkit) -> None:
    cache = rk.cache(stats_interval=3600)
    for bad in NON_FINITE:
        with pytest.raises(redkit.InvalidInput, match="not JSON"):
            await cache.set("k", {"ratio": bad})
    assert await snapshot(rk) == {}
    assert await cache.get("k", "miss") == "miss"


@pytest.mark.cluster
async def test_a_cached_function_returning_nan_raises_and_stores_nothing(
    rk: redkit.Redkit,
) -> None:
    cache = rk.cache(stats_interval=3600)
    calls = 0

    @cache.cached(ttl=60)
    async def ratio(x: int) -> float:
        nonlocal calls
        calls += 1
        return math.nan

    for expected_calls in (1, 2):
        with pytest.raises(redkit.InvalidInput, match="not JSON"):
            await ratio(1)
        assert calls == expected_calls  # nothing cached: the next call computes again
    assert await snapshot(rk) == {}


@pytest.mark.cluster
async def test_a_nan_argument_does_not_share_the_cache_entry_of_none(rk: redkit.Redkit) -> None:
    cache = rk.cache(stats_interval=3600)

    @cache.cached(ttl=60)
    async def describe(x: float | None) -> str:
        return f"got {x!r}"

    assert await describe(None) == "got None"
    before = await snapshot(rk)
    with pytest.raises(redkit.InvalidInput, match="not JSON"):
        await describe(math.nan)
    with pytest.raises(redkit.InvalidInput, match="not JSON"):
        await describe(x=math.inf)
    assert await snapshot(rk) == before


@pytest.mark.cluster
async def test_publishing_nan_publishes_nothing(rk: redkit.Redkit) -> None:
    bus = rk.notifications()
    for bad in NON_FINITE:
        with pytest.raises(redkit.InvalidInput, match="not JSON"):
            await bus.publish("deployment:status", {"progress": bad})
    assert await snapshot(rk) == {}
    assert await bus.history("deployment:status") == []


@pytest.mark.cluster
async def test_a_job_with_nan_in_its_payload_is_not_enqueued(rk: redkit.Redkit) -> None:
    queue = rk.queue("email")
    for bad in NON_FINITE:
        with pytest.raises(redkit.InvalidInput, match="not JSON"):
            await queue.enqueue("send", {"to": "a@b.c", "weight": bad})
        with pytest.raises(redkit.InvalidInput, match="not JSON"):
            await queue.enqueue_many([{"function": "send"}, {"function": "send", "payload": bad}])
    assert await snapshot(rk) == {}
    assert (await queue.stats()).waiting == 0


@pytest.mark.cluster
async def test_a_job_whose_result_is_nan_fails_instead_of_completing_with_none(
    rk: redkit.Redkit,
) -> None:
    async def ratio(payload: None) -> float:
        return math.inf

    queue = rk.queue("results")
    worker = rk.worker([queue], {"ratio": ratio})
    task = asyncio.create_task(worker.run())
    try:
        job = await queue.enqueue("ratio")
        with pytest.raises(redkit.JobFailed, match="not JSON"):
            await job.result(timeout=10)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
