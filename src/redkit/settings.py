"""Settings read from the environment (and a ``.env`` file), with explicit arguments winning.

=====================  ==================================  =====================
variable               meaning                             default
=====================  ==================================  =====================
``REDIS_URL``          server to use; unset: embedded      (embedded Valkey)
``REDKIT_NAMESPACE``   key prefix of this application      ``rk``
``REDKIT_DATA_DIR``    embedded server's data directory    ``./.redkit/data``
``REDKIT_CONNECT_TIMEOUT``  seconds to open a connection   ``2.0``
``REDKIT_COMMAND_TIMEOUT``  seconds to wait for a reply    ``2.0``
``REDKIT_MAX_CONNECTIONS``  pool size (callers queue)      ``64``
``REDKIT_POOL_TIMEOUT``     seconds to wait for a pooled   ``10.0``
                            connection
``REDKIT_AUTO_PIPELINE``    concurrent script calls share  ``true``
                            round trips
``REDKIT_SPIN_WAIT``        seconds a call keeps the event ``0.0001``
                            loop turning for its reply
                            before it sleeps (0: off)
``REDKIT_TRACING``          OpenTelemetry spans (needs     ``false``
                            ``redkit[otel]``)
=====================  ==================================  =====================
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from redkit.keys import validate_namespace

__all__ = ["Settings"]


class Settings(BaseSettings):
    """redkit's configuration; every field has an environment variable (see module docs)."""

    model_config = SettingsConfigDict(
        env_prefix="REDKIT_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "REDKIT_REDIS_URL")
    )
    namespace: str = "rk"
    data_dir: Path = Path(".redkit/data")
    connect_timeout: float = Field(default=2.0, gt=0)
    command_timeout: float = Field(default=2.0, gt=0)
    max_connections: int = Field(default=64, ge=1)
    pool_timeout: float = Field(default=10.0, gt=0)
    auto_pipeline: bool = True
    spin_wait: float = Field(default=0.0001, ge=0, le=0.01)
    tracing: bool = False

    @field_validator("redis_url")
    @classmethod
    def _empty_url_means_none(cls, value: str | None) -> str | None:
        # `REDIS_URL=` in a shell or .env file means "no server given", not "connect to ''".
        return value or None

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        return validate_namespace(value)
