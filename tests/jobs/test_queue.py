"""The queue on its own (no worker): ordering, delays, idempotence, bounds, bad input."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

import redkit
from jobs.helpers import claim, evalsha_calls, eventually
from redkit._codegen import async_only
from redkit.jobs import PRIORITY_MAX, Job, JobSpec, JobState, Worker


@pytest.mark.cluster
async def test_enqueue_stores_the_job_once_and_get_reads_it(rk: redkit.Redkit) -> None:
    q = rk.queue("email")
    job = await q.enqueue("send_email", {"to": "a@b.c"}, max_attempts=5, timeout=10)
    assert job.created
    assert job.state is JobState.WAITING
    assert len(job.id) == 32
    got = await q.get(job.id)
    assert got is not None
    assert (got.function, got.payload, got.attempts, got.max_attempts, got.timeout) == (
        "send_email",
        {"to": "a@b.c"},
        0,
        5,
        10.0,
    )
    assert got.created_at is not None
    assert abs(got.created_at - time.time()) < 5
    assert await q.get("nope") is None
    assert (await q.stats()).waiting == 1
    assert "send_email" in repr(got)


@pytest.mark.cluster
async def test_higher_priority_runs_first_and_fifo_within_a_priority(rk: redkit.Redkit) -> None:
    q = rk.queue("prio")
    order = [("low-1", -5), ("high-1", 10), ("mid-1", 0), ("high-2", 10), ("low-2", -5)]
    order += [("top", PRIORITY_MAX), ("mid-2", 0)]
    for name, prio in order:
        await q.enqueue("f", name, priority=prio, job_id=name)
    assert await claim(q, 3) == ["top", "high-1", "high-2"]
    assert await claim(q, 10) == ["mid-1", "mid-2", "low-1", "low-2"]


@pytest.mark.cluster
async def test_fifo_holds_for_a_large_batch(rk: redkit.Redkit) -> None:
    q = rk.queue("fifo")
    jobs = await q.enqueue_many([JobSpec("f", i) for i in range(2500)])
    assert [j.id for j in jobs] == [j.id for j in jobs if j.created]
    claimed = await claim(q, 2500)
    assert claimed == [j.id for j in jobs]


@pytest.mark.cluster
async def test_delayed_jobs_enter_by_their_due_time(rk: redkit.Redkit) -> None:
    q = rk.queue("later")
    await q.enqueue("f", 2, delay=0.4, job_id="second")
    await q.enqueue("f", 1, delay=timedelta(milliseconds=200), job_id="first")
    assert (await q.stats()).delayed == 2
    assert await claim(q, 10) == []
    await asyncio.sleep(0.25)
    assert await claim(q, 10) == ["first"]
    await asyncio.sleep(0.2)
    assert await claim(q, 10) == ["second"]


@pytest.mark.cluster
async def test_a_job_id_is_enqueued_once_while_it_exists(rk: redkit.Redkit) -> None:
    q = rk.queue("idem")
    first = await q.enqueue("deploy", {"v": 1}, job_id="deploy:p1:42")
    again = await q.enqueue("deploy", {"v": 2}, job_id="deploy:p1:42")
    assert first.created
    assert not again.created
    assert again.state is JobState.WAITING
    many = await q.enqueue_many(
        [{"function": "deploy", "job_id": "deploy:p1:42"}, {"function": "deploy", "job_id": "x"}]
    )
    assert [j.created for j in many] == [False, True]
    stored = await q.get("deploy:p1:42")
    assert stored is not None
    assert stored.payload == {"v": 1}
    assert (await q.stats()).waiting == 2


@pytest.mark.cluster
async def test_a_paused_queue_hands_out_nothing(rk: redkit.Redkit) -> None:
    q = rk.queue("pausable")
    await q.enqueue("f", job_id="a")
    assert await q.pause() is True
    assert await q.pause() is False
    assert await q.is_paused()
    assert await claim(q, 10) == []
    assert (await q.stats()).paused
    assert await q.resume() is True
    assert await claim(q, 10) == ["a"]


@pytest.mark.cluster
async def test_cancel_pending_jobs_and_retry_them(rk: redkit.Redkit) -> None:
    q = rk.queue("cancel")
    job = await q.enqueue("f", job_id="c1")
    delayed = await q.enqueue("f", job_id="c2", delay=60)
    assert await q.cancel("c1") is JobState.WAITING
    assert await delayed.cancel() is JobState.DELAYED
    assert await q.cancel("c1") is JobState.CANCELLED  # nothing left to do
    assert await q.cancel("missing") is None
    stats = await q.stats()
    assert (stats.waiting, stats.delayed, stats.failed, stats.cancelled) == (0, 0, 0, 2)
    assert await job.status() is JobState.CANCELLED
    with pytest.raises(redkit.JobFailed, match="cancelled"):
        await job.result(timeout=0)
    assert await q.retry("c1") is True
    assert await q.retry("c1") is False  # waiting now, not failed
    assert await claim(q, 10) == ["c1"]
    with pytest.raises(redkit.InvalidInput, match="no job"):
        await q.retry("missing")


# Async only: it runs a worker (the worker is async; sync: tests/sync/test_threads.py).
@async_only
@pytest.mark.cluster
async def test_cancelled_jobs_are_listed_and_counted_apart_from_failed_ones(
    rk: redkit.Redkit,
) -> None:
    q = rk.queue("apart")

    def boom(payload: None) -> None:
        raise RuntimeError("boom")

    failed = await q.enqueue("boom", max_attempts=1)
    cancelled = await q.enqueue("boom", delay=60)
    assert await cancelled.cancel() is JobState.DELAYED
    async with asyncio.timeout(10):
        worker = Worker(rk, queues=[q], functions={"boom": boom})
        task = asyncio.create_task(worker.run())
        with pytest.raises(redkit.JobFailed, match="boom"):
            await failed.result(timeout=10)
        worker.stop()
        await task
    stats = await q.stats()
    assert (stats.failed, stats.cancelled) == (1, 1)
    assert stats.as_dict()["cancelled"] == 1
    assert [j.id for j in await q.jobs("failed")] == [failed.id]
    assert [j.id for j in await q.jobs("cancelled")] == [cancelled.id]
    assert await q.retry(cancelled.id) is True
    assert await q.jobs("cancelled") == []
    assert (await q.stats()).cancelled == 0


@pytest.mark.cluster
async def test_cancelled_jobs_are_bounded_like_failed_ones(rk: redkit.Redkit) -> None:
    q = rk.queue("bounded-cancel", keep_failed=3)
    jobs = await q.enqueue_many([JobSpec("f", i) for i in range(5)])
    for job in jobs:
        await job.cancel()
    kept = {j.id for j in await q.jobs("cancelled")}
    assert len(kept) == 3
    assert (await q.stats()).cancelled == 3
    # The trimmed ones are gone with their hashes (jobs cancelled in one millisecond tie on
    # their score, so which ones go is not fixed).
    gone = [j.id for j in jobs if await q.get(j.id) is None]
    assert len(gone) == 2
    assert not kept & set(gone)


@pytest.mark.cluster
async def test_drain_removes_pending_jobs_but_not_active_ones(rk: redkit.Redkit) -> None:
    q = rk.queue("drain")
    await q.enqueue_many([JobSpec("f", i) for i in range(30)] + [JobSpec("f", delay=60)])
    assert len(await claim(q, 5)) == 5
    assert await q.drain() == 26
    stats = await q.stats()
    assert (stats.waiting, stats.delayed, stats.active) == (0, 0, 5)


@pytest.mark.cluster
async def test_jobs_lists_a_state_page_by_page(rk: redkit.Redkit) -> None:
    q = rk.queue("pages")
    await q.enqueue_many([JobSpec("f", i, job_id=f"j{i}") for i in range(7)])
    page = await q.jobs("waiting", offset=2, limit=3)
    assert [j.id for j in page] == ["j2", "j3", "j4"]
    assert all(isinstance(j, Job) and j.state is JobState.WAITING for j in page)
    assert await q.jobs(JobState.ACTIVE) == []
    with pytest.raises(redkit.InvalidInput, match="unknown job state"):
        await q.jobs("sleeping")


@pytest.mark.cluster
async def test_result_times_out_while_nobody_runs_the_job(rk: redkit.Redkit) -> None:
    q = rk.queue("slow")
    job = await q.enqueue("f")
    began = time.perf_counter()
    with pytest.raises(redkit.JobTimeout, match="still waiting"):
        await job.result(timeout=0.2)
    assert 0.15 < time.perf_counter() - began < 1.5
    with pytest.raises(redkit.JobFailed, match="does not exist"):
        await q.wait("never-enqueued", timeout=1)


@pytest.mark.cluster
async def test_lifecycle_events_go_to_a_bounded_stream(rk: redkit.Redkit) -> None:
    q = rk.queue("events", events=50)
    await q.enqueue_many([JobSpec("f", i) for i in range(300)])
    events = await q.events(count=1000)
    assert events
    assert all(e["event"] == "enqueued" for e in events)
    assert len(events) < 300  # MAXLEN ~ 50 trims whole nodes: near 50, far below 300
    quiet = rk.queue("quiet", events=0)
    await quiet.enqueue("f")
    assert await quiet.events() == []


async def test_enqueue_many_is_one_round_trip_per_batch(rk: redkit.Redkit) -> None:
    q = rk.queue("batch")
    await q.enqueue("warm-up")  # registers the queue name (once per Queue object)
    before = await evalsha_calls(rk)
    jobs = await q.enqueue_many([JobSpec("f", i) for i in range(1500)])
    assert len(jobs) == 1500
    assert await evalsha_calls(rk) - before == 2  # 1000 + 500


@pytest.mark.cluster
async def test_bad_input_is_refused_before_anything_is_written(rk: redkit.Redkit) -> None:
    q = rk.queue("bad", max_payload_bytes=1000)
    cases: list[tuple[dict[str, object], str]] = [
        ({"payload": {1, 2}}, "not JSON-serialisable"),
        ({"payload": "x" * 2000}, "over the 1,000-byte cap"),
        ({"delay": -1}, "delay"),
        ({"priority": 1001}, "out of range"),
        ({"priority": -1001}, "out of range"),
        ({"priority": 1.5}, "priority must be an int"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": -3}, "job timeout"),
        ({"job_id": ""}, "job_id"),
    ]
    for kwargs, message in cases:
        with pytest.raises(redkit.InvalidInput, match=message):
            await q.enqueue("f", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(redkit.InvalidInput, match="function name"):
        await q.enqueue("")
    with pytest.raises(redkit.InvalidInput, match="not JSON"):
        await q.enqueue_many([JobSpec("f", 1), JobSpec("f", object())])
    with pytest.raises(redkit.InvalidInput, match="queue name"):
        rk.queue("")
    assert (await q.stats()).waiting == 0


# Async only: it runs a worker.
@async_only
@pytest.mark.cluster
async def test_completed_and_failed_jobs_are_kept_within_their_bounds(rk: redkit.Redkit) -> None:
    q = rk.queue("bounded", keep_completed=5, completed_ttl=60)
    worker = Worker(rk, queues=[q], functions={"ok": _ok}, concurrency=4)
    task = asyncio.create_task(worker.run())
    try:
        jobs = await q.enqueue_many([JobSpec("ok", i) for i in range(20)])
        await eventually(lambda: _completed(worker, 20))
    finally:
        worker.stop()
        await task
    assert (await q.stats()).completed == 5
    kept = await q.jobs("completed", limit=100)
    assert len(kept) == 5
    assert all(j.return_value == j.payload for j in kept)
    ttl = await rk.redis.pttl(q.job_key(kept[0].id))
    assert 0 < ttl <= 60_000
    # The trimmed ones are gone entirely, not only from the index. (Which ones were trimmed
    # depends on completion order, and jobs done in the same millisecond tie.)
    kept_ids = {j.id for j in kept}
    for job in jobs:
        if job.id not in kept_ids:
            assert await q.get(job.id) is None


# Async only: the worker's.
@async_only
async def _ok(payload: object) -> object:
    return payload


# Async only: the worker's.
@async_only
async def _completed(worker: Worker, n: int) -> bool:
    return worker.stats.completed >= n


async def test_only_a_callers_job_id_is_looked_up_before_enqueue(rk: redkit.Redkit) -> None:
    if rk.is_cluster:
        pytest.skip("commandstats of one standalone server")
    q = rk.queue("lookups")

    async def hgets() -> int:
        stats = await rk.redis.info("commandstats")
        return int(stats.get("cmdstat_hget", {}).get("calls", 0))

    await q.enqueue("f", 0)  # the queue's first enqueue registers it
    before = await hgets()
    generated = [await q.enqueue("f", i) for i in range(10)]
    assert await hgets() == before  # fresh random ids: nothing to look up
    assert len({job.id for job in generated}) == 10
    again = await q.enqueue("f", 1, job_id="mine")
    repeat = await q.enqueue("f", 2, job_id="mine")
    assert await hgets() == before + 2
    assert again.created
    assert not repeat.created
