"""What every platform process needs to know, passed from ``redkit up`` through the environment.

The same names serve ``redkit up --role NAME`` on another machine: set them by hand there.

==========================  ===================================================================
``REDIS_URL``               the platform's Valkey/Redis (an admin user: it creates ACL users)
``DATABASE_URL``            the platform's PostgreSQL database (a role with CREATEDB/CREATEROLE)
``REDKIT_SMTP_URL``         where e-mail goes (``smtp://host:port``; the sink under ``up``)
``REDKIT_PLATFORM_SECRET``  the secret the gateway signs identities with (same on every process)
``REDKIT_NAMESPACE``        the platform's key prefix (default ``platform``)
``REDKIT_AUTH_URL``         the auth service (the gateway proxies and health-checks it)
``REDKIT_PROJECTS_URL``     the projects service
``REDKIT_WORKER_URLS``      the workers' health endpoints, comma-separated
``REDKIT_PROJECT_REDIS_URL``  the Valkey URL given to projects (host and port, no credentials)
``REDKIT_SECURE_COOKIES``   ``1``: session cookies marked Secure (HTTPS in front of the gateway)
``REDKIT_METRICS_TOKEN``    a bearer token that may read the gateway's ``/metrics`` (a scraper's;
                            admins' sessions may always); unset: admins only
``REDKIT_ALLOWED_HOSTS``    the host names the gateway answers, comma-separated
                            (``platform.example.com,*.example.com``; ``*``: any); others get a
                            400. ``redkit up`` on loopback: this machine's names; on another
                            address it must be set
==========================  ===================================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from redkit.errors import ConfigurationError, InvalidInput
from redkit.hosts import AllowedHosts

__all__ = ["PlatformConfig"]


@dataclass(frozen=True)
class PlatformConfig:
    redis_url: str
    database_url: str
    secret: str
    smtp_url: str | None = None
    namespace: str = "platform"
    auth_url: str | None = None
    projects_url: str | None = None
    worker_urls: tuple[str, ...] = field(default_factory=tuple)
    project_redis_url: str | None = None
    # Secure cookies need HTTPS, except on loopback where browsers allow them over HTTP but
    # curl may not: off for a loopback gateway, on for any other (REDKIT_SECURE_COOKIES).
    secure_cookies: bool = False
    # The scraper's bearer token for the gateway's /metrics (None: admins' sessions only).
    metrics_token: str | None = None
    # The Host names the gateway answers (None: any, which must be asked for with "*"):
    # a made-up Host (DNS rebinding, cache filling) gets a 400 before anything runs.
    allowed_hosts: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        # Never the secret or the passwords in the URLs.
        return f"<PlatformConfig namespace={self.namespace!r} redis={_host(self.redis_url)}>"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PlatformConfig:
        env = os.environ if env is None else env
        missing = [
            n for n in ("REDIS_URL", "DATABASE_URL", "REDKIT_PLATFORM_SECRET") if not env.get(n)
        ]
        if missing:
            raise ConfigurationError(
                f"the platform needs {', '.join(missing)} in the environment "
                "(`redkit up` sets them for the processes it starts)"
            )
        secret = env["REDKIT_PLATFORM_SECRET"]
        if len(secret) < 32:
            raise ConfigurationError("REDKIT_PLATFORM_SECRET must be at least 32 characters")
        metrics_token = env.get("REDKIT_METRICS_TOKEN") or None
        if metrics_token is not None and len(metrics_token.strip()) < 24:
            raise ConfigurationError(
                "REDKIT_METRICS_TOKEN must be at least 24 characters (it guards /metrics on the "
                "public port): e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`"
            )
        workers = tuple(u for u in env.get("REDKIT_WORKER_URLS", "").split(",") if u)
        allowed_hosts = parse_allowed_hosts(env.get("REDKIT_ALLOWED_HOSTS", ""))
        return cls(
            redis_url=env["REDIS_URL"],
            database_url=env["DATABASE_URL"],
            secret=secret,
            smtp_url=env.get("REDKIT_SMTP_URL") or None,
            namespace=env.get("REDKIT_NAMESPACE") or "platform",
            auth_url=env.get("REDKIT_AUTH_URL") or None,
            projects_url=env.get("REDKIT_PROJECTS_URL") or None,
            worker_urls=workers,
            project_redis_url=env.get("REDKIT_PROJECT_REDIS_URL") or None,
            secure_cookies=env.get("REDKIT_SECURE_COOKIES", "") in ("1", "true", "yes"),
            metrics_token=metrics_token.strip() if metrics_token else None,
            allowed_hosts=allowed_hosts,
        )

    def to_env(self) -> dict[str, str]:
        env = {
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "REDKIT_PLATFORM_SECRET": self.secret,
            "REDKIT_NAMESPACE": self.namespace,
            "REDKIT_WORKER_URLS": ",".join(self.worker_urls),
            "REDKIT_SECURE_COOKIES": "1" if self.secure_cookies else "0",
        }
        optional = {
            "REDKIT_SMTP_URL": self.smtp_url,
            "REDKIT_AUTH_URL": self.auth_url,
            "REDKIT_PROJECTS_URL": self.projects_url,
            "REDKIT_PROJECT_REDIS_URL": self.project_redis_url,
            "REDKIT_METRICS_TOKEN": self.metrics_token,
            "REDKIT_ALLOWED_HOSTS": (
                "*" if self.allowed_hosts is None else ",".join(self.allowed_hosts)
            ),
        }
        env.update({k: v for k, v in optional.items() if v})
        return env


def parse_allowed_hosts(value: str) -> tuple[str, ...] | None:
    """``REDKIT_ALLOWED_HOSTS`` read: ``None`` for ``*`` or unset (any host), else the
    names, each checked (a :class:`ConfigurationError` that names the bad one)."""
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names or names == ("*",):
        return None
    try:
        AllowedHosts(names, what="REDKIT_ALLOWED_HOSTS")
    except InvalidInput as exc:
        raise ConfigurationError(str(exc)) from None
    return names


def _host(url: str) -> str:
    return url.rpartition("@")[2]
