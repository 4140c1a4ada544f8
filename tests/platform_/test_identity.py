"""The gateway's identity header: only the holder of the platform secret can write one."""

from __future__ import annotations

import pytest

from redkit.platform.identity import Identity, sign_identity, verify_identity

SECRET = "s" * 48


def test_a_signed_identity_reads_back() -> None:
    who = Identity("u1", "premium", "abcd1234", "10.0.0.1")
    assert verify_identity(sign_identity(who, SECRET), SECRET) == who


@pytest.mark.parametrize(
    "value",
    [None, "", "garbage", "a.b.c", "x" * 5000, "eyJ1aWQiOiJ1MSJ9.AAAA"],
)
def test_what_the_gateway_did_not_sign_is_no_identity(value: str | None) -> None:
    assert verify_identity(value, SECRET) is None


def test_another_secret_or_an_edited_payload_is_refused() -> None:
    value = sign_identity(Identity("u1", "user"), SECRET)
    assert verify_identity(value, "t" * 48) is None
    mac = value.partition(".")[2]
    tampered = sign_identity(Identity("u1", "admin"), SECRET).partition(".")[0] + "." + mac
    assert verify_identity(tampered, SECRET) is None


def test_an_expired_identity_is_refused() -> None:
    value = sign_identity(Identity("u1", "user"), SECRET, now=1000.0)
    assert verify_identity(value, SECRET, now=1010.0) is not None
    assert verify_identity(value, SECRET, now=1000.0 + 3600) is None
