"""The worker in-process: running, retries, timeouts, leases, cancel, shutdown, wake-ups."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import redkit
from jobs.helpers import claim, complete, evalsha_calls, eventually, running
from redkit.jobs import Job, JobSpec, JobState, Queue, Worker


@pytest.mark.cluster
async def test_a_worker_runs_async_and_sync_functions_and_passes_the_job(
    rk: redkit.Redkit,
) -> None:
    threads: list[str] = []

    async def add(payload: dict[str, int]) -> int:
        return payload["a"] + payload["b"]

    def shout(payload: str) -> str:
        threads.append(threading.current_thread().name)
        return payload.upper()

    async def attempt(payload: None, job: Job) -> dict[str, Any]:
        return {"attempt": job.attempts, "id": job.id}

    q = rk.queue("mixed")
    funcs: dict[str, Callable[..., Any]] = {"add": add, "shout": shout, "attempt": attempt}
    async with running(rk.worker(["mixed"], funcs, concurrency=4)):
        a = await q.enqueue("add", {"a": 2, "b": 3})
        b = await q.enqueue("shout", "hi")
        c = await q.enqueue("attempt")
        assert await a.result(timeout=5) == 5
        assert await b.result(timeout=5) == "HI"
        assert await c.result(timeout=5) == {"attempt": 1, "id": c.id}
    assert threads
    assert threads[0].startswith("redkit-job")
    done = await q.get(a.id)
    assert done is not None
    assert done.state is JobState.COMPLETED
    assert done.attempts == 1
    assert done.started_at is not None
    assert done.finished_at is not None
    assert done.finished_at >= done.started_at


@pytest.mark.cluster
async def test_an_unknown_function_fails_the_job_and_the_worker_keeps_running(
    rk: redkit.Redkit,
) -> None:
    async def known(payload: int) -> int:
        return payload

    q = rk.queue("unknown")
    async with running(rk.worker(["unknown"], {"known": known})):
        bad = await q.enqueue("mystery", max_attempts=3)
        with pytest.raises(redkit.JobFailed, match="unknown function 'mystery'") as info:
            await bad.result(timeout=5)
        assert info.value.error is not None
        assert "known" in info.value.error
        good = await q.enqueue("known", 7)
        assert await good.result(timeout=5) == 7
    failed = await q.get(bad.id)
    assert failed is not None
    assert failed.attempts == 1


@pytest.mark.cluster
async def test_failed_attempts_retry_with_exponential_backoff_then_fail(
    rk: redkit.Redkit,
) -> None:
    times: list[float] = []

    async def flaky(payload: None) -> None:
        times.append(time.monotonic())
        raise RuntimeError("smtp down")

    q = rk.queue("backoff")
    async with running(rk.worker(["backoff"], {"flaky": flaky}, concurrency=2)):
        job = await q.enqueue("flaky", max_attempts=3, backoff=0.2)
        with pytest.raises(redkit.JobFailed, match="smtp down"):
            await job.result(timeout=10)
    assert len(times) == 3
    first, second = times[1] - times[0], times[2] - times[1]
    # 0.2 s then 0.4 s, each +-20% jitter, plus scheduling slack.
    assert 0.16 <= first <= 0.24 + 0.25, first
    assert 0.32 <= second <= 0.48 + 0.25, second
    failed = await q.get(job.id)
    assert failed is not None
    assert failed.state is JobState.FAILED
    assert failed.attempts == 3
    assert failed.error == "RuntimeError: smtp down"
    assert failed.traceback is not None
    assert "in flaky" in failed.traceback
    assert [j.id for j in await q.jobs("failed")] == [job.id]
    events = [e["event"] for e in await q.events() if e["job"] == job.id]
    assert events == ["enqueued", "active", "retrying", "active", "retrying", "active", "failed"]


@pytest.mark.cluster
async def test_a_job_that_succeeds_on_a_retry_completes(rk: redkit.Redkit) -> None:
    async def second_time_lucky(payload: None, job: Job) -> int:
        if job.attempts < 2:
            raise ValueError("not yet")
        return job.attempts

    q = rk.queue("lucky")
    async with running(rk.worker(["lucky"], {"f": second_time_lucky})):
        job = await q.enqueue("f", backoff=0.05)
        assert await job.result(timeout=5) == 2


@pytest.mark.cluster
async def test_a_job_past_its_timeout_is_cancelled_and_counted_as_a_failed_attempt(
    rk: redkit.Redkit,
) -> None:
    cancelled = 0

    async def slow(payload: None) -> None:
        nonlocal cancelled
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled += 1
            raise

    q = rk.queue("timeout")
    async with running(rk.worker(["timeout"], {"slow": slow})):
        job = await q.enqueue("slow", timeout=0.2, max_attempts=2, backoff=0)
        began = time.monotonic()
        with pytest.raises(redkit.JobFailed, match=r"timed out after 0.2 s \(attempt 2 of 2\)"):
            await job.result(timeout=5)
        assert time.monotonic() - began < 2
    assert cancelled == 2


@pytest.mark.cluster
async def test_a_dead_workers_job_goes_back_to_waiting_when_its_lease_ends(
    rk: redkit.Redkit,
) -> None:
    runs: list[int] = []

    async def work(payload: None, job: Job) -> str:
        runs.append(job.attempts)
        return "done"

    q = rk.queue("stalled")
    job = await q.enqueue("work")
    # A worker claims it and dies: nobody renews its 300 ms lease.
    assert await claim(q, 1, lease_ms=300) == [job.id]
    assert (await q.stats()).active == 1
    async with running(rk.worker(["stalled"], {"work": work})):
        assert await job.result(timeout=5) == "done"
    assert runs == [2]  # the dead worker's attempt counted
    # The dead worker's late acknowledgement is refused.
    assert not await complete(q, job.id, 1)
    events = [e["event"] for e in await q.events() if e["job"] == job.id]
    assert events == ["enqueued", "active", "stalled", "active", "completed"]


@pytest.mark.cluster
async def test_a_stalled_job_out_of_attempts_goes_to_failed(rk: redkit.Redkit) -> None:
    q = rk.queue("stalled-out")
    job = await q.enqueue("work", max_attempts=1)
    assert await claim(q, 1, lease_ms=100) == [job.id]
    await asyncio.sleep(0.15)
    assert await claim(q, 1, worker="x" * 32) == []  # any claim sweeps expired leases
    with pytest.raises(redkit.JobFailed, match="lease expired"):
        await job.result(timeout=1)


@pytest.mark.cluster
async def test_the_heartbeat_keeps_a_long_job_leased(rk: redkit.Redkit) -> None:
    runs = 0

    async def long(payload: None) -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(1.0)
        return "ok"

    q = rk.queue("long")
    async with running(rk.worker(["long"], {"long": long}, lease=0.3)):
        job = await q.enqueue("long")
        # Another worker sweeping meanwhile must not take it (its lease is renewed).
        await asyncio.sleep(0.6)
        assert await claim(q, 1, worker="y" * 32) == []
        assert await job.result(timeout=5) == "ok"
    assert runs == 1


@pytest.mark.cluster
async def test_cancelling_an_active_job_stops_it_at_the_next_heartbeat(
    rk: redkit.Redkit,
) -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    async def forever(payload: None) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise

    q = rk.queue("cancel-active")
    async with running(rk.worker(["cancel-active"], {"forever": forever}, lease=0.3)):
        job = await q.enqueue("forever")
        await asyncio.wait_for(started.wait(), 5)
        assert await job.cancel() is JobState.ACTIVE
        await asyncio.wait_for(stopped.wait(), 2)
        with pytest.raises(redkit.JobFailed, match="cancelled"):
            await job.result(timeout=2)
    assert await job.status() is JobState.CANCELLED
    stats = await q.stats()
    assert (stats.failed, stats.cancelled) == (0, 1)
    assert [j.id for j in await q.jobs("cancelled")] == [job.id]


@pytest.mark.cluster
async def test_graceful_stop_finishes_short_jobs_and_hands_back_long_ones(
    rk: redkit.Redkit,
) -> None:
    async def nap(payload: float) -> float:
        await asyncio.sleep(payload)
        return payload

    q = rk.queue("shutdown")
    worker = rk.worker(["shutdown"], {"nap": nap}, grace=0.5)
    task = asyncio.create_task(worker.run())
    short = await q.enqueue("nap", 0.1)
    long = await q.enqueue("nap", 30)
    await eventually(lambda: _active(q, 2), timeout=5)
    worker.stop()
    began = time.monotonic()
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - began < 2
    assert await short.result(timeout=10) == 0.1  # finished, not handed back
    handed_back = await q.get(long.id)
    assert handed_back is not None
    assert handed_back.state is JobState.WAITING
    assert handed_back.attempts == 0
    assert (await q.stats()).active == 0


async def _active(q: Queue, n: int) -> bool:
    return (await q.stats()).active == n


@pytest.mark.cluster
async def test_an_idle_worker_picks_up_a_new_job_within_milliseconds(rk: redkit.Redkit) -> None:
    started: asyncio.Queue[float] = asyncio.Queue()

    async def mark(payload: None) -> None:
        started.put_nowait(time.perf_counter())

    q = rk.queue("latency")
    latencies = []
    async with running(rk.worker(["latency"], {"mark": mark})):
        await asyncio.sleep(0.1)  # the worker is blocked on its wake list by now
        for _ in range(7):
            sent = time.perf_counter()
            await q.enqueue("mark")
            latencies.append(await asyncio.wait_for(started.get(), 5) - sent)
            await asyncio.sleep(0.05)
    # A blocking wake-up, not a poll: a few ms (generous bound for a busy 2-core machine).
    assert statistics.median(latencies) < 0.05, latencies


@pytest.mark.cluster
async def test_a_paused_queue_runs_nothing_until_resumed(rk: redkit.Redkit) -> None:
    ran = asyncio.Event()

    async def f(payload: None) -> None:
        ran.set()

    q = rk.queue("paused")
    await q.pause()
    async with running(rk.worker(["paused"], {"f": f})):
        job = await q.enqueue("f")
        await asyncio.sleep(0.3)
        assert not ran.is_set()
        assert await job.status() is JobState.WAITING
        await q.resume()
        await job.result(timeout=2)


@pytest.mark.cluster
async def test_queues_in_strict_order_serve_the_first_one_first(rk: redkit.Redkit) -> None:
    order: list[str] = []

    async def record(payload: str) -> None:
        order.append(payload)

    high, low = rk.queue("high"), rk.queue("low")
    await low.enqueue_many([JobSpec("r", "low") for _ in range(5)])
    await high.enqueue_many([JobSpec("r", "high") for _ in range(5)])
    async with running(rk.worker(["high", "low"], {"r": record}, concurrency=1)):
        await eventually(lambda: _count(order, 10), timeout=5)
    assert order == ["high"] * 5 + ["low"] * 5


async def _count(items: list[str], n: int) -> bool:
    return len(items) >= n


@pytest.mark.cluster
async def test_weighted_queues_are_both_served(rk: redkit.Redkit) -> None:
    seen: list[str] = []

    async def record(payload: str) -> None:
        seen.append(payload)

    a, b = rk.queue("wa"), rk.queue("wb")
    await a.enqueue_many([JobSpec("r", "a") for _ in range(150)])
    await b.enqueue_many([JobSpec("r", "b") for _ in range(150)])
    worker = rk.worker(["wa", "wb"], {"r": record}, concurrency=1, weights={"wa": 3, "wb": 1})
    async with running(worker):
        await eventually(lambda: _count(seen, 120), timeout=60)  # a bound, not a speed goal
    # Weighted, not strict: b gets some turns, a gets more. Each round's order is drawn at
    # random and a round claims up to two jobs, so 120 jobs are about 60 draws: with 40 (20
    # draws) b came first half the time about once in a hundred runs.
    first = seen[:120]
    assert 0 < first.count("b") < first.count("a")


@pytest.mark.cluster
async def test_three_schedulers_enqueue_each_cron_tick_exactly_once(rk: redkit.Redkit) -> None:
    schedules = [
        rk.schedule("* * * * * *", "beat", {"n": 1}, queue="cron", name="beat") for _ in range(3)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop)) for s in schedules]
    await asyncio.sleep(2.6)
    stop.set()
    await asyncio.gather(*tasks)
    q = rk.queue("cron")
    jobs = await q.jobs("waiting", limit=100)
    ticks = [j.id for j in jobs]
    assert 2 <= len(ticks) <= 4
    assert len(set(ticks)) == len(ticks)
    assert sum(s.enqueued for s in schedules) == len(ticks)
    # The same tick, fired by three schedulers at once: one job.
    at = schedules[0].next_after(await schedules[0].server_now())
    made = await asyncio.gather(*(s.tick(at) for s in schedules))
    assert sorted(j.created for j in made) == [False, False, True]


@pytest.mark.cluster
async def test_a_result_that_is_not_json_fails_the_job_clearly(rk: redkit.Redkit) -> None:
    async def bad(payload: None) -> object:
        return object()

    q = rk.queue("bad-result")
    async with running(rk.worker(["bad-result"], {"bad": bad})):
        job = await q.enqueue("bad")
        with pytest.raises(redkit.JobFailed, match="result is not JSON"):
            await job.result(timeout=5)


async def test_claim_and_complete_cost_at_most_two_script_calls_per_job(
    rk: redkit.Redkit,
) -> None:
    async def noop(payload: int) -> int:
        return payload

    q = rk.queue("round-trips")
    n = 1000
    await q.enqueue_many([JobSpec("noop", i) for i in range(n)])
    before = await evalsha_calls(rk)
    worker = rk.worker(["round-trips"], {"noop": noop}, concurrency=50)
    async with running(worker):
        await eventually(lambda: _done(worker, n), timeout=20)
    calls = await evalsha_calls(rk) - before
    assert worker.stats.completed == n
    # Batches of up to 50 per claim and per acknowledgement: far below 2 per job.
    assert calls / n < 0.5, calls


async def _done(worker: Worker, n: int) -> bool:
    return worker.stats.completed >= n


def test_worker_options_are_checked(rk: redkit.Redkit) -> None:
    async def f(payload: None) -> None:
        return None

    with pytest.raises(redkit.InvalidInput, match="concurrency"):
        rk.worker(["q"], {"f": f}, concurrency=0)
    with pytest.raises(redkit.InvalidInput, match="at least one queue"):
        rk.worker([], {"f": f})
    with pytest.raises(redkit.InvalidInput, match="weights"):
        rk.worker(["q"], {"f": f}, weights={"other": 1})
    with pytest.raises(redkit.InvalidInput, match="lease"):
        rk.worker(["q"], {"f": f}, lease=0)
    assert "concurrency=10" in repr(rk.worker(["q"], {"f": f}))


async def test_a_stop_while_acks_flow_keeps_the_counts_exact(rk: redkit.Redkit) -> None:
    queue = rk.queue("acks", keep_completed=10_000)
    await queue.enqueue_many([JobSpec("noop", i) for i in range(3000)])

    async def noop(payload: int) -> None:
        return None

    worker = rk.worker([queue], {"noop": noop}, concurrency=50)
    task = asyncio.create_task(worker.run())
    while (await queue.stats()).completed < 300:
        await asyncio.sleep(0.002)
    worker.stop()  # in the middle of the flow of acknowledgements
    await asyncio.wait_for(task, 10)
    stats = await queue.stats()
    assert worker.stats.completed == stats.completed
    assert stats.active == 0
    assert stats.completed + stats.waiting == 3000  # nothing lost, nothing left half-done


@pytest.mark.cluster
async def test_a_running_job_reports_progress_that_watchers_can_read(rk: redkit.Redkit) -> None:
    q = rk.queue("progress")
    halfway = asyncio.Event()
    go_on = asyncio.Event()
    seen: list[Job] = []

    async def deploy(payload: None, job: Job) -> str:
        seen.append(job)
        assert await job.set_progress({"step": "build", "done": 1, "of": 2})
        halfway.set()
        await go_on.wait()
        assert await job.set_progress(1.0)
        return "deployed"

    async with running(rk.worker(["progress"], {"deploy": deploy}, concurrency=1)):
        job = await q.enqueue("deploy")
        await asyncio.wait_for(halfway.wait(), 5)
        watched = await q.get(job.id)
        assert watched is not None
        assert watched.state is JobState.ACTIVE
        assert watched.progress == {"step": "build", "done": 1, "of": 2}
        # Only the worker's own Job may report: a watcher's copy is refused before any write.
        with pytest.raises(redkit.InvalidInput, match="only the worker"):
            await watched.set_progress(0.9)
        with pytest.raises(redkit.InvalidInput, match=r"too large|bytes"):
            await seen[0].set_progress("x" * 20_000)
        go_on.set()
        assert await job.result(timeout=5) == "deployed"
    assert (await job.refresh()).progress == 1.0
    # The attempt is over: a late report writes nothing.
    assert not await seen[0].set_progress(0.5)
    assert (await job.refresh()).progress == 1.0
    progress_events = [e for e in await q.events(count=100) if e["event"] == "progress"]
    assert [e["job"] for e in progress_events] == [job.id, job.id]
    assert progress_events[-1]["progress"] == "1.0"


async def test_a_plain_def_job_reports_progress_from_its_thread(rk: redkit.Redkit) -> None:
    q = rk.queue("progress-sync")

    def render(payload: int, job: Job) -> int:
        for done in range(1, payload + 1):
            assert job.set_progress_sync({"done": done, "of": payload})
        return payload

    async with running(rk.worker(["progress-sync"], {"render": render}, concurrency=1)):
        job = await q.enqueue("render", 3)
        assert await job.result(timeout=5) == 3
    assert (await job.refresh()).progress == {"done": 3, "of": 3}
    reports = [e for e in await q.events(count=100) if e["event"] == "progress"]
    assert len(reports) == 3


async def test_progress_sync_from_the_event_loop_points_to_the_async_call(
    rk: redkit.Redkit,
) -> None:
    q = rk.queue("progress-misuse")
    errors: list[str] = []

    async def wrong(payload: None, job: Job) -> None:
        try:
            job.set_progress_sync(0.5)
        except redkit.InvalidInput as exc:
            errors.append(str(exc))

    async with running(rk.worker(["progress-misuse"], {"wrong": wrong}, concurrency=1)):
        job = await q.enqueue("wrong")
        await job.result(timeout=5)
    assert errors == ["in async code, use `await job.set_progress(...)`"]


@pytest.mark.cluster
async def test_held_jobs_are_handed_back_unstarted_with_their_attempt_refunded_on_stop(
    rk: redkit.Redkit,
) -> None:
    started: list[int] = []

    async def nap(payload: int) -> None:
        started.append(payload)
        await asyncio.sleep(30)

    q = rk.queue("prefetch-stop")
    await q.enqueue_many([JobSpec("nap", i) for i in range(3)])
    worker = rk.worker([q], {"nap": nap}, concurrency=1, prefetch=2, grace=0.1)
    task = asyncio.create_task(worker.run())
    # One job runs, two are held: all three leased to this worker.
    await eventually(lambda: _active(q, 3), timeout=5)
    assert started == [0]
    worker.stop()
    await asyncio.wait_for(task, 5)
    assert started == [0]  # a held job never starts once the worker stops
    stats = await q.stats()
    assert (stats.waiting, stats.active) == (3, 0)
    assert [j.attempts for j in await q.jobs("waiting")] == [0, 0, 0]


@pytest.mark.cluster
async def test_a_held_job_cancelled_before_its_turn_never_runs(rk: redkit.Redkit) -> None:
    release = asyncio.Event()
    ran: list[str] = []

    async def step(payload: str) -> str:
        ran.append(payload)
        if payload == "first":
            await release.wait()
        return payload

    q = rk.queue("prefetch-cancel")
    first = await q.enqueue("step", "first")
    second = await q.enqueue("step", "second")
    async with running(rk.worker([q], {"step": step}, concurrency=1, prefetch=1, lease=0.3)):
        await eventually(lambda: _active(q, 2), timeout=5)
        assert await second.cancel() is JobState.ACTIVE
        # The heartbeat (every lease / 3) learns of the cancel while the job is still held.
        await asyncio.sleep(0.35)
        release.set()
        assert await first.result(timeout=5) == "first"
        with pytest.raises(redkit.JobFailed, match="cancelled"):
            await second.result(timeout=5)
    assert ran == ["first"]
    assert await second.status() is JobState.CANCELLED


async def test_automatic_prefetch_holds_jobs_only_while_jobs_are_short(
    rk: redkit.Redkit,
) -> None:
    async def quick(payload: float) -> None:
        await asyncio.sleep(payload)

    q = rk.queue("prefetch-auto")
    worker = rk.worker([q], {"quick": quick}, concurrency=4)
    assert worker._depth() == 0  # nothing known yet: claim only for free slots
    async with running(worker):
        await q.enqueue_many([JobSpec("quick", 0) for _ in range(20)])
        await eventually(lambda: _done(worker, 20), timeout=5)
        assert worker._depth() == 4
        await q.enqueue_many([JobSpec("quick", 0.2) for _ in range(8)])
        await eventually(lambda: _done(worker, 28), timeout=10)
        assert worker._depth() == 0
    assert rk.worker([q], {"quick": quick}, prefetch=0)._depth() == 0
