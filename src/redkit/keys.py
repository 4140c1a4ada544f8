"""Key names: a namespace prefix, and hash tags so that the keys of one operation share a slot.

Every key redkit writes starts with ``<namespace>:`` so one application (or one project of the
platform, with its own ACL user limited to ``~<namespace>:*``) owns a prefix. Keys that one
script touches together are built from one :class:`KeyGroup`::

    group = keyspace.group("lock", "db:p1")
    group.key("owner")   # 'rk:{lock:db:p1}:owner'
    group.key("fence")   # 'rk:{lock:db:p1}:fence'

On a Cluster only the text between the first ``{`` and the next ``}`` is hashed. The tag always
starts with the group's kind, so it is never empty, and every key of a group shares its text up
to the tag's closing brace: even an identifier containing braces keeps a group in one slot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from redis.crc import key_slot as _crc_slot

from redkit.errors import CrossSlotKeys, InvalidInput

__all__ = ["KeyGroup", "Keyspace", "check_same_slot", "key_slot", "validate_namespace"]

_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-:]{1,64}")
_KIND = re.compile(r"[a-z][a-z0-9_.\-]{0,31}")


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` if it can prefix keys safely, else raise :class:`InvalidInput`.

    Braces would change the hash tag, and glob characters would turn the namespace's
    ``SCAN``/ACL pattern into something that matches other applications' keys.
    """
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise InvalidInput(
            f"namespace {namespace!r} is not allowed: use 1-64 characters from "
            "letters, digits and _ . - : (no braces, spaces or glob characters)"
        )
    return namespace


def key_slot(key: str | bytes) -> int:
    """The Cluster hash slot (0-16383) of ``key``, honouring hash tags."""
    return _crc_slot(key.encode() if isinstance(key, str) else key)


def check_same_slot(keys: Iterable[str | bytes]) -> None:
    """Raise :class:`CrossSlotKeys` unless every key hashes to the same Cluster slot.

    Checked on standalone servers too, so a key-layout bug shows up in every test run rather
    than only when someone deploys on a Cluster.
    """
    keys = list(keys)
    first_key = keys[0] if keys else ""
    if type(first_key) is str:
        # Fast path, taken on every script call: keys whose hashed parts are the same text
        # hash alike, with no CRC to compute. A key that begins with the first key's text up
        # to its tag's closing brace has that tag, found without a search for braces.
        tag = _hashed_part(first_key)
        prefix = first_key[: first_key.find("{") + len(tag) + 2] if tag != first_key else None
        for key in keys:
            if type(key) is not str:
                break
            if not (prefix and key.startswith(prefix)) and _hashed_part(key) != tag:
                break
        else:
            return
    first: int | None = None
    for key in keys:
        slot = key_slot(key)
        if first is None:
            first, first_key = slot, key
        elif slot != first:
            raise CrossSlotKeys(
                f"keys {first_key!r} (slot {first}) and {key!r} (slot {slot}) are in different "
                "Cluster slots; build the keys of one operation from one KeyGroup"
            )


def _hashed_part(key: str) -> str:
    """The part of ``key`` that Redis hashes: the first non-empty ``{tag}``, else the key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


@dataclass(frozen=True, slots=True)
class KeyGroup:
    """Keys that live in one hash slot: ``<namespace>:{<kind>:<id>}:<suffix>``."""

    prefix: str
    """Everything up to and including the closing brace of the hash tag."""

    def key(self, *suffix: str | int) -> str:
        """A key of this group; ``key()`` with no suffix is the group's own base key."""
        if not suffix:
            return self.prefix
        return self.prefix + ":" + ":".join(str(part) for part in suffix)

    @property
    def slot(self) -> int:
        """The Cluster slot every key of this group hashes to."""
        return key_slot(self.prefix)


@dataclass(frozen=True, slots=True)
class Keyspace:
    """The key names of one namespace."""

    namespace: str

    def __post_init__(self) -> None:
        validate_namespace(self.namespace)

    def group(self, kind: str, *ident: str | int) -> KeyGroup:
        """A :class:`KeyGroup` for the object ``ident`` of ``kind`` (e.g. ``"lock", name``).

        ``kind`` is a fixed word chosen by redkit's code; ``ident`` may be any text (a user ID,
        a lock name). With no ``ident`` the group holds the kind's shared keys.
        """
        if not _KIND.fullmatch(kind):
            raise InvalidInput(f"key kind {kind!r} must match {_KIND.pattern}")
        tag = kind if not ident else kind + ":" + ":".join(str(part) for part in ident)
        return KeyGroup(f"{self.namespace}:{{{tag}}}")

    def key(self, *parts: str | int) -> str:
        """A plain key in the namespace, for values that no script shares with other keys."""
        if not parts:
            raise InvalidInput("a key needs at least one part")
        return self.namespace + ":" + ":".join(str(part) for part in parts)

    @property
    def pattern(self) -> str:
        """A glob that matches every key of this namespace (for ``SCAN`` and ACL rules)."""
        return self.namespace + ":*"
