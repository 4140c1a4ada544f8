"""bench/gateway.py: the stacks serve real requests, and a run that did not do the work fails.

Only redkit's stacks and the bare endpoint run here (the peers are installed in .venv-bench
only); one short load run each, no figure is judged (the machine is shared).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import redkit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gateway() -> Iterator[Any]:
    """bench.gateway; its servers, started by the first test that needs them, serve the
    module's tests (the suite's standalone server stays the same) and stop at its end."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT))
        import bench.gateway as gateway

        try:
            yield gateway
        finally:
            gateway._stop_all()


def _context(rk: redkit.Redkit, url: str) -> Any:
    from bench.harness import Context

    return Context(url=url, rk=rk, scale=0.05)


@pytest.mark.standalone_only
async def test_redkit_gateway_serves_every_request_as_a_cache_hit_of_its_own_user(
    gateway: Any, rk: redkit.Redkit, redis_url: str
) -> None:
    ctx = _context(rk, redis_url)
    cached = await gateway._measure(ctx, "redkit")
    bare = await gateway._measure(ctx, "direct")
    # _measure verified every response (a 200 HIT with rate-limit headers, the user's own
    # page) and that the endpoint ran only to fill the cache: here, only that it measured.
    assert cached.rate > 0
    assert bare.rate > 0
    assert cached.cpu_us > 0
    assert bare.cpu_us > 0
    assert cached.p50 <= cached.p99


@pytest.mark.standalone_only
async def test_a_stack_whose_responses_lack_their_marks_fails_the_run(
    gateway: Any, rk: redkit.Redkit, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.harness import WorkNotDone

    # The bare endpoint has no cache: asked for X-Cache: HIT, every response is bad.
    monkeypatch.setattr(gateway.STACKS["direct"], "expect", ["x-cache: HIT"])
    with pytest.raises(WorkNotDone, match="bad responses"):
        await gateway._measure(_context(rk, redis_url), "direct")


@pytest.mark.standalone_only
async def test_a_cached_stack_that_runs_the_endpoint_per_request_fails_the_run(
    gateway: Any, rk: redkit.Redkit, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.harness import WorkNotDone

    monkeypatch.setattr(gateway.STACKS["direct"], "cached", True)
    with pytest.raises(WorkNotDone, match="the cache did not hit"):
        await gateway._measure(_context(rk, redis_url), "direct")
