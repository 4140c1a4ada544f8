"""The gateway's public API fuzzed with schemathesis against a real ``redkit up``: no input
is a 5xx, and every 4xx has a JSON body.

The schema is the gateway's own ``/openapi.json`` (the auth and projects services' documents,
each path from the service the gateway routes it to), and every request goes to the gateway.
Two callers:

- **an admin** (10,000 requests/min: the tier never gets in the way), with real IDs (a
  project, a deployment, a user) put into the path parameters of some cases, so that the
  fuzzing reaches past the 404s into the services' logic. Logging in and out is left to the
  anonymous run: a generated login or logout would end the admin's session mid-run.
- **anonymous**: each request from a loopback address of its own (``127.x.y.z``), so the
  10/min anonymous limit (per client IP) never answers in the services' place, as on a real
  network of many clients. A 429 would still pass the checks; it would only test less.

Bounded and reproducible: ``MAX_EXAMPLES`` per operation and caller, derandomized (the same
cases every run), no example database, no shrinking (a failure shows the case as found, with
a curl line to replay it).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode

from platform_.harness import ADMIN_EMAIL, ADMIN_PASSWORD, Up, new_email, random_loopback, register

MAX_EXAMPLES = 10
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
# Logging in or out as the admin would end the session the rest of the run needs.
SESSION_ENDING = ["/auth/login", "/auth/logout", "/auth/logout-all"]


class FromAddress(HTTPAdapter):
    """A requests adapter whose connections leave from one local address."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(address: str) -> requests.Session:
    session = requests.Session()
    adapter = FromAddress(address)
    session.mount("http://", adapter)
    return session


def checked(case: Any, response: schemathesis.Response) -> None:
    """No 5xx; a 4xx says why in JSON."""
    status = response.status_code
    seen = f"{status} {response.content[:300]!r}\n{case.as_curl_command()}"
    assert status < 500, seen
    if 400 <= status < 500:
        kinds = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [])
        assert kinds, seen
        assert kinds[0].startswith("application/json"), seen
        try:
            json.loads(response.content)
        except ValueError:
            raise AssertionError(f"not JSON: {seen}") from None


@pytest.fixture(scope="module")
def public_api(up: Up) -> Any:
    address = random_loopback()
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30) as http:
        document = http.get(f"{up.gateway}/openapi.json")
    assert document.status_code == 200, document.text
    schema = schemathesis.openapi.from_dict(document.json())
    schema.config.update(base_url=up.gateway)
    return schema


@pytest.fixture(scope="module")
def admin(up: Up) -> Iterator[tuple[requests.Session, dict[str, str]]]:
    """The admin's session (a client of its own address) and real IDs to aim at."""
    with session_from(random_loopback()) as http:
        signed = http.post(
            f"{up.gateway}/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        assert signed.status_code == 200, signed.text
        http.headers["authorization"] = f"Bearer {signed.json()['token']}"
        project = http.post(f"{up.gateway}/api/projects", json={"name": "f" + secrets.token_hex(4)})
        assert project.status_code == 201, project.text
        deployment = http.post(
            f"{up.gateway}/api/projects/{project.json()['id']}/deployments", json={}
        )
        assert deployment.status_code == 202, deployment.text
        with httpx.Client(
            transport=httpx.HTTPTransport(local_address=random_loopback()), timeout=30
        ) as other:
            user = register(up, other, new_email())
        assert user.status_code == 201, user.text
        ids = {
            "project_id": str(project.json()["id"]),
            "deployment_id": str(deployment.json()["id"]),
            "user_id": str(user.json()["id"]),
        }
        yield http, ids


def operations(schema: Any) -> list[Any]:
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 10, [op.label for op in found]  # the schema was read whole
    return found


def fuzz(operation: Any, send: Any) -> list[str]:
    """Run ``send(case, aim)`` over generated cases of ``operation``, valid and invalid ones;
    the failures as text (each with its curl line), so every operation runs whatever fails."""
    failures: list[str] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @FUZZ
        @given(case=operation.as_strategy(generation_mode=mode), aim=st.booleans())
        def run(case: Any, aim: bool) -> None:
            send(case, aim)

        try:
            run()
        except Unsatisfiable:
            # No invalid case exists (an operation without parameters or body): nothing to try.
            assert mode is GenerationMode.NEGATIVE, operation.label
        except AssertionError as exc:
            failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures


# Every operation's cases in one test: minutes on a loaded machine, bounded by MAX_EXAMPLES.
@pytest.mark.timeout(900)
def test_no_input_from_an_admin_is_a_5xx_and_every_4xx_is_json(
    public_api: Any, admin: tuple[requests.Session, dict[str, str]]
) -> None:
    http, ids = admin

    def send(case: Any, aim: bool) -> None:
        if aim and case.path_parameters and case.method != "DELETE":
            # A real ID (but never into a DELETE: the target must outlive the run).
            for name in case.path_parameters:
                if name in ids:
                    case.path_parameters[name] = ids[name]
        checked(case, case.call(session=http, headers=dict(http.headers)))

    failures: list[str] = []
    for operation in operations(public_api):
        if operation.path not in SESSION_ENDING:
            failures += fuzz(operation, send)
    assert not failures, "\n\n".join(failures)
    # The admin's session lived through it all: the run tested what it meant to.
    assert http.get(f"{public_api.config.base_url}/api/me").json()["email"] == ADMIN_EMAIL


# Every operation's cases in one test: minutes on a loaded machine, bounded by MAX_EXAMPLES.
@pytest.mark.timeout(900)
def test_no_anonymous_input_is_a_5xx_and_every_4xx_is_json(public_api: Any) -> None:
    def send(case: Any, aim: bool) -> None:
        with session_from(random_loopback()) as http:
            checked(case, case.call(session=http))

    failures: list[str] = []
    for operation in operations(public_api):
        failures += fuzz(operation, send)
    assert not failures, "\n\n".join(failures)


# Found by the fuzzing above: the gateway re-built the upstream URL from the *decoded* path,
# and httpx refuses a URL with control characters in it (an unhandled InvalidURL: a 500).
@pytest.mark.parametrize(
    "path",
    [
        "/api/projects/%0B",
        "/api/projects/%7F%C3%9D%05/members",
        "/api/deployments/i%F0%B3%AE%9D%08",
        "/auth/sessions/%C2%88%05",
        "/api/admin/users/%12",
    ],
)
def test_an_encoded_control_character_in_the_path_is_a_json_4xx_not_a_500(
    up: Up, admin: tuple[requests.Session, dict[str, str]], path: str
) -> None:
    http, _ids = admin
    method = "PATCH" if path.startswith("/api/admin/") else "GET"
    response = http.request(method, f"{up.gateway}{path}", json={"type": "user"})
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"]
