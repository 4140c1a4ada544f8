"""A small Flask app on redkit.flask, made by an app factory as real apps are."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask, jsonify, request, session
from flask.typing import ResponseReturnValue

from redkit.flask import (
    Limiter,
    Redkit,
    login,
    logout,
    logout_everywhere,
    rotate_session,
    user_or_ip,
)

redkit_ext = Redkit()
limiter = Limiter()

SECRET = "a-test-secret-key-that-is-long-enough"


class Gate:
    """Holds a request between reading and writing its session (bounded waits only)."""

    def __init__(self) -> None:
        self.read = threading.Event()
        self.go = threading.Event()


def create_app(redis_url: str, namespace: str, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=SECRET, REDKIT_URL=redis_url, REDKIT_NAMESPACE=namespace, TESTING=True
    )
    app.config.update(config)
    redkit_ext.init_app(app)
    gate = Gate()
    app.extensions["test_gate"] = gate

    @app.get("/session")
    def show() -> ResponseReturnValue:
        return jsonify(data=dict(session), user=session.user_id)  # type: ignore[attr-defined]

    @app.post("/set")
    def set_values() -> ResponseReturnValue:
        session.update(request.get_json())
        return "", 204

    @app.post("/remove/<name>")
    def remove(name: str) -> ResponseReturnValue:
        session.pop(name, None)
        return "", 204

    @app.post("/cart")
    def add_to_cart() -> ResponseReturnValue:
        session.setdefault("cart", []).append(request.get_json()["item"])
        return "", 204

    @app.post("/permanent")
    def permanent() -> ResponseReturnValue:
        session.permanent = True
        return "", 204

    @app.post("/bad")
    def bad() -> ResponseReturnValue:
        session["when"] = {1, 2}  # a set is not JSON
        return "", 204

    @app.get("/untouched")
    def untouched() -> ResponseReturnValue:
        return "no session here"

    @app.post("/login")
    def sign_in() -> ResponseReturnValue:
        login(request.get_json()["user"], {"signed_in": True})
        return "", 204

    @app.post("/rotate")
    def rotate() -> ResponseReturnValue:
        rotate_session()
        return "", 204

    @app.post("/logout")
    def sign_out() -> ResponseReturnValue:
        return jsonify(ended=logout())

    @app.post("/logout-everywhere")
    def sign_out_everywhere() -> ResponseReturnValue:
        return jsonify(ended=logout_everywhere())

    @app.post("/slow-set")
    def slow_set() -> ResponseReturnValue:
        # Read the session, let the test run another request, then write.
        values = request.get_json()
        _ = session.get("anything")
        gate.read.set()
        if not gate.go.wait(10):
            return "the test never let this request go", 500
        session.update(values)
        return "", 204

    @app.get("/limited")
    @limiter.limit("3/minute")
    def limited() -> ResponseReturnValue:
        return jsonify(ok=True)

    @app.get("/per-user")
    @limiter.limit("2/minute", key=user_or_ip)
    def per_user() -> ResponseReturnValue:
        return jsonify(ok=True)

    @app.post("/limited-post")
    @limiter.limit("1/hour", methods=["POST"])
    def limited_post() -> ResponseReturnValue:
        return jsonify(ok=True)

    return app
