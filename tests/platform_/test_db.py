"""The platform's tables: created at start, every write one transaction."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from redkit.platform.db import Database, Membership, Project, Role, User, UserType


def _user(email: str) -> User:
    return User(email=email, name="Ada", password_hash="x")


async def test_create_all_runs_at_every_start_and_concurrently(db: Database) -> None:
    others = [Database(db.url) for _ in range(3)]
    try:
        await asyncio.gather(*(other.create_all() for other in others))
    finally:
        await asyncio.gather(*(other.close() for other in others))


async def test_a_write_that_fails_half_way_writes_nothing(db: Database) -> None:
    async with db.transaction() as tx:
        tx.add(_user("first@example.com"))

    async def second_write() -> None:
        async with db.transaction() as tx:
            tx.add(_user("second@example.com"))
            await tx.flush()
            tx.add(_user("first@example.com"))  # duplicate e-mail: the whole block rolls back

    with pytest.raises(IntegrityError):
        await second_write()
    async with db.reading() as session:
        emails = (await session.scalars(select(User.email))).all()
    assert emails == ["first@example.com"]


async def test_deleting_a_project_removes_its_memberships(db: Database) -> None:
    async with db.transaction() as tx:
        user = _user("owner@example.com")
        project = Project(
            name="p1", namespace="p_p1", database="p_p1", db_role="p_p1", redis_user="p_p1"
        )
        tx.add_all([user, project])
        await tx.flush()
        tx.add(Membership(project_id=project.id, user_id=user.id, role=Role.owner))
    async with db.transaction() as tx:
        await tx.delete(await tx.get(Project, project.id))
    async with db.reading() as session:
        assert await session.scalar(select(func.count()).select_from(Membership)) == 0
        stored = await session.get(User, user.id)
        assert stored is not None
        assert stored.type is UserType.user
