"""An acquire cancelled while its script is in flight must not leave an ownerless lease."""

from __future__ import annotations

import asyncio
import time

import redkit
from redkit.locks import Lock, Semaphore


async def _cancel_at_every_step(rk: redkit.Redkit, make: object) -> list[str]:
    """Start an acquire, let it run ``steps`` loop steps, block the loop while the server
    answers, then cancel it; for every interleaving up to 24 steps, report what remains."""
    outcomes = []
    for steps in range(1, 25):
        holder = make(steps)  # type: ignore[operator]
        task = asyncio.create_task(holder.acquire())
        for _ in range(steps):
            await asyncio.sleep(0)
        time.sleep(0.03)
        task.cancel()
        try:
            result = await task
        except asyncio.CancelledError:
            outcomes.append("cancelled")
        else:  # it finished before the cancel: a normal holder, give it back
            outcomes.append("acquired")
            await (result if isinstance(holder, Semaphore) else holder).release()
    return outcomes


async def test_a_cancelled_acquire_never_leaves_an_ownerless_lock(rk: redkit.Redkit) -> None:
    locks: dict[int, Lock] = {}

    def make(steps: int) -> Lock:
        locks[steps] = rk.lock(f"cancelled-{steps}", ttl=30)
        return locks[steps]

    outcomes = await _cancel_at_every_step(rk, make)
    assert "cancelled" in outcomes
    for steps, lock in locks.items():
        # Whatever the interleaving, nobody is left holding a lease nobody can release.
        assert not await lock.locked(), f"lock held after a cancel at step {steps}"


async def test_a_cancelled_permit_acquire_returns_the_permit(rk: redkit.Redkit) -> None:
    semaphores: dict[int, Semaphore] = {}

    def make(steps: int) -> Semaphore:
        semaphores[steps] = rk.semaphore(f"cancelled-{steps}", limit=1, ttl=30)
        return semaphores[steps]

    outcomes = await _cancel_at_every_step(rk, make)
    assert "cancelled" in outcomes
    for steps, semaphore in semaphores.items():
        assert await semaphore.holders() == 0, f"permit held after a cancel at step {steps}"
