"""Fixtures of the session tests."""

from __future__ import annotations

import pytest

import redkit
from sessions.counting import CommandCounter


@pytest.fixture
def commands(rk: redkit.Redkit) -> CommandCounter:
    return CommandCounter(rk)
