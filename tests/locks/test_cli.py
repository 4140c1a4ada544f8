"""``redkit locks list`` and ``redkit locks release NAME --force``."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner, Result

import redkit
from redkit.cli.locks import app

runner = CliRunner()


async def invoke(*args: str) -> Result:
    # The CLI runs its own event loop (asyncio.run): give it a thread of its own.
    return await asyncio.to_thread(lambda: runner.invoke(app, list(args)))


@pytest.mark.cluster
async def test_list_shows_held_locks_and_semaphores(rk: redkit.Redkit, redis_url: str) -> None:
    lock = rk.lock("db:{p1}", ttl=30)
    await lock.acquire()
    permit = await rk.semaphore("deploys", limit=3).acquire()
    result = await invoke("list", "--json", "--url", redis_url, "-n", rk.namespace)
    assert result.exit_code == 0, result.output
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
    assert rows[("lock", "db:{p1}")]["fencing_token"] == lock.fencing_token
    assert 29 < rows[("lock", "db:{p1}")]["ttl"] <= 30
    assert rows[("semaphore", "deploys")]["holders"] == 1
    table = await invoke("list", "--url", redis_url, "-n", rk.namespace)
    assert "db:{p1}" in table.stdout
    await lock.release()
    await permit.release()
    empty = await invoke("list", "--url", redis_url, "-n", rk.namespace)
    assert "no lock or semaphore is held" in empty.stdout


@pytest.mark.cluster
async def test_release_needs_force_and_then_frees_the_lock(
    rk: redkit.Redkit, redis_url: str
) -> None:
    lock = rk.lock("stuck", ttl=30, auto_renew=False)
    await lock.acquire()
    refused = await invoke("release", "stuck", "--url", redis_url, "-n", rk.namespace)
    assert refused.exit_code == 1
    assert "--force" in refused.output
    assert await lock.owned()
    args = ["release", "stuck", "--force", "--url", redis_url, "-n", rk.namespace]
    freed = await invoke(*args)
    assert freed.exit_code == 0, freed.output
    assert "released lock 'stuck'" in freed.stdout
    assert not await lock.locked()
    again = await invoke(*args)
    assert "was not held" in again.stdout
    with pytest.raises(redkit.LockLost):
        await lock.release()
