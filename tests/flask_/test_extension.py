"""The ``Redkit`` extension: app factories, config, one client per process."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import pytest
from flask import Flask

import redkit.sync
from redkit.errors import ConfigurationError
from redkit.flask import Redkit, current_redkit, session_store
from redkit.flask.extension import _state


def test_the_app_factory_gets_a_client_bound_to_its_namespace(app: Flask) -> None:
    with app.app_context():
        rk = current_redkit()
        assert isinstance(rk, redkit.sync.Redkit)
        assert rk.namespace == app.config["REDKIT_NAMESPACE"]
        assert current_redkit() is rk  # one client per app and process
        assert session_store().rk is rk


def test_an_app_without_the_extension_gets_a_configuration_error() -> None:
    with Flask(__name__).app_context(), pytest.raises(ConfigurationError):
        current_redkit()


def test_a_bad_setting_is_refused_at_init_app() -> None:
    app = Flask(__name__)
    app.config["REDKIT_SESSION_COOKIE_SECURE"] = "yes"
    with pytest.raises(ConfigurationError):
        Redkit(app)


def test_sessions_can_be_left_to_flask(make_app: Any) -> None:
    app = make_app(REDKIT_SESSIONS=False)
    from flask.sessions import SecureCookieSessionInterface

    assert isinstance(app.session_interface, SecureCookieSessionInterface)


def _child(app: Flask, parent_client_id: int, answers: Any) -> None:
    client = app.test_client()
    client.post("/set", json={"from": "child"})
    with app.app_context():
        state = _state(app)
        answers.put(
            (
                state._pid == os.getpid(),
                current_redkit().redis.client_id() != parent_client_id,
                client.get("/session").json,
            )
        )


def test_a_forked_worker_makes_its_own_client(app: Flask) -> None:
    with app.app_context():
        parent_id = current_redkit().redis.client_id()
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_child, args=(app, parent_id, answers))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    own_pid, own_connection, seen = answers.get(timeout=5)
    assert own_pid
    assert own_connection
    assert seen == {"data": {"from": "child"}, "user": None}
    with app.app_context():
        assert current_redkit().redis.client_id() == parent_id  # the parent's is untouched
