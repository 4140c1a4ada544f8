"""The projects service: create (own database, role and ACL user), list, get, delete.

Callers are known by the gateway's signed identity header only (:mod:`.identity`): a request
without a valid one is anonymous, whatever it claims. A create runs
:meth:`Provisioner.create <redkit.platform.provision.Provisioner.create>` under
``rk.lock("project-db:<name>")`` and writes the project's row and its owner's membership in
the same locked step, so a failure anywhere undoes all of it. The 201 body is the only place
the passwords appear; later reads show the URLs without them.

A caller's role in a project is read through the session store's permission cache
(``store.permissions(user, project)``, 1 hour, :func:`role_of`), and dropped whenever the
membership changes (member added, removed, role changed, project deleted); logout-all drops
all of a user's (``revoke_all`` does). Each write also invalidates the gateway's cached pages
it makes stale (:mod:`.caching`), after it has committed.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from redkit.errors import InvalidInput
from redkit.platform.caching import ADMIN_LISTS, invalidate, projects_tag
from redkit.platform.db import Membership, Project, Role, StoredText, User, row_id
from redkit.platform.events import PROJECT_CREATED, platform_bus
from redkit.platform.identity import HEADER, Identity, verify_identity
from redkit.platform.provision import (
    ProjectBusy,
    ProjectCredentials,
    ProjectExists,
    ProjectNotFound,
    ProvisioningError,
    project_identifiers,
)

__all__ = ["DEFAULT_STEPS", "install_projects", "role_of"]

DEFAULT_STEPS = ["echo building", "echo deploying"]
MAX_STEPS = 20


def caller(request: Request) -> Identity:
    """The signed identity the gateway sent; 401 without a signed-in user."""
    identity = verify_identity(
        request.headers.get(HEADER), request.app.state.platform.config.secret
    )
    if identity is None or identity.anonymous:
        raise HTTPException(401, detail="sign in first: no live session")
    return identity


Caller = Annotated[Identity, Depends(caller)]


class ProjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: StoredText = Field(max_length=40)
    steps: list[Annotated[StoredText, Field(min_length=1, max_length=1000)]] | None = Field(
        default=None, max_length=MAX_STEPS
    )


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: StoredText = Field(max_length=254)
    role: Role


async def _member_role(st: Any, user_id: str, project_id: str) -> Role | None:
    # A session of its own each time: a second read in one session would be answered from
    # its identity map, not from the database.
    async with st.db.reading() as session:
        member = await session.get(Membership, (project_id, user_id))
        return member.role if member is not None else None


async def role_of(st: Any, user_id: str, project_id: str) -> Role | None:
    """``user_id``'s role in ``project_id`` (None: not a member), through the permission
    cache: one Valkey round trip while it is cached (``permission_ttl``, 1 hour).

    A miss reads the database, stores the answer, then reads the database once more: a
    membership change that committed while the answer was on its way, and whose
    invalidation ran before it was stored, is then seen and the entry dropped. So a removed
    member never keeps a cached role (the write's invalidation runs after its commit: either
    it drops what was stored, or the second read sees the commit).
    """
    permissions = st.session_store.permissions(user_id, project_id)
    cached = await permissions.get()
    if isinstance(cached, dict) and "role" in cached:
        return Role(cached["role"]) if cached["role"] else None
    role = await _member_role(st, user_id, project_id)
    # Non-members are cached too ({"role": null}): probing a project costs no query either.
    await permissions.set({"role": role.value if role is not None else None})
    again = await _member_role(st, user_id, project_id)
    if again is not role:
        await permissions.invalidate()
    return again


async def forget_roles(st: Any, project_id: str, user_ids: list[str]) -> None:
    """Drop the cached roles of ``user_ids`` in ``project_id`` (after the change committed)."""
    for user_id in user_ids:
        await st.session_store.permissions(user_id, project_id).invalidate()


def project_json(project: Project, public: dict[str, str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": project.id,
        "name": project.name,
        "namespace": project.namespace,
        "database": project.database,
        "steps": list(project.steps or []),
        "created_by": project.created_by,
        "created_at": project.created_at.isoformat() if project.created_at else None,
    }
    if public:
        body["database_url"] = public["database_url"]
        body["redis_url"] = public["redis_url"]
    return body


def install_projects(app: FastAPI) -> None:
    router = APIRouter()

    def state(request: Request) -> Any:
        return request.app.state.platform

    @router.post("/api/projects", status_code=201)
    async def create(body: ProjectIn, request: Request, who: Caller) -> dict[str, Any]:
        st = state(request)
        try:
            project_identifiers(body.name)
        except InvalidInput as exc:
            raise HTTPException(422, detail=str(exc)) from None
        steps = list(body.steps) if body.steps is not None else list(DEFAULT_STEPS)
        row: dict[str, Project] = {}

        async def write_row(creds: ProjectCredentials) -> None:
            async with st.db.transaction() as tx:
                project = Project(
                    name=creds.name,
                    namespace=creds.namespace,
                    database=creds.database,
                    db_role=creds.db_role,
                    redis_user=creds.redis_user,
                    redis_password_sha256=creds.redis_password_sha256,
                    steps=steps,
                    created_by=who.user_id,
                )
                tx.add(project)
                await tx.flush()
                tx.add(Membership(project_id=project.id, user_id=who.user_id, role=Role.owner))
                row["project"] = project

        try:
            creds = await st.provisioner.create(body.name, then=write_row)
        except (ProjectExists, ProjectBusy, IntegrityError) as exc:
            raise HTTPException(409, detail=f"project {body.name!r} exists or is busy") from exc
        except ProvisioningError as exc:
            raise HTTPException(503, detail="the project could not be created; retry") from exc
        project = row["project"]
        # The creator's lists and every admin's (admins list every project) are stale.
        await invalidate(st.rk, projects_tag(str(who.user_id)), ADMIN_LISTS)
        await platform_bus(st.rk).publish(
            PROJECT_CREATED,
            {"id": project.id, "name": project.name, "by": who.user_id},
        )
        return {
            **project_json(project),
            # Shown once: only this answer carries the passwords.
            "database_url": creds.database_url,
            "redis_url": creds.redis_url,
        }

    async def visible(request: Request, who: Identity, project_id: str) -> Project:
        st = state(request)
        async with st.db.reading() as session:
            project: Project | None = await session.get(Project, row_id(project_id))
            if project is None:
                raise HTTPException(404, detail="no such project")
        if who.type != "admin" and await role_of(st, str(who.user_id), project.id) is None:
            raise HTTPException(404, detail="no such project")  # not even its name
        return project

    @router.get("/api/projects")
    async def list_projects(request: Request, who: Caller) -> dict[str, Any]:
        st = state(request)
        query = select(Project).order_by(Project.created_at)
        if who.type != "admin":
            query = query.join(Membership).where(Membership.user_id == who.user_id)
        async with st.db.reading() as session:
            projects = (await session.scalars(query)).all()
        return {"projects": [project_json(p, _public(st, p)) for p in projects]}

    @router.get("/api/projects/{project_id}")
    async def get_project(project_id: str, request: Request, who: Caller) -> dict[str, Any]:
        project = await visible(request, who, project_id)
        return project_json(project, _public(state(request), project))

    @router.delete("/api/projects/{project_id}", status_code=204)
    async def delete_project(project_id: str, request: Request, who: Caller) -> Response:
        st = state(request)
        project = await visible(request, who, project_id)
        if who.type != "admin":
            # A destructive write reads the table, not the role cache: an owner demoted a
            # moment ago (its cached role not yet dropped) deletes nothing.
            async with st.db.reading() as session:
                member = await session.get(Membership, (project.id, str(who.user_id)))
            if member is None or member.role != Role.owner:
                raise HTTPException(403, detail="only the project's owners delete it")
        members: list[str] = []

        async def drop_row() -> None:
            async with st.db.transaction() as tx:
                stored = await tx.get(Project, project.id)
                if stored is not None:
                    # Read in the deleting transaction: exactly the members it removes.
                    members.extend(
                        await tx.scalars(
                            select(Membership.user_id).where(Membership.project_id == project.id)
                        )
                    )
                    await tx.delete(stored)

        try:
            await st.provisioner.delete(project.name, then=drop_row)
        except ProjectNotFound:
            await drop_row()  # resources already gone: the row follows
        except ProjectBusy as exc:
            raise HTTPException(409, detail="the project is busy; retry") from exc
        await forget_roles(st, project.id, members)
        await invalidate(st.rk, *(projects_tag(m) for m in members), ADMIN_LISTS)
        return Response(status_code=204)

    @router.get("/api/projects/{project_id}/members")
    async def members(project_id: str, request: Request, who: Caller) -> dict[str, Any]:
        project = await visible(request, who, project_id)
        async with state(request).db.reading() as session:
            rows = (
                await session.execute(
                    select(Membership, User)
                    .join(User, User.id == Membership.user_id)
                    .where(Membership.project_id == project.id)
                    .order_by(Membership.created_at)
                )
            ).all()
        return {
            "members": [
                {"user_id": u.id, "email": u.email, "name": u.name, "role": m.role.value}
                for m, u in rows
            ]
        }

    @router.post("/api/projects/{project_id}/members", status_code=201)
    async def add_member(
        project_id: str, body: MemberIn, request: Request, who: Caller
    ) -> dict[str, Any]:
        st = state(request)
        project = await visible(request, who, project_id)
        email = body.email.strip().lower()
        async with st.db.transaction() as tx:
            # The project's row, locked, as remove_member does: a role change and a removal
            # cannot both pass the last-owner check.
            if await tx.get(Project, project.id, with_for_update=True) is None:
                raise HTTPException(404, detail="no such project")
            mine = None
            if who.type != "admin":
                mine = await tx.get(Membership, (project.id, who.user_id))
                if mine is None or mine.role not in (Role.owner, Role.maintainer):
                    raise HTTPException(403, detail="owners and maintainers add members")
                if body.role is Role.owner and mine.role is not Role.owner:
                    raise HTTPException(403, detail="only owners make owners")
            user = await tx.scalar(select(User).where(User.email == email))
            if user is None:
                raise HTTPException(404, detail="no user with that e-mail")
            member = await tx.get(Membership, (project.id, user.id))
            joined = member is None
            if member is None:
                tx.add(Membership(project_id=project.id, user_id=user.id, role=body.role))
            else:
                # The same rules as a removal: maintainers change viewers only (never demote
                # an owner or another maintainer), and the last owner stays an owner.
                if (
                    mine is not None
                    and mine.role is not Role.owner
                    and member.role is not Role.viewer
                ):
                    raise HTTPException(403, detail="maintainers change viewers' roles only")
                if member.role is Role.owner and body.role is not Role.owner:
                    owners = await tx.scalars(
                        select(Membership.user_id).where(
                            Membership.project_id == project.id, Membership.role == Role.owner
                        )
                    )
                    if len(owners.all()) <= 1:
                        raise HTTPException(409, detail="a project keeps at least one owner")
                member.role = body.role
        await forget_roles(st, project.id, [user.id])
        if joined:  # a role change shows on no cached page; a new member's list changes
            await invalidate(st.rk, projects_tag(user.id))
        return {"user_id": user.id, "email": user.email, "role": body.role.value}

    @router.delete("/api/projects/{project_id}/members/{user_id}", status_code=204)
    async def remove_member(
        project_id: str, user_id: str, request: Request, who: Caller
    ) -> Response:
        """Owners remove anyone, maintainers remove viewers, anyone removes themselves; the
        last owner stays (a project always has one)."""
        st = state(request)
        project = await visible(request, who, project_id)
        async with st.db.transaction() as tx:
            # The project's row, locked: its membership changes one at a time, so two owners
            # removing each other cannot both pass the last-owner check.
            if await tx.get(Project, project.id, with_for_update=True) is None:
                raise HTTPException(404, detail="no such project")
            member = await tx.get(Membership, (project.id, row_id(user_id)))
            if member is None:
                raise HTTPException(404, detail="no such member")
            if who.type != "admin" and member.user_id != who.user_id:
                mine = await tx.get(Membership, (project.id, who.user_id))
                allowed = mine is not None and (
                    mine.role is Role.owner
                    or (mine.role is Role.maintainer and member.role is Role.viewer)
                )
                if not allowed:
                    raise HTTPException(403, detail="owners remove members; maintainers, viewers")
            if member.role is Role.owner:
                owners = await tx.scalars(
                    select(Membership.user_id).where(
                        Membership.project_id == project.id, Membership.role == Role.owner
                    )
                )
                if len(owners.all()) <= 1:
                    raise HTTPException(409, detail="a project keeps at least one owner")
            removed = member.user_id
            await tx.delete(member)
        # Committed: the removed member loses access now, not when the cached role expires.
        await forget_roles(st, project.id, [removed])
        await invalidate(st.rk, projects_tag(removed))
        return Response(status_code=204)

    app.include_router(router)


def _public(st: Any, project: Project) -> dict[str, str]:
    """The project's URLs without passwords."""
    db = urlsplit(st.provisioner.database_url)
    redis = urlsplit(st.provisioner.redis_url)
    db_host = db.netloc.rpartition("@")[2]
    redis_host = redis.netloc.rpartition("@")[2]
    return {
        "database_url": f"{db.scheme}://{project.db_role}@{db_host}/{project.database}",
        "redis_url": f"{redis.scheme}://{project.redis_user}@{redis_host}",
    }
