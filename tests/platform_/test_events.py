"""The gateway's events (``/events`` SSE, ``/ws`` WebSocket) and admin alerts, against a real
``redkit up`` over HTTP: deployments seen live and in order, resumed with ``Last-Event-ID``,
never another project's; ``project:created`` to admins only, ``system:alert`` to everyone."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from platform_.harness import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Up,
    login,
    new_email,
    register,
    signed_in,
)
from redkit.notify import encode_cursor
from redkit.platform.events import Grants

WAIT = 60.0  # the most any test waits for one expected event (a deployment runs in seconds)
Headers = dict[str, str]
Params = list[tuple[str, str | int | float | bool | None]]


def client_address() -> str:
    return f"127.{secrets.randbelow(250) + 1}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


@pytest.fixture(scope="module")
def admin(up: Up) -> Headers:
    """The admin's bearer header, signed in once per module (logins are limited per account)."""
    transport = httpx.HTTPTransport(local_address=client_address())
    with httpx.Client(transport=transport, timeout=30) as client:
        response = login(up, client, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert response.status_code == 200, response.text
    return {"authorization": f"Bearer {response.json()['token']}"}


def new_project(
    up: Up, http: httpx.Client, headers: Headers, steps: list[str] | None = None
) -> str:
    body: dict[str, Any] = {"name": "e" + secrets.token_hex(4)}
    if steps is not None:
        body["steps"] = steps
    response = http.post(f"{up.gateway}/api/projects", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def deploy(up: Up, http: httpx.Client, headers: Headers, project: str) -> str:
    response = http.post(
        f"{up.gateway}/api/projects/{project}/deployments", json={}, headers=headers
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    return str(response.json()["id"])


def channel_of(project: str) -> str:
    return f"project:{project}:deployments"


class Stream:
    """Reads an SSE response frame by frame, every read bounded (the gateway sends a
    heartbeat every 10 s, the client's read timeout is 30 s, and each wait has a deadline)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()

    def frame(self, deadline: float) -> dict[str, str] | None:
        """The next frame with a ``data:`` line (``None``: the stream ended)."""
        fields: dict[str, str] = {}
        for line in self.lines:
            assert time.monotonic() < deadline, "no frame in time"
            if not line:
                if "data" in fields:
                    return fields
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        return None

    def opened(self) -> None:
        """Wait for the opening ``retry:`` line: the subscription is live from then on."""
        deadline = time.monotonic() + WAIT
        for line in self.lines:
            if line.startswith("retry:"):
                return
            assert time.monotonic() < deadline, "the stream did not open"
        raise AssertionError("the stream ended before it opened")

    def events_until(
        self, done: Callable[[dict[str, Any]], bool], wait: float = WAIT
    ) -> list[dict[str, Any]]:
        """Events (each ``{"id", "channel", "time", "data"}`` plus the frame's ``id:`` as
        ``cursor``) up to and including the first for which ``done`` is true."""
        deadline = time.monotonic() + wait
        out: list[dict[str, Any]] = []
        while True:
            frame = self.frame(deadline)
            assert frame is not None, f"the stream ended; so far {out}"
            event = {**orjson.loads(frame["data"]), "cursor": frame.get("id")}
            event["sse_event"] = frame.get("event", "message")
            out.append(event)
            if done(event):
                return out


@contextmanager
def events(
    up: Up,
    http: httpx.Client,
    headers: Headers,
    params: Params | None = None,
    last_event_id: str | None = None,
) -> Iterator[Stream]:
    sent = dict(headers)
    if last_event_id is not None:
        sent["last-event-id"] = last_event_id
    with http.stream(
        "GET", f"{up.gateway}/events", params=params or [], headers=sent, timeout=30
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = Stream(response)
        stream.opened()
        yield stream


def ended(status: str, deployment: str) -> Callable[[dict[str, Any]], bool]:
    def check(event: dict[str, Any]) -> bool:
        data = event.get("data") or {}
        return bool(data.get("deployment_id") == deployment and data.get("status") == status)

    return check


def statuses(found: list[dict[str, Any]], deployment: str) -> list[str]:
    return [
        e["data"]["status"]
        for e in found
        if isinstance(e.get("data"), dict) and e["data"].get("deployment_id") == deployment
    ]


def user(up: Up, http: httpx.Client) -> tuple[str, Headers]:
    email = new_email()
    assert register(up, http, email).status_code == 201
    token = login(up, http, email).json()["token"]
    return email, {"authorization": f"Bearer {token}"}


# -- deployments over SSE -------------------------------------------------------------------


def test_a_member_sees_its_deployment_go_building_deploying_success_in_order(
    up: Up, http: httpx.Client
) -> None:
    owner = signed_in(up, http)
    project = new_project(up, http, owner)
    with events(up, http, owner) as stream:  # no channel named: everything it may see
        deployment = deploy(up, http, owner, project)
        found = stream.events_until(ended("success", deployment))
    assert statuses(found, deployment) == ["building", "deploying", "success"]
    mine = [e for e in found if e["channel"] == channel_of(project)]
    assert len(mine) == 3
    assert all(e["data"]["project_id"] == project for e in mine)
    assert [e["data"]["attempts"] for e in mine] == [1, 1, 1]  # each says which attempt
    assert all(e["cursor"] for e in mine)  # every event carries where to resume from
    # Each event carries the output since the one before: together, the whole log.
    assert [e["data"]["log"] for e in mine] == [
        "--- attempt 1 ---\n",
        "$ echo building\nbuilding\n",
        "$ echo deploying\ndeploying\n",
    ]


def test_a_failing_deployment_is_seen_retrying_then_failed_with_its_output(
    up: Up, http: httpx.Client
) -> None:
    owner = signed_in(up, http)
    project = new_project(up, http, owner, ["echo trying", "exit 3"])
    with events(up, http, owner, [("channel", channel_of(project))]) as stream:
        deployment = deploy(up, http, owner, project)
        found = stream.events_until(ended("failed", deployment))
    assert statuses(found, deployment) == ["building", "deploying", "queued"] * 2 + [
        "building",
        "deploying",
        "failed",
    ]
    assert [e["data"]["attempts"] for e in found if e["data"]["status"] == "building"] == [1, 2, 3]
    assert found[-1]["data"]["log"] == "$ exit 3\n(exit 3)\n"


def test_a_stream_resumes_with_last_event_id_and_gets_exactly_the_missed_events(
    up: Up, http: httpx.Client, admin: Headers
) -> None:
    owner = signed_in(up, http)
    project = new_project(up, http, owner, ["echo building", "sleep 1", "echo deploying"])
    with events(up, http, owner) as stream:
        deployment = deploy(up, http, owner, project)
        (first,) = stream.events_until(ended("building", deployment))
    # Away while the deployment goes on: it finishes unseen.
    shown: dict[str, Any] = {}
    deadline = time.monotonic() + WAIT
    while shown.get("status") != "success":
        assert time.monotonic() < deadline, shown
        time.sleep(0.3)
        shown = http.get(f"{up.gateway}/api/deployments/{deployment}", headers=owner).json()
    marker = f"after the resume {secrets.token_hex(4)}"
    with events(up, http, owner, last_event_id=first["cursor"]) as stream:
        posted = http.post(
            f"{up.gateway}/api/admin/alerts", json={"message": marker}, headers=admin
        )
        assert posted.status_code == 201, posted.text
        found = stream.events_until(lambda e: e["data"] == {"message": marker})
    # The two it missed, in order, no duplicate of the one it had, then the live alert.
    assert [e["channel"] for e in found] == [channel_of(project)] * 2 + ["system:alert"]
    assert statuses(found, deployment) == ["deploying", "success"]


def test_the_last_event_id_query_parameter_resumes_a_first_connection_too(
    up: Up, http: httpx.Client
) -> None:
    owner = signed_in(up, http)
    project = new_project(up, http, owner)
    channel: Params = [("channel", channel_of(project))]
    with events(up, http, owner, channel) as stream:
        deployment = deploy(up, http, owner, project)
        found = stream.events_until(ended("success", deployment))
    building = found[0]
    assert building["data"]["status"] == "building"
    # One channel named: the resume point is the event's own id.
    assert building["cursor"] == building["id"]
    with events(up, http, owner, [*channel, ("last_event_id", building["id"])]) as stream:
        again = stream.events_until(ended("success", deployment))
    assert statuses(again, deployment) == ["deploying", "success"]


def test_a_second_deployment_while_one_runs_is_queued_behind_it(up: Up, http: httpx.Client) -> None:
    owner = signed_in(up, http)
    project = new_project(up, http, owner, ["sleep 2", "echo done"])
    with events(up, http, owner, [("channel", channel_of(project))]) as stream:
        first = deploy(up, http, owner, project)
        stream.events_until(ended("building", first))
        second = deploy(up, http, owner, project)  # accepted while the first runs, not a 409
        found = stream.events_until(ended("success", second), wait=2 * WAIT)
    order = [(e["data"]["deployment_id"], e["data"]["status"]) for e in found]
    assert order == [
        (first, "deploying"),
        (first, "success"),
        (second, "building"),
        (second, "deploying"),
        (second, "success"),
    ]


# -- who sees what --------------------------------------------------------------------------


def test_a_viewer_of_project_a_never_receives_project_b_events(
    up: Up, http: httpx.Client, admin: Headers
) -> None:
    _, owner_a = user(up, http)
    _, owner_b = user(up, http)
    viewer_email, viewer = user(up, http)
    a = new_project(up, http, owner_a)
    b = new_project(up, http, owner_b)
    added = http.post(
        f"{up.gateway}/api/projects/{a}/members",
        json={"email": viewer_email, "role": "viewer"},
        headers=owner_a,
    )
    assert added.status_code == 201, added.text
    # Guessing B's channel, or a pattern that would cover it, is refused outright.
    guesses: list[Params] = [
        [("channel", channel_of(b))],
        [("pattern", f"project:{b}:*")],
        [("pattern", "project:*")],
        [("pattern", f"project:{b}*")],
        [("pattern", f"project:{b[:8]}*")],
        [("pattern", "*")],
        [("pattern", "project:?*")],
        [("pattern", channel_of(b))],  # a pattern without wildcards is the one channel
        [("pattern", f"project:{b}:deployment[s]")],
        [("channel", "project:created")],
        [("channel", f"project:{a}:*")],  # a channel is literal: no such channel
    ]
    for params in guesses:
        refused = http.get(f"{up.gateway}/events", params=params, headers=viewer)
        assert refused.status_code == 403, (params, refused.text)
        assert refused.json()["error"] == "forbidden"
    # Asking for both: it gets A's, and B's is dropped.
    both: Params = [
        ("channel", channel_of(a)),
        ("channel", channel_of(b)),
        ("pattern", f"project:{b}:*"),
    ]
    with (
        events(up, http, viewer) as everything,
        events(up, http, viewer, both) as asked,
        events(up, http, viewer, [("pattern", f"project:{a}:*")]) as by_pattern,
    ):
        in_b = deploy(up, http, owner_b, b)
        # B's deployment is over before A's starts: had it reached the viewer, it would be there.
        deadline = time.monotonic() + WAIT
        while http.get(f"{up.gateway}/api/deployments/{in_b}", headers=owner_b).json()[
            "status"
        ] not in ("success", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        in_a = deploy(up, http, owner_a, a)
        seen = [
            stream.events_until(ended("success", in_a))
            for stream in (everything, asked, by_pattern)
        ]
    # A made-up resume cursor naming B's channel replays A's history, never B's.
    cursor = encode_cursor({channel_of(b): "0-0", channel_of(a): "0-0"})
    marker = f"after the replay {secrets.token_hex(4)}"
    with events(up, http, viewer, last_event_id=cursor) as replay:
        posted = http.post(
            f"{up.gateway}/api/admin/alerts", json={"message": marker}, headers=admin
        )
        assert posted.status_code == 201
        seen.append(replay.events_until(lambda e: e["data"] == {"message": marker}))
    for found in seen:
        assert statuses(found, in_a) == ["building", "deploying", "success"]
        assert all(e["channel"] != channel_of(b) for e in found)
        assert all(e["data"].get("project_id") != b for e in found)
        assert statuses(found, in_b) == []


def test_a_stranger_gets_nothing_of_a_project_and_anonymous_callers_get_no_stream(
    up: Up, http: httpx.Client
) -> None:
    owner = signed_in(up, http)
    project = new_project(up, http, owner)
    stranger = signed_in(up, http)
    refused = http.get(
        f"{up.gateway}/events", params=[("channel", channel_of(project))], headers=stranger
    )
    assert refused.status_code == 403
    anonymous = http.get(f"{up.gateway}/events")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthorized"
    forged = http.get(f"{up.gateway}/events", headers={"authorization": "Bearer " + "x" * 43})
    assert forged.status_code == 401


def test_an_admin_gets_project_created_and_alerts_and_a_user_only_the_alert(
    up: Up, http: httpx.Client, admin: Headers
) -> None:
    someone = signed_in(up, http)
    marker = f"maintenance at noon {secrets.token_hex(4)}"
    with events(up, http, admin) as admins, events(up, http, someone) as users:
        project = new_project(up, http, someone)
        posted = http.post(
            f"{up.gateway}/api/admin/alerts", json={"message": marker}, headers=admin
        )
        assert posted.status_code == 201, posted.text
        assert posted.json()["channel"] == "system:alert"

        def is_marker(event: dict[str, Any]) -> bool:
            return bool(event["data"] == {"message": marker})

        for_admin = admins.events_until(is_marker)
        for_user = users.events_until(is_marker)
    created = [e for e in for_admin if e["channel"] == "project:created"]
    assert [e["data"]["id"] for e in created][-1:] == [project]
    assert for_admin[-1]["channel"] == "system:alert"
    # Published before the alert on one connection: had it been delivered, it would be here.
    assert [e["channel"] for e in for_user] == ["system:alert"]
    refused = http.get(
        f"{up.gateway}/events", params=[("channel", "project:created")], headers=someone
    )
    assert refused.status_code == 403


def test_an_admin_sees_every_projects_deployments_by_default(
    up: Up, http: httpx.Client, admin: Headers
) -> None:
    owner = signed_in(up, http)
    project = new_project(up, http, owner)
    with events(up, http, admin) as stream:
        deployment = deploy(up, http, owner, project)
        found = stream.events_until(ended("success", deployment))
    assert statuses(found, deployment) == ["building", "deploying", "success"]


# -- alerts ---------------------------------------------------------------------------------


def test_alerts_are_for_admins_only_and_a_bad_body_is_a_422_that_publishes_nothing(
    up: Up, http: httpx.Client, admin: Headers
) -> None:
    url = f"{up.gateway}/api/admin/alerts"
    plain = signed_in(up, http)
    anonymous = http.post(url, json={"message": "hi"})
    assert anonymous.status_code == 401
    assert "detail" in anonymous.json()
    forbidden = http.post(url, json={"message": "hi"}, headers=plain)
    assert forbidden.status_code == 403
    assert forbidden.json() == {"detail": "admins only"}
    assert http.post(url, content=b"not json", headers=plain).status_code == 403
    marker = f"the real one {secrets.token_hex(4)}"
    with events(up, http, plain, [("channel", "system:alert")]) as stream:
        bads: list[Any] = [
            {},
            {"message": ""},
            {"message": 5},
            {"message": "x" * 2001},
            {"message": "hi", "level": "red"},
            [],
        ]
        for bad in bads:
            answer = http.post(url, json=bad, headers=admin)
            assert answer.status_code == 422, (bad, answer.text)
            assert "detail" in answer.json()
        for raw in (b"{not json", b"", b"\xff\xfe"):
            answer = http.post(
                url, content=raw, headers={**admin, "content-type": "application/json"}
            )
            assert answer.status_code == 422, (raw, answer.text)
        huge = http.post(url, content=b"x" * 100_000, headers=admin)
        assert huge.status_code == 413
        assert "detail" in huge.json()
        assert http.post(url, json={"message": marker}, headers=admin).status_code == 201
        (first,) = stream.events_until(lambda e: True)
    assert first["data"] == {"message": marker}  # none of the bad ones was published


def test_alerts_appear_in_the_gateway_openapi(up: Up, http: httpx.Client) -> None:
    schema = http.get(f"{up.gateway}/openapi.json").json()
    body = schema["paths"]["/api/admin/alerts"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["required"] == ["message"]


# -- WebSocket ------------------------------------------------------------------------------


def ws_url(up: Up, query: str = "") -> str:
    return up.gateway.replace("http://", "ws://") + "/ws" + (f"?{query}" if query else "")


async def frames_until(
    socket: ClientConnection, done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT):
        while True:
            frame = json.loads(await socket.recv())
            out.append(frame)
            if done(frame):
                return out


async def async_user(client: httpx.AsyncClient, up: Up) -> Headers:
    email = new_email()
    registered = await client.post(
        f"{up.gateway}/auth/register",
        json={"email": email, "password": "correct horse battery", "name": "Ada"},
    )
    assert registered.status_code == 201
    answer = await client.post(
        f"{up.gateway}/auth/login", json={"email": email, "password": "correct horse battery"}
    )
    return {"authorization": f"Bearer {answer.json()['token']}"}


def async_client() -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=client_address())
    # No cookie jar: a login's cookie would follow the next user's login and end its session.
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(transport=transport, timeout=30, cookies=jar)


async def test_a_websocket_gets_the_same_events_and_resumes_from_its_cursor(up: Up) -> None:
    async with async_client() as client:
        owner = await async_user(client, up)
        made = await client.post(
            f"{up.gateway}/api/projects",
            json={"name": "w" + secrets.token_hex(4), "steps": ["echo a", "sleep 1", "echo b"]},
            headers=owner,
        )
        project = made.json()["id"]
        async with ws_connect(ws_url(up), additional_headers=owner) as socket:
            started = await client.post(
                f"{up.gateway}/api/projects/{project}/deployments", json={}, headers=owner
            )
            deployment = started.json()["id"]
            (building,) = await frames_until(socket, ended("building", deployment))
        assert building["type"] == "event"
        assert building["channel"] == channel_of(project)
        assert building["cursor"]
        # Reconnect from the cursor: the rest, in order, and nothing twice.
        query = f"last_event_id={building['cursor']}"
        async with ws_connect(ws_url(up, query), additional_headers=owner) as socket:
            rest = await frames_until(socket, ended("success", deployment))
        assert statuses(rest, deployment) == ["deploying", "success"]
        assert all(f["channel"] == channel_of(project) for f in rest)


async def test_a_websocket_is_refused_another_projects_channel_and_anonymous_callers(
    up: Up,
) -> None:
    async with async_client() as client:
        owner = await async_user(client, up)
        stranger = await async_user(client, up)
        made = await client.post(
            f"{up.gateway}/api/projects", json={"name": "w" + secrets.token_hex(4)}, headers=owner
        )
        assert made.status_code == 201, made.text
        project = made.json()["id"]
    evil = {**owner, "origin": "http://evil.example"}  # another site's page, the owner's token
    for query, headers, status in (
        (f"channel={channel_of(project)}", stranger, 403),
        ("pattern=project:*", stranger, 403),
        ("", {}, 401),
        ("", evil, 403),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(ws_url(up, query), additional_headers=headers):
                pass
        assert refused.value.response.status_code == status, query


# -- an open stream ends with its session ---------------------------------------------------


async def drained(socket: ClientConnection) -> None:
    """Read until the server closes the socket (raises ConnectionClosed), within WAIT."""
    async with asyncio.timeout(WAIT):
        while True:
            await socket.recv()


async def test_logout_everywhere_ends_open_streams_and_sockets(up: Up) -> None:
    async with async_client() as client:
        owner = await async_user(client, up)
        async with (
            client.stream("GET", f"{up.gateway}/events", headers=owner) as response,
            ws_connect(ws_url(up), additional_headers=owner) as socket,
        ):
            assert response.status_code == 200
            lines = response.aiter_lines()
            async with asyncio.timeout(WAIT):
                async for line in lines:
                    if line.startswith("retry:"):
                        break
            out = await client.post(f"{up.gateway}/auth/logout-all", headers=owner)
            assert out.status_code == 200, out.text
            # The gateway rechecks every 10 s: both end well within the bound.
            rest: list[str] = []
            async with asyncio.timeout(WAIT):
                async for line in lines:
                    rest.append(line)
            assert "event: end" in rest
            with pytest.raises(ConnectionClosed) as closed:
                await drained(socket)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008


def test_a_member_whose_project_is_deleted_has_its_stream_ended(up: Up, http: httpx.Client) -> None:
    owner = signed_in(up, http)
    project = new_project(up, http, owner)
    with events(up, http, owner, [("channel", channel_of(project))]) as stream:
        gone = http.delete(f"{up.gateway}/api/projects/{project}", headers=owner)
        assert gone.status_code == 204
        # Rechecked every 10 s (the heartbeat): the end comes well within the bound.
        frame = stream.frame(time.monotonic() + WAIT)
        assert frame is not None
        assert frame.get("event") == "end"
        assert orjson.loads(frame["data"])["error"] == "ended"
        assert stream.frame(time.monotonic() + WAIT) is None  # and the stream is over


def test_a_member_removed_while_subscribed_has_its_stream_ended(up: Up, http: httpx.Client) -> None:
    owner = signed_in(up, http)
    project = new_project(up, http, owner)
    viewer_email, viewer = user(up, http)
    added = http.post(
        f"{up.gateway}/api/projects/{project}/members",
        json={"email": viewer_email, "role": "viewer"},
        headers=owner,
    )
    assert added.status_code == 201, added.text
    with events(up, http, viewer) as stream:  # everything it may see: the alerts and the project
        removed = http.delete(
            f"{up.gateway}/api/projects/{project}/members/{added.json()['user_id']}",
            headers=owner,
        )
        assert removed.status_code == 204, removed.text
        frame = stream.frame(time.monotonic() + WAIT)
        assert frame is not None
        assert frame.get("event") == "end"
        assert stream.frame(time.monotonic() + WAIT) is None
    # Reconnecting gets the alerts only: the project is no longer among what it may see.
    refused = http.get(
        f"{up.gateway}/events", params=[("channel", channel_of(project))], headers=viewer
    )
    assert refused.status_code == 403


# -- the grants themselves (no server: what authorize decides) -------------------------------

A = "a" * 32
B = "b" * 32


@pytest.mark.parametrize(
    ("pattern", "granted"),
    [
        (f"project:{A}:*", True),
        (f"project:{A}:deploy?ents", True),
        (f"project:{A}:deployments", True),  # no wildcard: the one channel
        (f"project:{A}\\:deployments", True),  # escapes resolved: still that channel
        (f"project:{A}*", False),  # would match project:<A>0..., another id's channels
        (f"project:{A}?deployments", False),
        (f"project:{B}:*", False),
        ("project:*", False),
        ("project:[ab]*", False),
        ("*", False),
        ("system:alert", True),
        ("system:*", False),
        ("project:created", False),
    ],
)
def test_a_member_is_granted_a_pattern_only_inside_its_own_projects(
    pattern: str, granted: bool
) -> None:
    grants = Grants("u1", admin=False, projects=frozenset({A}))
    assert grants.pattern(pattern) is granted


@pytest.mark.parametrize(
    ("pattern", "granted"),
    [("project:*", True), (f"project:{B}:*", True), ("project:created", True), ("*", False),
     ("mail:*", False), ("system:*", False), ("system:alert", True)],
)  # fmt: skip
def test_an_admin_is_granted_every_project_pattern_and_nothing_else(
    pattern: str, granted: bool
) -> None:
    assert Grants("root", admin=True, projects=frozenset()).pattern(pattern) is granted


def test_channels_are_granted_by_exact_name() -> None:
    member = Grants("u1", admin=False, projects=frozenset({A}))
    assert member.channel(f"project:{A}:deployments")
    assert not member.channel(f"project:{B}:deployments")
    assert not member.channel(f"project:{A}:deployments:x")
    assert not member.channel(f"project:{A}:*")
    assert not member.channel("project:created")
    assert not member.channel("mail:received")
    assert member.channel("system:alert")
    assert member.everything() == (["system:alert", f"project:{A}:deployments"], [])
    admin = Grants("root", admin=True, projects=frozenset())
    assert admin.channel("project:created")
    assert admin.everything() == (["system:alert", "project:created"], ["project:*"])
