"""Session tokens: what the client holds, what Redis stores, and how a token finds its slot.

A token is ``<secret>.<bucket>``:

- ``secret``: ``secrets.token_urlsafe(32)``, 256 random bits (43 URL-safe characters).
- ``bucket``: 4 hex digits, ``0000``-``3fff``: the first 14 bits of ``sha256(user_id)``.

Redis never sees the token: a session lives at ``<ns>:{sess:<bucket>}:s:<sha256(token)>``
(``<ns>:{sess:<bucket>}:n:<store name>:s:<sha256(token)>`` for a store not named ``default``),
so someone who reads the data (a dump, a replica, ``MONITOR``) cannot replay a session. The
bucket is the hash tag shared by every key of the user (sessions, index, permissions), which
is how ``get(token)``, which knows no user ID, reaches the slot where ``revoke_all(user_id)``
and ``list(user_id)`` do their work atomically on a Cluster.

A token is valid in one store only: the store's name is part of the key its hash is looked up
under, so a token of one store presented to another (an ``admin`` store beside the default
one, in one namespace) is unknown there, with no extra round trip. The token itself does not
carry the name: its format is the same for every store.

The bucket is not the user ID: 16,384 buckets, each shared by 1/16,384 of all users, so a
token tells its holder nothing they could use to name its user. The secret comes first, so
two tokens share no prefix beyond chance, even tokens of one user.
"""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = ["BUCKETS", "PREFIX_LENGTH", "bucket_of", "hash_token", "new_token", "parse_bucket"]

BUCKETS = 16384
"""Buckets (hash tags) users are spread over; as many as a Cluster has slots."""

PREFIX_LENGTH = 8
"""Characters of a token that ``list()`` shows (48 of its 256 random bits): enough to tell a
user which of their sessions is which, far too little to guess the rest."""

_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}\.[0-3][0-9a-f]{3}")


def bucket_of(user_id: str) -> str:
    """The bucket (4 hex digits) every key of ``user_id`` (as stored: an int's digits) lives
    under."""
    digest = hashlib.sha256(user_id.encode()).digest()
    return f"{int.from_bytes(digest[:2], 'big') % BUCKETS:04x}"


def new_token(bucket: str) -> str:
    """A fresh session token routed to ``bucket``."""
    return secrets.token_urlsafe(32) + "." + bucket


def parse_bucket(token: object) -> str | None:
    """The bucket of a well-formed token; ``None`` for anything else (no round trip needed)."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        return None
    return token[-4:]


def hash_token(token: str) -> str:
    """What Redis stores instead of the token: its SHA-256, hex.

    A plain hash suffices: the token has 256 random bits, so there is nothing to brute-force.
    """
    return hashlib.sha256(token.encode()).hexdigest()
