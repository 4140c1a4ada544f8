"""``SESSION_ENGINE = "redkit.django.sessions"``: Django's SessionBase contract, through the
test client and real views, and what it adds: a user's sessions listed, log out everywhere,
atomic key cycling, concurrent saves that merge."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.test import Client
from django.test.utils import override_settings

from redkit.django import sessions as engine
from redkit.django.sessions import SessionStore, revoke_all, sessions_of
from redkit.errors import ConfigurationError

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("sessions")]


def session_id(client: Client) -> str:
    return str(client.cookies[settings.SESSION_COOKIE_NAME].value)


# -- Django's SessionBase contract ----------------------------------------------------------------


def test_create_save_load_exists_and_delete() -> None:
    store = SessionStore()
    store["cart"] = [1, 2]
    store.create()
    key = store.session_key
    assert key is not None
    assert store.exists(key)
    again = SessionStore(key)
    assert again["cart"] == [1, 2]
    again["cart"] = [3]
    again.save()
    assert SessionStore(key)["cart"] == [3]
    again.delete()
    assert not store.exists(key)
    gone = SessionStore(key)
    assert gone.load() == {}
    assert gone.session_key is None


def test_a_new_session_saved_gets_an_id_from_the_server() -> None:
    store = SessionStore()
    store["k"] = "v"
    store.save()
    assert store.session_key is not None
    assert len(store.session_key) >= 43
    assert SessionStore(store.session_key)["k"] == "v"


def test_an_id_the_server_did_not_make_is_never_adopted() -> None:
    chosen = "attacker-chosen-session-id"
    store = SessionStore(chosen)
    store["k"] = "v"
    store.save()
    assert store.session_key != chosen
    assert not store.exists(chosen)
    existing = SessionStore(store.session_key)
    with pytest.raises(CreateError):
        existing.save(must_create=True)


def test_saving_a_session_that_ended_meanwhile_raises_update_error() -> None:
    store = SessionStore()
    store["k"] = "v"
    store.create()
    assert store.session_key is not None
    SessionStore(store.session_key).delete()
    store["k"] = "w"
    with pytest.raises(UpdateError):
        store.save()
    assert not store.exists(store.session_key)


def test_cycle_key_keeps_the_data_and_the_old_id_stops_working() -> None:
    store = SessionStore()
    store["k"] = "v"
    store.create()
    old = store.session_key
    assert old is not None
    store.cycle_key()
    assert store.session_key != old
    assert not store.exists(old)
    assert store.exists(store.session_key)
    assert SessionStore(store.session_key)["k"] == "v"


def test_concurrent_saves_of_different_fields_both_survive() -> None:
    first = SessionStore()
    first["base"] = 0
    first.create()
    key = first.session_key
    one, two = SessionStore(key), SessionStore(key)
    one.load()
    two.load()
    one["a"] = 1
    two["b"] = 2
    del two["base"]
    one.save()
    two.save()
    assert SessionStore(key).load() == {"a": 1, "b": 2}
    assert two["a"] == 1


def test_clear_expired_is_a_no_op() -> None:
    SessionStore.clear_expired()


# -- through the test client and real views -----------------------------------------------------


def test_a_session_set_in_one_request_is_read_in_the_next() -> None:
    client = Client()
    assert client.get("/session/put/?theme=dark").json() == {"theme": "dark"}
    assert client.get("/session/show/").json() == {"theme": "dark"}
    assert client.get("/session/drop/theme/").json() == {}
    assert client.get("/session/show/").json() == {}


def test_login_gives_a_new_id_of_the_users_and_the_pre_login_id_stops_working() -> None:
    client = Client()
    client.get("/session/put/?cart=3")
    before = session_id(client)
    assert client.get("/session/login/42/").json()["cart"] == "3"
    after = session_id(client)
    assert after != before
    assert not SessionStore().exists(before)
    assert [s.user_id for s in sessions_of(42)] == ["user:42"]
    assert client.get("/session/show/").json()["cart"] == "3"


def test_revoke_all_logs_a_user_out_everywhere_and_no_one_else() -> None:
    laptop, phone, other = Client(), Client(), Client()
    laptop.get("/session/login/7/")
    phone.get("/session/login/7/")
    other.get("/session/login/8/")
    assert len(sessions_of(7)) == 2
    assert revoke_all(7) == 2
    assert sessions_of(7) == []
    assert laptop.get("/session/show/").json() == {}
    assert phone.get("/session/show/").json() == {}
    assert "_auth_user_id" in other.get("/session/show/").json()


def test_a_request_saving_a_revoked_session_gets_a_400_not_a_500(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = Client(raise_request_exception=False)
    client.get("/session/login/9/")
    key = session_id(client)
    # Between the load and the save of this request, the user is logged out everywhere.
    original = SessionStore.load

    def load_then_revoke(self: SessionStore) -> dict[str, object]:
        data = original(self)
        revoke_all(9)
        return data

    monkeypatch.setattr(SessionStore, "load", load_then_revoke)
    response = client.get("/session/put/?x=1")
    assert response.status_code == 400
    assert not SessionStore().exists(key)


def test_logout_ends_the_session_on_the_server() -> None:
    client = Client()
    client.get("/session/login/5/")
    key = session_id(client)
    client.get("/session/logout/")
    assert not SessionStore().exists(key)
    assert sessions_of(5) == []


def test_an_unknown_setting_is_refused() -> None:
    with (
        override_settings(REDKIT_SESSIONS={"URL": "redis://x"}),
        pytest.raises(ConfigurationError, match="URL"),
    ):
        engine.store()
