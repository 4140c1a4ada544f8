"""Key names: a namespace prefix, and hash tags so that the keys of one operation share a slot.

Every key redkit writes starts with ``<namespace>:`` so one application (or one tenant of a
shared server, given its own ACL user limited to ``~<namespace>:*``) owns a prefix. Keys that one
script touches together are built from one :class:`KeyGroup`::

    group = keyspace.group("lock", "db:p1")
    group.key("owner")   # 'rk:{lock:db:p1}:owner'
    group.key("fence")   # 'rk:{lock:db:p1}:fence'

On a Cluster only the text between the first ``{`` and the next ``}`` is hashed. The tag always
starts with the group's kind, so it is never empty, and every key of a group shares its text up
to the tag's closing brace: even an identifier containing braces keeps a group in one slot.

Names that become part of keys are checked here, by one :class:`NameRule` per kind of name, so
every primitive refuses a bad name with the same clear :class:`~redkit.errors.InvalidInput`:

=========================================  ======================================  ==========
name                                       allowed characters                      length
=========================================  ======================================  ==========
namespace (``connect(namespace=)``)        letters, digits and ``_ . - :``         1-64
queue (``rk.queue(name)``)                 letters, digits and ``_ . - :``         1-128
cache, session store (``name=``)           letters, digits and ``_ . -``           1-64
lock, semaphore, read-write lock           anything but whitespace and control     1-512
                                           characters
=========================================  ======================================  ==========

Letters and digits are ASCII. Cache and session store names are a segment of their keys, so
they hold no ``:`` (a store ``a:u`` would share keys with the store ``a``). Lock names are often
built from data (``f"deploy:{project_id}"``), so they allow any visible text; braces in them are
safe, as said above.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from redis.crc import key_slot as _crc_slot

from redkit.errors import CrossSlotKeys, InvalidInput

__all__ = [
    "CACHE_NAME",
    "LOCK_NAME",
    "NAMESPACE",
    "QUEUE_NAME",
    "SESSION_STORE_NAME",
    "KeyGroup",
    "Keyspace",
    "NameRule",
    "check_same_slot",
    "key_slot",
    "validate_namespace",
]

_KIND = re.compile(r"[a-z][a-z0-9_.\-]{0,31}")


@dataclass(frozen=True, slots=True)
class NameRule:
    """The characters and length a kind of name (that becomes part of keys) may have."""

    characters: str
    """A regex character class of the allowed characters, e.g. ``A-Za-z0-9_``."""
    allowed: str
    """The same in words, for the error message."""
    max_length: int
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pattern = re.compile(f"[{self.characters}]{{1,{self.max_length}}}")
        object.__setattr__(self, "_pattern", pattern)

    def check(self, value: object, what: str) -> str:
        """``value`` if it is a name of this kind, else :class:`InvalidInput` saying why."""
        if isinstance(value, str) and self._pattern.fullmatch(value):
            return value
        if not isinstance(value, str):
            problem = f"is of type {type(value).__name__}, not a string"
        elif not value:
            problem = "is empty"
        elif len(value) > self.max_length:
            problem = f"is {len(value):,} characters long"
        else:
            one = re.compile(f"[{self.characters}]")
            bad = sorted({c for c in value if not one.fullmatch(c)})
            problem = "holds " + " ".join(repr(c) for c in bad[:5])
        shown = repr(value[:50] + "..." if isinstance(value, str) and len(value) > 50 else value)
        raise InvalidInput(
            f"{what} {shown[:80]} is not allowed: it {problem}; use 1-{self.max_length} "
            f"{self.allowed}"
        )


NAMESPACE = NameRule(r"A-Za-z0-9_.\-:", "characters from letters, digits and _ . - :", 64)
"""Namespaces: braces would change the hash tag, and glob characters would turn the
namespace's ``SCAN``/ACL pattern into one that matches other applications' keys."""
QUEUE_NAME = NameRule(r"A-Za-z0-9_.\-:", "characters from letters, digits and _ . - :", 128)
CACHE_NAME = NameRule(r"A-Za-z0-9_.\-", "characters from letters, digits and _ . - (no :)", 64)
SESSION_STORE_NAME = CACHE_NAME
LOCK_NAME = NameRule(r"^\s\x00-\x1f\x7f-\x9f", "characters but whitespace and control ones", 512)


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` if it can prefix keys safely, else raise :class:`InvalidInput`."""
    return NAMESPACE.check(namespace, "namespace")


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
    """Every key of the group begins with this: the namespace and the hash tag up to its
    closing brace (a primitive may extend it, as a named session store does)."""

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
