"""revoke_all against concurrent creates and reads: atomic, nothing half-revoked."""

from __future__ import annotations

import asyncio

import pytest

import redkit
from redkit.sessions import Session


@pytest.mark.cluster
async def test_revoke_all_racing_creates_and_gets_leaves_no_old_session_working(
    rk: redkit.Redkit,
) -> None:
    store = rk.sessions(idle_ttl=60, absolute_ttl=600, touch_every=0)
    old = [await store.create("mallory", {"n": i}) for i in range(20)]
    racing: list[Session] = []
    revoked: list[int] = []

    async def create(i: int) -> None:
        await asyncio.sleep(0.0005 * (i % 10))
        racing.append(await store.create("mallory", {"racing": i}))

    async def get(s: Session) -> None:
        await store.get(s.id)

    async def revoke_all() -> None:
        await asyncio.sleep(0.002)
        revoked.append(await store.revoke_all("mallory"))

    await asyncio.gather(
        *(create(i) for i in range(50)),
        *(get(old[i % 20]) for i in range(50)),
        revoke_all(),
    )
    assert len(racing) == 50
    for s in old:
        assert await store.get(s.id) is None
    listed = {info.id_prefix for info in await store.list("mallory")}
    survivors = 0
    for s in racing:
        works = await store.get(s.id) is not None
        # Either revoked (gone) or created after revoke_all (works and listed): never half.
        assert works == (s.id_prefix in listed)
        survivors += works
    assert revoked == [20 + 50 - survivors]
    assert len(listed) == survivors
    # And a second revoke_all ends exactly the survivors.
    assert await store.revoke_all("mallory") == survivors
