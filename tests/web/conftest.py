from __future__ import annotations

import pytest

import redkit


@pytest.fixture
def rk_env(rk: redkit.Redkit, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The test's server and namespace in the environment, for apps configured by it (the
    ``rk`` fixture empties the namespace afterwards)."""
    env = {"REDIS_URL": redis_url, "REDKIT_NAMESPACE": rk.namespace}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
