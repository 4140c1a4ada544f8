"""Session IDs: unguessable, untamperable, unrelated to each other."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import secrets

import pytest

import redkit
from redkit.sessions.tokens import bucket_of, new_token, parse_bucket

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _tampered(token: str, rng: random.Random) -> str:
    """The token with one character changed: in the secret, the dot, or the bucket."""
    chars = list(token)
    i = rng.randrange(len(chars))
    pool = ALPHABET if i < 43 else ("0123" if i == 44 else "0123456789abcdef.")
    chars[i] = rng.choice([c for c in pool if c != chars[i]])
    return "".join(chars)


@pytest.mark.cluster
async def test_10000_random_and_tampered_ids_are_all_rejected(rk: redkit.Redkit) -> None:
    store = rk.sessions(idle_ttl=60, absolute_ttl=600)
    live = [await store.create(f"user{i}", {"i": i}) for i in range(20)]
    rng = random.Random(os.urandom(8))
    buckets = [s.id[-4:] for s in live]
    candidates: list[str] = []
    for n in range(10_000):
        kind = n % 4
        if kind == 0:  # well-formed, random secret, a bucket that holds live sessions
            candidates.append(secrets.token_urlsafe(32) + "." + rng.choice(buckets))
        elif kind == 1:  # a live token with one character changed
            candidates.append(_tampered(rng.choice(live).id, rng))
        elif kind == 2:  # a live token's secret with another bucket
            s = rng.choice(live)
            candidates.append(s.id[:-4] + f"{(int(s.id[-4:], 16) + 1) % 16384:04x}")
        else:  # junk: wrong length, foreign characters, empty, huge
            t = live[0].id
            candidates.append(rng.choice(["", ".", "x" * 10_000, t[:-1], t + "0", "é" * 48]))
    assert len(set(candidates) & {s.id for s in live}) == 0
    well_formed = sum(parse_bucket(c) is not None for c in candidates)
    assert well_formed > 7000  # most of them really go to the server

    results: list[object] = []
    for i in range(0, len(candidates), 500):
        batch = candidates[i : i + 500]
        results += await asyncio.gather(*(store.get(c) for c in batch))
    assert results == [None] * len(candidates)
    # ...while the genuine tokens still work.
    assert all([await store.get(s.id) is not None for s in live])


@pytest.mark.cluster
async def test_ids_share_no_prefix_beyond_chance(rk: redkit.Redkit) -> None:
    store = rk.sessions(idle_ttl=60, absolute_ttl=600)
    # One user (same bucket, the worst case for shared structure) and many users.
    ids = [(await store.create("same-user", {})).id for _ in range(100)]
    ids += [(await store.create(f"u{i}", {})).id for i in range(100)]
    assert len(set(ids)) == len(ids)

    def common(a: str, b: str) -> int:
        return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))

    longest = max(common(a, b) for a, b in itertools.combinations(ids, 2))
    # 19,900 pairs of 64-symbol strings: P(any pair shares 6+ characters) is about 3e-7.
    assert longest <= 5


def test_ids_carry_256_random_bits_and_a_bucket_not_the_user_id() -> None:
    t = new_token(bucket_of("alice@example.com"))
    secret, _, bucket = t.partition(".")
    assert len(secret) == 43  # 43 * 6 = 258 bits of base64 for 256 random bits
    assert bucket == bucket_of("alice@example.com")
    assert "alice" not in t
    assert parse_bucket(t) == bucket
    # Users spread over the buckets (and so over a Cluster's slots).
    assert len({bucket_of(f"user{i}") for i in range(1000)}) > 950
