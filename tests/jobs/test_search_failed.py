"""Failed jobs are found by id, function or error text (an index kept by the fail script, no
KEYS/SCAN), and the dashboard's job actions: delete, retry all failed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import redkit
from jobs.helpers import running
from redkit.errors import InvalidInput
from redkit.jobs import JobState


async def boom(payload: dict[str, Any]) -> None:
    raise RuntimeError(f"card declined for order {payload['order']}")


async def fine(payload: Any) -> str:
    return "ok"


async def failed_jobs(rk: redkit.Redkit, name: str, orders: list[int], **options: Any) -> list[str]:
    q = rk.queue(name, **options)
    ids = []
    async with running(rk.worker([q], {"charge": boom, "ship": fine}, handle_signals=False)):
        for order in orders:
            job = await q.enqueue("charge", {"order": order}, max_attempts=1)
            with pytest.raises(redkit.JobFailed):
                await job.result(timeout=10)
            ids.append(job.id)
    return ids


@pytest.mark.cluster
async def test_a_failed_job_is_found_by_its_id_its_function_or_its_error_text(
    rk: redkit.Redkit,
) -> None:
    ids = await failed_jobs(rk, "pay", [101, 202])
    q = rk.queue("pay")
    by_error, seen = await q.search_failed("ORDER 202")
    assert [j.id for j in by_error] == [ids[1]]
    assert seen == 2
    by_function, _ = await q.search_failed("charge")
    assert [j.id for j in by_function] == [ids[1], ids[0]]  # newest first
    by_id, _ = await q.search_failed(ids[0])
    assert [j.id for j in by_id] == [ids[0]]
    assert by_id[0].error is not None
    assert "card declined" in by_id[0].error
    nothing, _ = await q.search_failed("no such text")
    assert nothing == []


async def test_the_search_text_lives_on_the_job_and_is_trimmed_with_it(
    rk: redkit.Redkit,
) -> None:
    ids = await failed_jobs(rk, "bounded", [1, 2, 3], keep_failed=2)
    q = rk.queue("bounded", keep_failed=2)
    assert (
        await rk.redis.hget(q.job_key(ids[2]), "search")
        == b"charge\nruntimeerror: card declined for order 3"
    )
    found, seen = await q.search_failed("charge")
    assert ([j.id for j in found], seen) == ([ids[2], ids[1]], 2)  # ids[0] was trimmed
    assert await q.retry(ids[1])
    found, _ = await q.search_failed("charge")
    assert [j.id for j in found] == [ids[2]]  # a retried job is no longer failed


async def test_a_cancelled_job_is_kept_apart_from_the_failed_ones(rk: redkit.Redkit) -> None:
    q = rk.queue("cancel")
    job = await q.enqueue("ship", delay=60)
    await q.cancel(job.id)
    found, seen = await q.search_failed("ship")
    assert (found, seen) == ([], 0)
    assert await q.delete(job.id) is JobState.CANCELLED
    assert (await q.stats()).as_dict().get("cancelled", 0) == 0


async def test_search_input_is_checked(rk: redkit.Redkit) -> None:
    q = rk.queue("checks")
    for bad in ("", "   ", "x" * 201):
        with pytest.raises(InvalidInput):
            await q.search_failed(bad)
    with pytest.raises(InvalidInput):
        await q.search_failed("x", limit=0)


@pytest.mark.cluster
async def test_retry_all_failed_queues_every_failed_job_again(rk: redkit.Redkit) -> None:
    ids = await failed_jobs(rk, "again", [1, 2, 3])
    q = rk.queue("again")
    assert await q.retry_all_failed() == 3
    stats = await q.stats()
    assert (stats.failed, stats.waiting) == (0, 3)
    for job_id in ids:
        job = await q.get(job_id)
        assert job is not None
        assert (job.state, job.attempts) == (JobState.WAITING, 0)
    assert await q.retry_all_failed() == 0


async def test_delete_removes_a_pending_job_and_leaves_a_running_one(rk: redkit.Redkit) -> None:
    q = rk.queue("del")
    job = await q.enqueue("ship", {"x": 1})
    assert await q.delete(job.id) is JobState.WAITING
    assert await q.get(job.id) is None
    assert (await q.stats()).waiting == 0
    assert await q.delete(job.id) is None
    started = asyncio.Event()

    async def slow(payload: Any) -> None:
        started.set()
        await asyncio.sleep(30)

    async with running(rk.worker([q], {"slow": slow}, handle_signals=False, grace=0)):
        busy = await q.enqueue("slow")
        await asyncio.wait_for(started.wait(), 10)
        assert await q.delete(busy.id) is JobState.ACTIVE
        assert await q.get(busy.id) is not None
        await q.cancel(busy.id)
