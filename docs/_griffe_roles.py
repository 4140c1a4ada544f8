"""A griffe extension: the docstrings' Sphinx roles become mkdocstrings cross-references.

redkit's docstrings are written for ``help()`` and IDEs, in the reST habit
(``:class:`Queue```, ``::`` before an example). mkdocstrings reads Markdown, so each role is
rewritten to an autorefs link to the object's canonical path, resolved in the scope of the
docstring's owner as Python would resolve the name. A role that names nothing is left as a
link to what it says, so ``mkdocs build --strict`` fails on it: a broken reference is a bug in
the docstring, not something to hide.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):`(~?)([^`<>]+?)`")
# A reST literal block: "text::" at the end of a line, then an indented block.
_LITERAL = re.compile(r"(\S)::$", re.MULTILINE)
_BARE_LITERAL = re.compile(r"^(\s*)::$", re.MULTILINE)


def _resolve(obj: griffe.Object, name: str) -> str:
    """The canonical path ``name`` means in ``obj``'s scope (``name`` itself if nothing)."""
    head, _, tail = name.lstrip(".").partition(".")
    if name.startswith("."):  # a module relative to the owner's package: ``.tokens``
        module = obj.module
        package = module if module.is_package or module.parent is None else module.parent
        return _canonical(obj, f"{package.path}.{name.lstrip('.')}")
    scope: griffe.Object | None = obj
    while scope is not None:
        if head in scope.all_members:  # inherited members too: a class's mixin methods
            return _canonical(obj, f"{scope.all_members[head].path}{'.' + tail if tail else ''}")
        try:
            found = scope.resolve(head)
        except griffe.NameResolutionError:
            scope = scope.parent
            continue
        return _canonical(obj, f"{found}.{tail}" if tail else found)
    return name


def _canonical(obj: griffe.Object, path: str) -> str:
    try:
        return str(obj.modules_collection[path].canonical_path)
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return path


def _rendered(obj: griffe.Object, path: str) -> bool:
    """Whether the API reference shows ``path``: private names and names a module leaves
    out of its ``__all__`` get no page anchor, so a role naming them stays plain code."""
    try:
        target = obj.modules_collection[path]
    except KeyError:
        return True  # unknown: let the strict build say so
    parts = path.split(".")
    if any(part.startswith("_") and not part.startswith("__") for part in parts):
        return False
    parent = target.parent
    if parent is not None and parent.is_module and parent.exports is not None:
        return target.name in parent.exports
    return True


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`name``` to ``[`name`][canonical.path]`` in every docstring."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is None:
                continue
            text = obj.docstring.value

            def link(match: re.Match[str], owner: griffe.Object = obj) -> str:
                short, name = match.group(1), match.group(2).strip()
                shown = name.rsplit(".", 1)[-1] if short else name.lstrip(".")
                path = _resolve(owner, name)
                return f"[`{shown}`][{path}]" if _rendered(owner, path) else f"`{shown}`"

            text = _ROLE.sub(link, text)
            text = _BARE_LITERAL.sub("", text)
            text = _LITERAL.sub(r"\1:", text)
            obj.docstring.value = text


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    found = [obj]
    for member in obj.members.values():
        if member.is_alias:
            continue
        assert isinstance(member, griffe.Object)
        found += _walk(member)
    return found
