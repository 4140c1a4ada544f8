"""The projects service: create (own database, role and ACL user), list, get, delete.

Callers are known by the gateway's signed identity header only (:mod:`.identity`): a request
without a valid one is anonymous, whatever it claims. A create runs
:meth:`Provisioner.create <redkit.platform.provision.Provisioner.create>` under
``rk.lock("project-db:<name>")`` and writes the project's row and its owner's membership in
the same locked step, so a failure anywhere undoes all of it. The 201 body is the only place
the passwords appear; later reads show the URLs without them.

Not here yet (see the issue): deployments, ``GET /api/users/{id}``, permissions
through ``store.permissions``, the gateway's cache of ``GET /api/projects``.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from redkit.errors import InvalidInput
from redkit.platform.db import Membership, Project, Role, User
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

__all__ = ["DEFAULT_STEPS", "install_projects"]

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
    name: str = Field(max_length=40)
    steps: list[Annotated[str, Field(min_length=1, max_length=1000)]] | None = Field(
        default=None, max_length=MAX_STEPS
    )


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=254)
    role: Role


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
            project: Project | None = await session.get(Project, project_id[:32])
            if project is None:
                raise HTTPException(404, detail="no such project")
            if who.type != "admin":
                member = await session.get(Membership, (project.id, who.user_id))
                if member is None:
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
            async with st.db.reading() as session:
                member = await session.get(Membership, (project.id, who.user_id))
            if member is None or member.role is not Role.owner:
                raise HTTPException(403, detail="only the project's owners delete it")

        async def drop_row() -> None:
            async with st.db.transaction() as tx:
                stored = await tx.get(Project, project.id)
                if stored is not None:
                    await tx.delete(stored)

        try:
            await st.provisioner.delete(project.name, then=drop_row)
        except ProjectNotFound:
            await drop_row()  # resources already gone: the row follows
        except ProjectBusy as exc:
            raise HTTPException(409, detail="the project is busy; retry") from exc
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
            if member is None:
                tx.add(Membership(project_id=project.id, user_id=user.id, role=body.role))
            else:
                member.role = body.role
        return {"user_id": user.id, "email": user.email, "role": body.role.value}

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
