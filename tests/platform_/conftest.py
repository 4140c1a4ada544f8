"""Fixtures of the platform tests: one embedded PostgreSQL for the whole session.

(The directory is ``platform_``, not ``platform``: a test package named ``platform`` would
shadow the standard library's ``platform`` module, which half the dependencies import.)

With ``DATABASE_URL`` in the environment (a superuser URL), the tests use that server instead
and start none.
"""

from __future__ import annotations

import gc
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from platform_.harness import base, http, up  # noqa: F401  (fixtures of every platform test)
from redkit.platform.db import Database
from redkit.platform.postgres import EmbeddedPostgres, ensure_database

EXTERNAL_DATABASE_URL = os.environ.get("DATABASE_URL") or None

# The platform's imports (SQLAlchemy, asyncpg, FastAPI, ...) add some hundred thousand objects
# that live as long as the test process; every full collection of the garbage collector walks
# them again, a pause of milliseconds that lands in whatever test runs then. Moved to the
# permanent generation, they are not walked (the platform tests ran ~2x faster).
gc.collect()
gc.freeze()


@pytest.fixture(scope="session")
def postgres_dir() -> Iterator[Path]:
    # Not tmp_path_factory: its directories are 0700, and as root the server runs as an
    # unprivileged user that must enter this one.
    path = Path(tempfile.mkdtemp(prefix="redkit-pg-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_postgres(postgres_dir: Path) -> Iterator[EmbeddedPostgres]:
    if EXTERNAL_DATABASE_URL:
        pytest.skip("DATABASE_URL is set: the tests use that server and start none")
    server = EmbeddedPostgres(postgres_dir / "postgres").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> str:
    """A superuser URL of the server the platform tests run on."""
    if EXTERNAL_DATABASE_URL:
        return EXTERNAL_DATABASE_URL
    server: EmbeddedPostgres = request.getfixturevalue("embedded_postgres")
    return server.url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The platform's tables in a database of this test's own."""
    url = await ensure_database(database_url, "t_" + secrets.token_hex(6))
    database = Database(url)
    await database.create_all()
    yield database
    await database.close()
