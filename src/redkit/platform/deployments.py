"""Deployments: a high-priority job on the ``deployment`` queue that runs a project's steps.

``POST /api/projects/{id}/deployments`` (owners and maintainers) writes a ``queued`` row and
enqueues ``deploy`` with priority 100, 3 attempts and exponential backoff (1 s, 2 s, ...).
**One deployment of a project at a time; a second one is queued, never refused.** The job
holds ``rk.lock("deploy:<project id>")`` (auto-renewed) while it runs, so a deployment
requested while another of the same project runs is accepted (202, ``queued``) and stays
``queued`` until the first ends (success or failed), then goes building -> ... in its turn.
Its job waits for the lock at most an hour; past that it fails and retries like a failing
step. Deployments of different projects run side by side (up to the worker's concurrency).

The job runs the project's ``steps``: each is a shell command (``/bin/sh -c``), as in any CI,
so only owners and admins may set them. Each runs in a fresh temporary directory, with a clean
environment (``PATH``, ``HOME`` = that directory, ``REDKIT_PROJECT``, ``REDKIT_REF``,
``REDKIT_DEPLOYMENT``), in a process group of its own, killed after :data:`STEP_TIMEOUT`. The
output is kept (the last :data:`MAX_LOG_CHARS` characters). Status goes building -> deploying
(the last step) -> success, or back to queued while attempts remain, then failed; each change
is published on the project's channel ``project:<project id>:deployments`` as
``{deployment_id, project_id, status, attempts, log}`` (``log``: the output since the
previous event, its last :data:`MAX_EVENT_LOG` characters), which the gateway's ``/events``
and ``/ws`` deliver to the project's members and to admins only (:mod:`.events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from redkit import Job
from redkit.platform.db import (
    Database,
    Deployment,
    DeploymentStatus,
    Membership,
    Project,
    Role,
    row_id,
)
from redkit.platform.events import deployment_channel, platform_bus
from redkit.platform.projects import role_of

__all__ = ["STEP_TIMEOUT", "deploy_job", "install_deployments"]

STEP_TIMEOUT = 60.0
MAX_LOG_CHARS = 32_000
MAX_EVENT_LOG = 8_000  # of new output per event: far below the bus's 64 KiB per event
PRIORITY = 100  # above e-mail (0): a worker serving both takes deployments first


class StepFailed(Exception):
    """A step exited non-zero or ran past its timeout (the job retries)."""


async def _run_step(command: str, env: dict[str, str], cwd: str, limit: float) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own group: a timeout kills what it started, too
    )
    try:
        async with asyncio.timeout(limit):
            output, _ = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        return -1, f"(timed out after {limit:g} s)\n"
    return int(process.returncode or 0), output.decode("utf-8", "replace")


def deploy_job(rk: Any, db: Database, step_timeout: float = STEP_TIMEOUT) -> Any:
    """The ``deploy`` job function for a worker (payload ``{deployment_id}``)."""
    bus = platform_bus(rk)

    async def record(deployment_id: str, project_id: str, lines: str = "", **changes: Any) -> None:
        async with db.transaction() as tx:
            row = await tx.get(Deployment, deployment_id)
            if row is None:
                return
            for name, value in changes.items():
                setattr(row, name, value)
            attempts = row.attempts  # every event says which attempt it belongs to
        if "status" in changes:
            status = changes["status"]
            await bus.publish(
                deployment_channel(project_id),
                {
                    "deployment_id": deployment_id,
                    "project_id": project_id,
                    "status": str(status.value if hasattr(status, "value") else status),
                    "attempts": attempts,
                    # The output since the previous event (the whole log: GET the deployment).
                    "log": lines[-MAX_EVENT_LOG:],
                },
            )

    async def deploy(payload: dict[str, Any], job: Job) -> dict[str, Any]:
        deployment_id = str(payload["deployment_id"])
        async with db.reading() as session:
            deployment = await session.get(Deployment, deployment_id)
            project = await session.get(Project, deployment.project_id) if deployment else None
        if deployment is None or project is None:
            return {"skipped": "the deployment or its project is gone"}
        steps = list(project.steps or [])
        log = deployment.log
        async with rk.lock(f"deploy:{project.id}", ttl=60, timeout=3600):
            fresh = f"--- attempt {job.attempts} ---\n"
            log += fresh
            await record(
                deployment_id,
                project.id,
                fresh,
                status=DeploymentStatus.building,
                attempts=job.attempts,
            )
            fresh = ""
            with tempfile.TemporaryDirectory(prefix="redkit-deploy-") as workdir:
                env = {
                    "PATH": "/usr/local/bin:/usr/bin:/bin",
                    "HOME": workdir,
                    "LANG": "C.UTF-8",
                    "REDKIT_PROJECT": project.name,
                    "REDKIT_REF": deployment.ref,
                    "REDKIT_DEPLOYMENT": deployment_id,
                }
                for n, step in enumerate(steps, 1):
                    if n == len(steps) and n > 1:
                        await record(
                            deployment_id, project.id, fresh, status=DeploymentStatus.deploying
                        )
                        fresh = ""
                    code, output = await _run_step(step, env, workdir, step_timeout)
                    fresh = (fresh + f"$ {step}\n{output}")[-MAX_EVENT_LOG:]
                    log = (log + f"$ {step}\n{output}")[-MAX_LOG_CHARS:]
                    if code != 0:
                        last = job.attempts >= job.max_attempts
                        await record(
                            deployment_id,
                            project.id,
                            fresh + f"(exit {code})\n",
                            status=DeploymentStatus.failed if last else DeploymentStatus.queued,
                            log=(log + f"(exit {code})\n")[-MAX_LOG_CHARS:],
                        )
                        raise StepFailed(f"step {n} exited with {code}")
            await record(deployment_id, project.id, fresh, status=DeploymentStatus.success, log=log)
        return {"deployment_id": deployment_id, "status": "success"}

    return deploy


class DeploymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: str = Field(default="main", min_length=1, max_length=200, pattern=r"^[\w./-]+$")


def deployment_json(row: Deployment) -> dict[str, Any]:
    return {
        "id": row.id,
        "project_id": row.project_id,
        "ref": row.ref,
        "status": row.status.value,
        "job_id": row.job_id,
        "attempts": row.attempts,
        "log": row.log,
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }


def install_deployments(app: FastAPI, caller: Any) -> None:
    router = APIRouter()

    @router.post("/api/projects/{project_id}/deployments", status_code=202)
    async def start(
        project_id: str, request: Request, body: DeploymentIn | None = None
    ) -> dict[str, Any]:
        who = caller(request)
        st = request.app.state.platform
        body = body or DeploymentIn()
        async with st.db.transaction() as tx:
            project = await tx.get(Project, row_id(project_id))
            member = await tx.get(Membership, (project.id, who.user_id)) if project else None
            if project is None or (member is None and who.type != "admin"):
                raise HTTPException(404, detail="no such project")
            if who.type != "admin" and member is not None and member.role is Role.viewer:
                raise HTTPException(403, detail="viewers do not deploy")
            row = Deployment(project_id=project.id, ref=body.ref, created_by=who.user_id)
            tx.add(row)
            await tx.flush()
        job = await st.rk.queue("deployment").enqueue(
            "deploy", {"deployment_id": row.id}, priority=PRIORITY, max_attempts=3, backoff=1
        )
        async with st.db.transaction() as tx:
            stored = await tx.get(Deployment, row.id)
            if stored is not None:
                stored.job_id = job.id
        return {"id": row.id, "job_id": job.id, "status": row.status.value}

    @router.get("/api/deployments/{deployment_id}")
    async def show(deployment_id: str, request: Request) -> dict[str, Any]:
        who = caller(request)
        st = request.app.state.platform
        async with st.db.reading() as session:
            row = await session.get(Deployment, row_id(deployment_id))
        if row is None:
            raise HTTPException(404, detail="no such deployment")
        # A read: the role comes from the permission cache (a write above reads the table).
        if who.type != "admin" and await role_of(st, who.user_id, row.project_id) is None:
            raise HTTPException(404, detail="no such deployment")
        return deployment_json(row)

    app.include_router(router)
