"""``redkit sessions list USER``, ``revoke USER PREFIX`` and ``revoke-all USER``."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

import redkit
from redkit.cli.sessions import app
from redkit.sessions import Session

runner = CliRunner()


def _create(
    url: str, namespace: str, user: str, n: int, store_name: str = "default"
) -> list[Session]:
    async def create() -> list[Session]:
        async with redkit.connect(url, namespace) as rk:
            store = rk.sessions(name=store_name)
            return [
                await store.create(user, {}, ip=f"10.0.0.{i}", user_agent="Firefox")
                for i in range(n)
            ]

    return asyncio.run(create())


@pytest.mark.cluster
def test_list_and_revoke_all_as_json(redis_url: str, namespace: str) -> None:
    made = _create(redis_url, namespace, "alice", 2)
    listed = runner.invoke(app, ["list", "alice", "--url", redis_url, "-n", namespace, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert sorted(r["id_prefix"] for r in rows) == sorted(s.id_prefix for s in made)
    assert {r["ip"] for r in rows} == {"10.0.0.0", "10.0.0.1"}
    assert all(s.id not in listed.stdout for s in made)

    ended = runner.invoke(
        app, ["revoke-all", "alice", "--url", redis_url, "-n", namespace, "--json"]
    )
    assert ended.exit_code == 0, ended.output
    assert json.loads(ended.stdout) == {"user": "alice", "store": "default", "revoked": 2}
    again = runner.invoke(app, ["list", "alice", "--url", redis_url, "-n", namespace, "--json"])
    assert json.loads(again.stdout) == []


def test_the_tables_are_readable(redis_url: str, namespace: str) -> None:
    made = _create(redis_url, namespace, "bob", 1)
    listed = runner.invoke(app, ["list", "bob", "--url", redis_url, "-n", namespace])
    assert listed.exit_code == 0, listed.output
    for text in ("sessions of bob: 1", made[0].id_prefix, "10.0.0.0", "Firefox", "expires"):
        assert text in listed.stdout
    ended = runner.invoke(app, ["revoke-all", "bob", "--url", redis_url, "-n", namespace])
    assert ended.exit_code == 0
    assert "revoked 1 session of bob" in ended.stdout


def test_an_empty_user_or_a_dead_server_is_one_clear_line(redis_url: str) -> None:
    empty = runner.invoke(app, ["revoke-all", "", "--url", redis_url])
    assert empty.exit_code == 1
    assert "user_id" in empty.output
    dead = runner.invoke(app, ["list", "alice", "--url", "redis://127.0.0.1:1"])
    assert dead.exit_code == 1
    assert "error:" in dead.output
    assert "Traceback" not in dead.output


def test_store_picks_a_named_session_store_and_leaves_the_others_alone(
    redis_url: str, namespace: str
) -> None:
    admin = _create(redis_url, namespace, "carol", 2, store_name="admin")
    default = _create(redis_url, namespace, "carol", 1)
    base = ["--url", redis_url, "-n", namespace, "--json"]

    def listed(*store: str) -> set[str]:
        result = runner.invoke(app, ["list", "carol", *base, *store])
        assert result.exit_code == 0, result.output
        return {row["id_prefix"] for row in json.loads(result.stdout)}

    assert listed("--store", "admin") == {s.id_prefix for s in admin}
    assert listed() == {s.id_prefix for s in default}
    table = runner.invoke(
        app, ["list", "carol", "--url", redis_url, "-n", namespace, "-s", "admin"]
    )
    assert "sessions of carol in store 'admin': 2" in table.stdout

    ended = runner.invoke(app, ["revoke-all", "carol", *base, "--store", "admin"])
    assert json.loads(ended.stdout) == {"user": "carol", "store": "admin", "revoked": 2}
    assert listed("--store", "admin") == set()
    assert listed() == {s.id_prefix for s in default}  # the default store kept its session


def test_a_bad_store_name_is_one_clear_line(redis_url: str) -> None:
    result = runner.invoke(app, ["list", "carol", "--url", redis_url, "--store", "a b:{"])
    assert result.exit_code == 1
    assert "session store name" in result.output
    assert "Traceback" not in result.output


@pytest.mark.cluster
def test_revoke_ends_the_one_session_its_prefix_names(redis_url: str, namespace: str) -> None:
    first, second = _create(redis_url, namespace, "dora", 2)
    base = ["--url", redis_url, "-n", namespace]
    # After "--": a prefix may start with "-" (1 in 64), which would read as an option.
    ended = runner.invoke(app, ["revoke", *base, "--json", "--", "dora", first.id_prefix])
    assert ended.exit_code == 0, ended.output
    body = json.loads(ended.stdout)
    assert (body["store"], body["revoked"]["id_prefix"]) == ("default", first.id_prefix)
    listed = runner.invoke(app, ["list", "dora", *base, "--json"])
    assert [r["id_prefix"] for r in json.loads(listed.stdout)] == [second.id_prefix]
    shown = runner.invoke(app, ["revoke", *base, "--", "dora", second.id[:6]])
    assert shown.exit_code == 0, shown.output
    assert f"revoked session {second.id_prefix}" in shown.stdout
    for prefix in (first.id_prefix, "ab", "a*cd"):
        refused = runner.invoke(app, ["revoke", *base, "--", "dora", prefix])
        assert refused.exit_code == 1, (prefix, refused.output)
        assert "Traceback" not in refused.output
