"""The platform's own tables: users, projects, memberships, deployments (SQLAlchemy 2, async).

``Database(url)`` wraps one async engine (asyncpg). ``await db.create_all()`` creates the tables
at start (idempotent). Every write goes through ``async with db.transaction() as tx:``: one
transaction, committed when the block ends, rolled back when it raises, so an input that fails
half-way writes nothing.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator
from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from redkit.platform.postgres import asyncpg_url

__all__ = [
    "Base",
    "Database",
    "Deployment",
    "DeploymentStatus",
    "Membership",
    "Project",
    "Role",
    "StoredText",
    "User",
    "UserType",
    "row_id",
]


# An arbitrary constant: the advisory lock that serialises schema creation.
_SCHEMA_LOCK = 0x7265646B6974


def _new_id() -> str:
    return uuid.uuid4().hex


_ROW_ID = re.compile(r"[0-9a-f]{32}")


def row_id(value: str) -> str:
    """A row ID from a URL as the tables hold them (32 hex digits), or ``""``, which names no
    row: anything else (a NUL, which PostgreSQL text refuses outright, say) is simply not
    found, without a query that could fail."""
    return value if _ROW_ID.fullmatch(value) else ""


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text cannot hold NUL characters")
    return value


StoredText = Annotated[str, AfterValidator(_storable)]
"""A request's text that goes into PostgreSQL: refused (422) with a NUL in it, which
PostgreSQL's text types cannot hold (the query would fail: a 500)."""


class UserType(enum.StrEnum):
    """The brief's user types (``anonymous`` is the absence of a user: no row)."""

    user = "user"
    premium = "premium"
    admin = "admin"


class Role(enum.StrEnum):
    """A member's role in one project."""

    owner = "owner"
    maintainer = "maintainer"
    viewer = "viewer"


class DeploymentStatus(enum.StrEnum):
    queued = "queued"
    building = "building"
    deploying = "deploying"
    success = "success"
    failed = "failed"


class Base(DeclarativeBase):
    type_annotation_map: dict[Any, Any] = {datetime: DateTime(timezone=True)}  # noqa: RUF012


def _enum(kind: type[enum.StrEnum], name: str) -> Enum:
    # Stored by value ("user", not "UserType.user"), checked by PostgreSQL.
    return Enum(kind, name=name, values_callable=lambda k: [m.value for m in k])


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_new_id)
    # Stored lower-cased by the auth service; unique so a duplicate register is one 409.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(300))
    type: Mapped[UserType] = mapped_column(_enum(UserType, "user_type"), default=UserType.user)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_new_id)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    # The project's Valkey namespace, PostgreSQL database and role, and Valkey ACL user: all
    # derived from the validated name (see redkit.platform.provision), kept for the deletes.
    namespace: Mapped[str] = mapped_column(String(64), unique=True)
    database: Mapped[str] = mapped_column(String(63), unique=True)
    db_role: Mapped[str] = mapped_column(String(63), unique=True)
    redis_user: Mapped[str] = mapped_column(String(64), unique=True)
    # What Valkey stores of the ACL user's password (its SHA-256), to re-create the user after
    # a restart of a server without an ACL file; the password itself is shown once and dropped.
    redis_password_sha256: Mapped[str | None] = mapped_column(String(64))
    # Deployment steps (shell commands); only owners and admins may set them.
    steps: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="project", cascade="all, delete-orphan"
    )
    deployments: Mapped[list[Deployment]] = relationship(
        back_populates="project", cascade="all, delete-orphan"
    )


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("project_id", "user_id"),)

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[Role] = mapped_column(_enum(Role, "member_role"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    project: Mapped[Project] = relationship(back_populates="memberships")
    user: Mapped[User] = relationship(back_populates="memberships")


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=_new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    ref: Mapped[str] = mapped_column(String(200), default="main")
    status: Mapped[DeploymentStatus] = mapped_column(
        _enum(DeploymentStatus, "deployment_status"), default=DeploymentStatus.queued
    )
    job_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The job's output, capped by the deployment job (it keeps the last lines only).
    log: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    project: Mapped[Project] = relationship(back_populates="deployments")


class Database:
    """The platform database: one async engine, tables created by :meth:`create_all`."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(
            asyncpg_url(url), pool_size=pool_size, pool_pre_ping=True
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"<Database {self.url.rpartition('@')[2]}>"

    async def create_all(self) -> None:
        """Create the tables that do not exist yet (safe to run at every start)."""
        async with self.engine.begin() as conn:
            # Services start together; without this lock two of them race to create the same
            # enum type and one fails. The lock ends with the transaction.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            await conn.run_sync(Base.metadata.create_all)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed at the end of the block, rolled back if it raises."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session for reads (its transaction is rolled back at the end: nothing to keep)."""
        async with self.sessions() as session:
            yield session

    async def close(self) -> None:
        await self.engine.dispose()
