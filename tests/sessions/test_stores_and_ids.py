"""Named session stores keep their tokens apart; user and project IDs may be ints."""

from __future__ import annotations

from typing import Any

import pytest

import redkit
from sessions.counting import CommandCounter

# -- a token is valid in the store that made it -----------------------------------------------


@pytest.mark.cluster
async def test_a_token_of_one_store_is_unknown_to_another_store_in_the_same_namespace(
    rk: redkit.Redkit, commands: CommandCounter
) -> None:
    users, admins = rk.sessions(), rk.sessions(name="admin")
    user_session = await users.create("alice", {"role": "user"})
    admin_session = await admins.create("alice", {"role": "admin"})

    before = await commands.snapshot()
    assert await admins.get(user_session.id) is None
    assert await users.get(admin_session.id) is None
    done = await commands.since(before)
    assert done["hmget"] == 2  # one read each, as for any unknown token

    with pytest.raises(redkit.SessionNotFound):
        await admins.require(user_session.id)
    with pytest.raises(redkit.SessionNotFound):
        await admins.update(user_session.id, {"role": "admin"})
    with pytest.raises(redkit.SessionNotFound):
        await admins.rotate(user_session.id)
    assert await admins.revoke(user_session.id) is False

    # Nothing the other store did touched them.
    mine = await users.get(user_session.id)
    assert mine is not None
    assert mine.data == {"role": "user"}
    theirs = await admins.get(admin_session.id)
    assert theirs is not None
    assert theirs.data == {"role": "admin"}


@pytest.mark.cluster
async def test_each_store_has_its_own_user_index_limit_and_revoke_all(rk: redkit.Redkit) -> None:
    users, admins = rk.sessions(max_per_user=1), rk.sessions(name="admin", max_per_user=1)
    kept = await users.create("bob")
    await admins.create("bob")  # the limit is per store: this evicts nothing in `users`
    assert await users.get(kept.id) is not None
    assert len(await users.list("bob")) == len(await admins.list("bob")) == 1

    await admins.permissions("bob", "p1").set(["admin"])
    await users.permissions("bob", "p1").set(["read"])
    assert await admins.revoke_all("bob") == 1
    assert await admins.list("bob") == []
    assert await admins.permissions("bob", "p1").get() is None
    assert [s.id_prefix for s in await users.list("bob")] == [kept.id_prefix]
    assert await users.permissions("bob", "p1").get() == ["read"]


def test_the_store_name_is_in_its_repr(rk: redkit.Redkit) -> None:
    assert "name='admin'" in repr(rk.sessions(name="admin"))


@pytest.mark.parametrize("bad", ["", "a:b", "a b", "x{y}", "x" * 65, 7, None])
def test_store_names_that_could_share_keys_are_refused(rk: redkit.Redkit, bad: Any) -> None:
    with pytest.raises(redkit.InvalidInput, match=r"session store name.*letters, digits and _ . -"):
        rk.sessions(name=bad)


# -- user and project IDs: str or int -----------------------------------------------------------


@pytest.mark.cluster
async def test_an_int_user_id_is_accepted_and_reads_back_as_its_decimal_text(
    rk: redkit.Redkit,
) -> None:
    store = rk.sessions()
    created = await store.create(42, {"n": 1})
    assert created.user_id == "42"
    read = await store.get(created.id)
    assert read is not None
    assert read.user_id == "42"
    # 42 and "42" are one user.
    assert [s.id_prefix for s in await store.list(42)] == [created.id_prefix]
    assert [s.user_id for s in await store.list("42")] == ["42"]
    await store.create("42")
    assert await store.revoke_all(42) == 2
    assert await store.list("42") == []


@pytest.mark.cluster
async def test_int_user_and_project_ids_work_for_permissions(rk: redkit.Redkit) -> None:
    store = rk.sessions()
    await store.permissions(7, 1001).set({"deploy": True})
    assert await store.permissions("7", "1001").get() == {"deploy": True}
    assert await store.invalidate_permissions(7) is True
    assert await store.permissions(7, 1001).get() is None


@pytest.mark.parametrize("bad", [True, False, 1.5, None, b"alice", ["a"], ""])
async def test_user_ids_that_are_not_a_string_or_an_int_are_refused(
    rk: redkit.Redkit, bad: Any
) -> None:
    store = rk.sessions()
    with pytest.raises(
        redkit.InvalidInput, match=r"user_id must be a (non-empty )?string or an int"
    ):
        await store.create(bad)
    with pytest.raises(redkit.InvalidInput, match="user_id"):
        await store.revoke_all(bad)
    with pytest.raises(redkit.InvalidInput, match="user_id"):
        await store.list(bad)
    with pytest.raises(redkit.InvalidInput, match="user_id"):
        store.permissions(bad, "p1")


@pytest.mark.parametrize("bad", [True, 2.0, None, ""])
def test_project_ids_that_are_not_a_string_or_an_int_are_refused(
    rk: redkit.Redkit, bad: Any
) -> None:
    with pytest.raises(redkit.InvalidInput, match=r"project_id must be a (non-empty )?string or"):
        rk.sessions().permissions("alice", bad)


async def test_an_int_user_id_of_too_many_digits_is_refused(rk: redkit.Redkit) -> None:
    with pytest.raises(redkit.InvalidInput, match=r"user_id.*512"):
        await rk.sessions().create(10**600)
    with pytest.raises(redkit.InvalidInput, match=r"user_id.*512"):
        await rk.sessions().create(10**10_000)  # beyond what str() would even convert
