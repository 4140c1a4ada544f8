#!/usr/bin/env python
"""Generate redkit's sync API (``src/redkit/_sync``) and its tests (``tests/sync``) from the
async source, by rewriting the syntax tree (the approach of psycopg 3; no code of it).

    python tools/async_to_sync.py          # regenerate every module in UNITS
    python tools/async_to_sync.py --check  # regenerate in memory, diff, exit 1 on a difference

What the rewrite does, to each module of UNITS:

- ``async def`` / ``async with`` / ``async for`` lose ``async``; ``await x`` becomes ``x``;
- imports follow MODULES (``redis.asyncio`` -> ``redis``, ``redkit.client`` ->
  ``redkit._sync.client``, ...); ``import asyncio`` becomes the compat module
  ``redkit._sync._compat`` and ``asyncio.X`` its threading twin ``_compat.X`` (ASYNCIO lists
  the twins; any other ``asyncio.X`` is an error: mark that code instead);
  ``asyncio.shield(f())`` is ``f()``; in a test, ``asyncio.gather(*(f(x) for x in xs))``
  becomes ``_compat.gather_threads(lambda x: f(x), xs)``: the calls run at once, on threads;
- docstrings follow DOCSTRINGS (``await rk.x()`` in an example reads ``rk.x()``);
- identifiers follow NAMES (``__aenter__`` -> ``__enter__``, ``aclose`` -> ``close``, ...);
  ``Awaitable[T]`` and ``Coroutine[Any, Any, T]`` become ``T``;
- the markers of :mod:`redkit._codegen`: ``if IS_ASYNC: a else: b`` keeps ``b``
  (``if not IS_ASYNC: a`` keeps ``a``, and when ``a`` ends in ``return`` drops the rest of
  the block: an early sync exit; ``if IS_ASYNC and c: a else: b`` keeps ``b``;
  ``x if IS_ASYNC else y`` is ``y``), and a definition
  decorated ``@async_only`` is dropped;
- in library modules, a top-level definition that the rewrite leaves as it was, and that
  names nothing the rewrite changed, is not copied but imported from the async module: the
  dataclasses, validators and reply parsers are one object for both APIs (``redkit.Session``
  *is* ``redkit.sync.Session``), and only the code that does I/O is generated;
- the result is marked generated at the top, cleaned (unused imports, import order) and
  formatted with ruff, with the project's settings.

The run fails if a rule of MODULES, NAMES or ASYNCIO was not used by any module (a stale
rule hides a rename that no longer happens), if an ``await`` or ``asyncio`` survives, or if a
file under the generated directories is not one this script writes.
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import io
import re
import subprocess
import sys
import tokenize
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Unit:
    source: str
    """Path of the async module, from the project's root."""
    target: str
    """Path of the generated module."""
    library: bool = True
    """Share untouched definitions with the async module (tests copy everything: a test
    function imported into a module would be collected twice)."""

    @property
    def source_module(self) -> str:
        return _module_name(self.source)

    @property
    def target_module(self) -> str:
        return _module_name(self.target)


def _module_name(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    if parts[0] in ("src", "tests"):
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


# In dependency order: a module's imports of generated modules are generated before it.
UNITS = [
    Unit("src/redkit/connection.py", "src/redkit/_sync/connection.py"),
    Unit("src/redkit/evalsha.py", "src/redkit/_sync/evalsha.py"),
    Unit("src/redkit/client.py", "src/redkit/_sync/client.py"),
    Unit("src/redkit/sessions/store.py", "src/redkit/_sync/sessions/store.py"),
    Unit("src/redkit/ratelimit/limiter.py", "src/redkit/_sync/ratelimit/limiter.py"),
    Unit("src/redkit/cache/core.py", "src/redkit/_sync/cache/core.py"),
    Unit("src/redkit/locks/_common.py", "src/redkit/_sync/locks/_common.py"),
    Unit("src/redkit/locks/lock.py", "src/redkit/_sync/locks/lock.py"),
    Unit("src/redkit/locks/semaphore.py", "src/redkit/_sync/locks/semaphore.py"),
    Unit("src/redkit/locks/rwlock.py", "src/redkit/_sync/locks/rwlock.py"),
    Unit("src/redkit/locks/admin.py", "src/redkit/_sync/locks/admin.py"),
    Unit("src/redkit/jobs/queue.py", "src/redkit/_sync/jobs/queue.py"),
    Unit("src/redkit/notify/bus.py", "src/redkit/_sync/notify/bus.py"),
    Unit("tests/sessions/test_store.py", "tests/sync/sessions/test_store.py", library=False),
    Unit("tests/ratelimit/test_limiter.py", "tests/sync/ratelimit/test_limiter.py", library=False),
    Unit("tests/cache/test_cache.py", "tests/sync/cache/test_cache.py", library=False),
    Unit("tests/locks/test_lock.py", "tests/sync/locks/test_lock.py", library=False),
    Unit("tests/locks/test_semaphore.py", "tests/sync/locks/test_semaphore.py", library=False),
    Unit("tests/jobs/helpers.py", "tests/sync/jobs/helpers.py", library=False),
    Unit("tests/jobs/test_queue.py", "tests/sync/jobs/test_queue.py", library=False),
]

GENERATED_DIRS = ["src/redkit/_sync", "tests/sync"]
"""Every ``.py`` here is generated, except HAND_WRITTEN."""
HAND_WRITTEN = {
    "src/redkit/_sync/__init__.py",
    "src/redkit/_sync/_compat.py",
    "src/redkit/_sync/sessions/__init__.py",
    "src/redkit/_sync/ratelimit/__init__.py",
    "src/redkit/_sync/cache/__init__.py",
    "src/redkit/_sync/locks/__init__.py",
    "src/redkit/_sync/jobs/__init__.py",
    "src/redkit/_sync/notify/__init__.py",
    "tests/sync/__init__.py",
    "tests/sync/conftest.py",
    "tests/sync/test_compat.py",
    "tests/sync/test_notifications.py",
    "tests/sync/test_threads.py",
    "tests/sync/sessions/__init__.py",
    "tests/sync/ratelimit/__init__.py",
    "tests/sync/cache/__init__.py",
    "tests/sync/locks/__init__.py",
    "tests/sync/jobs/__init__.py",
}

MODULES = {
    "redis.asyncio": "redis",
    "redis.asyncio.cluster": "redis.cluster",
    "redis.asyncio.retry": "redis.retry",
    "redis.asyncio.sentinel": "redis.sentinel",
    "redkit": "redkit.sync",
    "redkit.connection": "redkit._sync.connection",
    "redkit.evalsha": "redkit._sync.evalsha",
    "redkit.client": "redkit._sync.client",
    "redkit.sessions": "redkit.sync",
    "redkit.ratelimit": "redkit.sync",
    "redkit.cache": "redkit.sync",
    "redkit.locks": "redkit.sync",
    "redkit.locks._common": "redkit._sync.locks._common",
    "redkit.locks.admin": "redkit._sync.locks.admin",
    "redkit.locks.rwlock": "redkit._sync.locks.rwlock",
    "redkit.jobs": "redkit.sync",
    "redkit.jobs.queue": "redkit._sync.jobs.queue",
    "jobs.helpers": "sync.jobs.helpers",
    "redkit.notify": "redkit.sync",
}
"""Imports: an async module -> its sync counterpart (exact names, not prefixes)."""

NAMES = {
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aclose": "close",
    "AsyncIterator": "Iterator",
    "_Connecting": "Redkit",
}
"""Identifiers (names, attributes, definitions, parameters, imported names)."""

DOCSTRINGS = {
    r"\bawait\s+": "",
    r"\basync (with|for)\b": r"\1",
    r"redis-py asyncio client": "redis-py sync client",
}
"""Docstrings (and attribute docstrings), as regular expressions: an example of the async
API (``await rk.x()``) reads as the sync call (``rk.x()``)."""

ASYNCIO = {
    "Event",
    "Semaphore",
    "TimerHandle",
    "current_task",
    "gather",
    "get_running_loop",
    "sleep",
    "to_thread",
}
"""``asyncio.X`` that ``redkit._sync._compat`` has a twin of."""

COMPAT_MODULE = "redkit._sync._compat"
MARKERS_MODULE = "redkit._codegen"

HEADER = (
    "# Generated by tools/async_to_sync.py from {source}: do not edit.\n"
    "# Change the async source and run `make sync` (CI fails if this file is stale).\n"
)


class GenerationError(Exception):
    pass


class Rules:
    """The rename rules and how often each was applied, over all units."""

    def __init__(self) -> None:
        self.used: Counter[str] = Counter()

    def module(self, name: str | None) -> str | None:
        if name is not None and name in MODULES:
            self.used[f"module {name}"] += 1
            return MODULES[name]
        return name

    def name(self, name: str) -> str:
        if name in NAMES:
            self.used[f"name {name}"] += 1
            return NAMES[name]
        return name

    def unused(self) -> list[str]:
        rules = [f"module {m}" for m in MODULES] + [f"name {n}" for n in NAMES]
        rules += [f"asyncio.{a}" for a in ASYNCIO] + ["asyncio.shield()"]
        rules += ["asyncio.gather(*genexp) in tests"]
        rules += ["type Awaitable", "type Coroutine"]
        rules += [f"docstring {text!r}" for text in DOCSTRINGS]
        return [rule for rule in rules if not self.used[rule]]


def _exits(body: list[ast.stmt]) -> bool:
    """Does ``body`` always end in ``return`` or ``raise``?"""
    last = body[-1]
    if isinstance(last, ast.Return | ast.Raise):
        return True
    if isinstance(last, ast.With | ast.AsyncWith):
        return _exits(last.body)
    if isinstance(last, ast.If):
        return bool(last.orelse) and _exits(last.body) and _exits(last.orelse)
    return False


def _is_marker(node: ast.expr, name: str) -> bool:
    return (isinstance(node, ast.Name) and node.id == name) or (
        isinstance(node, ast.Attribute) and node.attr == name
    )


def _async_only(node: ast.stmt) -> bool:
    decorators = getattr(node, "decorator_list", [])
    return any(_is_marker(d, "async_only") for d in decorators)


class ToSync(ast.NodeTransformer):
    """The rewrite of one module (see the module's docstring)."""

    def __init__(self, rules: Rules, where: str, *, threads: bool = False) -> None:
        self.rules = rules
        self.where = where
        self.threads = threads

    def fail(self, node: ast.AST, message: str) -> GenerationError:
        return GenerationError(f"{self.where}:{getattr(node, 'lineno', '?')}: {message}")

    # -- statements lists: markers ---------------------------------------------------------

    def generic_visit(self, node: ast.AST) -> ast.AST:
        for field, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                setattr(node, field, self.statements(value) or [ast.Pass()])
            elif isinstance(value, list):
                items: list[ast.AST] = []
                for item in value:
                    if not isinstance(item, ast.AST):
                        items.append(item)  # the None of a keyword-only arg without default
                        continue
                    new = self.visit(item)
                    if new is not None:
                        items.extend(new if isinstance(new, list) else [new])
                setattr(node, field, items)
            elif isinstance(value, ast.AST):
                setattr(node, field, self.visit(value))
        return node

    def statements(self, body: Iterable[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in body:
            if _async_only(stmt):
                continue
            if isinstance(stmt, ast.If) and (
                _is_marker(stmt.test, "IS_ASYNC")
                or (
                    isinstance(stmt.test, ast.BoolOp)
                    and isinstance(stmt.test.op, ast.And)
                    and _is_marker(stmt.test.values[0], "IS_ASYNC")
                )
            ):
                out.extend(self.statements(stmt.orelse))
                continue
            if (
                isinstance(stmt, ast.If)
                and isinstance(stmt.test, ast.UnaryOp)
                and isinstance(stmt.test.op, ast.Not)
                and _is_marker(stmt.test.operand, "IS_ASYNC")
            ):
                out.extend(self.statements(stmt.body))
                if _exits(stmt.body):
                    break  # an early sync exit: what follows is the async version
                continue
            if isinstance(stmt, ast.ImportFrom) and stmt.module == MARKERS_MODULE:
                continue  # the markers are gone
            new = self.visit(stmt)
            if new is None:
                continue
            out.extend(new if isinstance(new, list) else [new])
        return out

    # -- docstrings --------------------------------------------------------------------------

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        value = node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            text = value.value
            for pattern, replacement in DOCSTRINGS.items():
                text, count = re.subn(pattern, replacement, text)
                self.rules.used[f"docstring {pattern!r}"] += count
            node.value = ast.copy_location(ast.Constant(text), value)
            return node
        return self.generic_visit(node)

    # -- async syntax ----------------------------------------------------------------------

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        sync = ast.FunctionDef(**{f: getattr(node, f) for f in node._fields})
        ast.copy_location(sync, node)
        return self.visit_FunctionDef(sync)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.name = self.rules.name(node.name)
        return self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.name = self.rules.name(node.name)
        return self.generic_visit(node)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        return self.generic_visit(ast.copy_location(ast.With(node.items, node.body), node))

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        sync = ast.For(node.target, node.iter, node.body, node.orelse)
        return self.generic_visit(ast.copy_location(sync, node))

    def _expr(self, node: ast.expr) -> ast.AST:
        new: ast.AST = self.visit(node)
        return new

    def visit_IfExp(self, node: ast.IfExp) -> ast.AST:
        if _is_marker(node.test, "IS_ASYNC"):
            return self._expr(node.orelse)
        return self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        # Awaitable[T] and Coroutine[Any, Any, T] are T in the sync API.
        for name, position in (("Awaitable", None), ("Coroutine", 2)):
            if isinstance(node.value, ast.Name) and node.value.id == name:
                self.rules.used[f"type {name}"] += 1
                inner = node.slice
                if position is not None:
                    assert isinstance(inner, ast.Tuple), ast.dump(node)
                    inner = inner.elts[position]
                return self._expr(inner)
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "asyncio"
            and func.attr == "shield"
        ):
            # asyncio.shield(call()) is call(): a thread is not cancelled at a call.
            self.rules.used["asyncio.shield()"] += 1
            return self._expr(node.args[0])
        if (
            self.threads
            and isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "asyncio"
            and func.attr == "gather"
            and not node.keywords
            and len(node.args) == 1
            and isinstance(node.args[0], ast.Starred)
            and isinstance(node.args[0].value, ast.GeneratorExp)
            and len(node.args[0].value.generators) == 1
            and not node.args[0].value.generators[0].ifs
            and isinstance(node.args[0].value.generators[0].target, ast.Name)
        ):
            # In a test, asyncio.gather(*(f(x) for x in xs)) runs the calls at once, so it
            # is run with threads: _compat.gather_threads(lambda x: f(x), xs).
            self.rules.used["asyncio.gather(*genexp) in tests"] += 1
            genexp = node.args[0].value
            loop = genexp.generators[0]
            assert isinstance(loop.target, ast.Name)
            params = ast.arguments([], [ast.arg(loop.target.id)], None, [], [], None, [])
            call = ast.Call(
                ast.Attribute(ast.Name("_compat", ast.Load()), "gather_threads", ast.Load()),
                [ast.Lambda(params, genexp.elt), loop.iter],
                [],
            )
            return self.generic_visit(ast.copy_location(call, node))
        return self.generic_visit(node)

    def visit_Await(self, node: ast.Await) -> ast.AST:
        return self._expr(node.value)

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        node.is_async = 0
        return self.generic_visit(node)

    # -- names -----------------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id == "asyncio":
            raise self.fail(node, "asyncio is used here other than as asyncio.X")
        if node.id == "IS_ASYNC":
            raise self.fail(node, "IS_ASYNC outside `if IS_ASYNC:` / `if not IS_ASYNC:`")
        node.id = self.rules.name(node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id == "asyncio":
            if node.attr not in ASYNCIO:
                raise self.fail(
                    node,
                    f"asyncio.{node.attr} has no sync twin: add one to {COMPAT_MODULE} and "
                    "ASYNCIO, or put this code under `if IS_ASYNC:`",
                )
            self.rules.used[f"asyncio.{node.attr}"] += 1
            return ast.copy_location(
                ast.Attribute(ast.Name("_compat", ast.Load()), node.attr, node.ctx), node
            )
        node.attr = self.rules.name(node.attr)
        return self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self.rules.name(node.arg)
        return self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> ast.AST:
        if node.arg is not None:
            node.arg = self.rules.name(node.arg)
        return self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        # A quoted annotation or type alias ("Redis | RedisCluster"): its names are renamed
        # too. Only strings that parse as a type expression of known names are touched.
        if isinstance(node.value, str) and _looks_like_type(node.value):
            tree = ast.parse(node.value, mode="eval")
            renamed = ToSync(self.rules, self.where).visit(tree)
            text = ast.unparse(renamed)
            if text != ast.unparse(ast.parse(node.value, mode="eval")):
                return ast.copy_location(ast.Constant(text), node)
        return node

    # -- imports ---------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> ast.AST:
        out: list[ast.stmt] = []
        for alias in node.names:
            if alias.name == "asyncio":
                out.append(ast.ImportFrom("redkit._sync", [ast.alias("_compat")], 0))
                continue
            new = self.rules.module(alias.name)
            if new is not None and new != alias.name:
                # `import redkit` -> `import redkit.sync as redkit`: the code keeps its names.
                out.append(ast.Import([ast.alias(new, alias.asname or alias.name)]))
            else:
                out.append(ast.Import([alias]))
        return out  # type: ignore[return-value]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        submodules = [a for a in node.names if _is_module(f"{node.module}.{a.name}")]
        if submodules and node.module in MODULES:
            # `from redkit.ratelimit import metrics`: a module, the same for both APIs.
            rest = [a for a in node.names if a not in submodules]
            kept = ast.copy_location(ast.ImportFrom(node.module, submodules, node.level), node)
            if not rest:
                return kept
            node.names = rest
            return [kept, self.visit_ImportFrom(node)]  # type: ignore[return-value]
        node.module = self.rules.module(node.module)
        for alias in node.names:
            name = self.rules.name(alias.name)
            if name != alias.name and alias.asname is None:
                alias.name = name
        return node


def _is_module(name: str) -> bool:
    base = ROOT / "src" / Path(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


_TYPE_NODES = (
    ast.Expression,
    ast.Name,
    ast.Attribute,
    ast.Subscript,
    ast.BinOp,
    ast.BitOr,
    ast.Tuple,
    ast.Load,
    ast.Constant,
)


def _looks_like_type(text: str) -> bool:
    if not text.isascii() or not text.strip():
        return False
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    return all(isinstance(n, _TYPE_NODES) for n in ast.walk(tree)) and any(
        isinstance(n, ast.Name) for n in ast.walk(tree)
    )


# -- sharing untouched definitions -----------------------------------------------------------


def _bound(stmt: ast.stmt) -> set[str]:
    """Module-level names that ``stmt`` binds."""
    names: set[str] = set()
    for node in [stmt, *_nested_statements(stmt)]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def _nested_statements(stmt: ast.stmt) -> Iterator[ast.stmt]:
    """Statements inside ``if``/``try`` blocks at module level (not inside definitions)."""
    if isinstance(stmt, ast.If | ast.Try):
        blocks = [stmt.body, stmt.orelse]
        if isinstance(stmt, ast.Try):
            blocks += [stmt.finalbody, *(h.body for h in stmt.handlers)]
        for block in blocks:
            for inner in block:
                yield inner
                yield from _nested_statements(inner)


def _used(stmt: ast.stmt) -> set[str]:
    """Every name ``stmt`` mentions (locals too: over-counting only makes sharing rarer)."""
    names: set[str] = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _looks_like_type(node.value)
        ):
            tree = ast.parse(node.value, mode="eval")
            names.update(n.id for n in ast.walk(tree) if isinstance(n, ast.Name))
    return names


def _same(a: ast.AST, b: Iterable[ast.AST]) -> bool:
    b = list(b)
    return len(b) == 1 and ast.dump(a) == ast.dump(b[0])


def _shareable(stmt: ast.stmt) -> str | None:
    """The name a definition binds, if it may be imported rather than copied."""
    if isinstance(stmt, ast.FunctionDef | ast.ClassDef):
        name = stmt.name
    elif (
        isinstance(stmt, ast.Assign)
        and len(stmt.targets) == 1
        and isinstance(stmt.targets[0], ast.Name)
    ):
        name = stmt.targets[0].id
    elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
        name = stmt.target.id
    else:
        return None
    return None if name.startswith("__") else name


def convert(
    unit: Unit, source: str, rules: Rules, shared: dict[str, set[str]]
) -> tuple[ast.Module, set[str]]:
    """The sync module of ``unit`` and the names it shares with the async one."""
    tree = ast.parse(source, filename=unit.source)
    pairs: list[tuple[ast.stmt, list[ast.stmt]]] = []
    transformer = ToSync(rules, unit.source, threads=not unit.library)
    for stmt in tree.body:
        pairs.append((stmt, transformer.statements([copy.deepcopy(stmt)])))

    # Names whose sync meaning differs from the async one, to a fixpoint: a definition that
    # mentions one of them is generated, and its own name then differs too.
    differ: set[str] = set()
    for old, new in pairs:
        if isinstance(old, ast.Import | ast.ImportFrom | ast.If | ast.Try):
            for inner in [old, *_nested_statements(old)]:
                if not isinstance(inner, ast.Import | ast.ImportFrom):
                    continue
                mapped = [n for n in new if isinstance(n, ast.Import | ast.ImportFrom)]
                if isinstance(inner, ast.ImportFrom) and inner.module in MODULES:
                    target = MODULES[inner.module]
                    for alias in inner.names:
                        if _is_module(f"{inner.module}.{alias.name}"):
                            continue  # a submodule, imported unchanged
                        if alias.name not in shared.get(target, set()):
                            differ.add(alias.asname or alias.name)
                elif isinstance(inner, ast.Import) and any(
                    a.name in MODULES or a.name == "asyncio" for a in inner.names
                ):
                    differ.update(a.asname or a.name.split(".")[0] for a in inner.names)
                elif isinstance(old, ast.Import | ast.ImportFrom) and not _same(old, mapped):
                    differ.update(_bound(old))
    changed = True
    while changed:
        changed = False
        for old, new in pairs:
            if isinstance(old, ast.Import | ast.ImportFrom):
                continue
            bound = _bound(old) - differ
            if bound and (not _same(old, new) or _used(old) & differ):
                differ |= bound
                changed = True

    body: list[ast.stmt] = []
    sharing: set[str] = set()
    for old, new in pairs:
        name = _shareable(old) if unit.library else None
        if name is not None and name not in differ and _same(old, new):
            sharing.add(name)
            imported = ast.ImportFrom(unit.source_module, [ast.alias(name, name)], 0)
            body.append(imported)
        else:
            body.extend(new)
    module = ast.Module(body, type_ignores=[])
    _check_no_async_left(module, unit.source)
    _prune_all(module)
    # What the module's importers may take as shared: its shared definitions and what it
    # imported unchanged (a dataclass re-exported by a package's __init__, say).
    exported = {n for stmt in body for n in _bound(stmt)} - differ
    return module, sharing | exported


def _check_no_async_left(module: ast.Module, where: str) -> None:
    for node in ast.walk(module):
        if isinstance(node, ast.Await | ast.AsyncFunctionDef | ast.AsyncWith | ast.AsyncFor):
            raise GenerationError(f"{where}:{node.lineno}: async syntax survived the rewrite")
        if isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name and (name == "redis.asyncio" or name.startswith("redis.asyncio.")):
                    raise GenerationError(f"{where}:{node.lineno}: still imports {name}")


def _prune_all(module: ast.Module) -> None:
    """Drop from ``__all__`` the names the sync module no longer has (async-only ones)."""
    bound = {n for stmt in module.body for n in _bound(stmt)}
    for stmt in module.body:
        if (
            isinstance(stmt, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in stmt.targets)
            and isinstance(stmt.value, ast.List)
        ):
            stmt.value.elts = [
                e
                for e in stmt.value.elts
                if not (isinstance(e, ast.Constant) and e.value not in bound)
            ]


# -- output ----------------------------------------------------------------------------------


def _ruff(args: list[str], text: str, path: str) -> str:
    ruff = Path(sys.executable).parent / "ruff"
    command = [str(ruff) if ruff.exists() else "ruff", *args, "--stdin-filename", path, "-"]
    done = subprocess.run(
        command, input=text, capture_output=True, text=True, cwd=ROOT, check=False
    )
    if done.returncode not in (0, 1) or not done.stdout:
        raise GenerationError(f"ruff {' '.join(args)} failed on {path}:\n{done.stderr}")
    return done.stdout


_PRAGMA = re.compile(
    r"#\s*(type:\s*ignore(?:\[[^\]]*\])?|noqa(?::\s*[A-Z0-9]+(?:,\s*[A-Z0-9]+)*)?)"
)


def _pragmas(source: str) -> dict[int, str]:
    """Line -> its ``# type: ignore[...]`` / ``# noqa`` comment, in the async source."""
    found: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            match = _PRAGMA.search(token.string)
            if match:
                found[token.start[0]] = "# " + match.group(1)
    return found


_COMPOUND = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.If,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.With,
    ast.AsyncWith,
    ast.Try,
    ast.Match,
)


class _Unparser(ast._Unparser):  # type: ignore[name-defined,misc]
    """``ast.unparse`` that keeps the pragma comments of simple statements: ``ast`` drops
    comments, and a ``# type: ignore`` of the async source is as needed in the sync one."""

    def __init__(self, pragmas: dict[int, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pragmas = pragmas or {}  # an f-string's inner unparser gets none

    def traverse(self, node: Any) -> None:
        super().traverse(node)
        if isinstance(node, ast.stmt) and not isinstance(node, _COMPOUND):
            first, last = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
            if first is not None and last is not None:
                found = [self.pragmas[n] for n in range(first, last + 1) if n in self.pragmas]
                if found:
                    self.write("  " + found[-1])


def render(unit: Unit, module: ast.Module, source: str) -> str:
    text = HEADER.format(source=unit.source) + _Unparser(_pragmas(source)).visit(module) + "\n"
    # The project's fixes for what the rewrite leaves behind (unused imports, their order,
    # the parentheses ast.unparse puts around a generator argument), then its format.
    text = _ruff(["check", "--fix", "--exit-zero", "--quiet"], text, unit.target)
    return _ruff(["format", "--quiet"], text, unit.target)


def generate() -> dict[str, str]:
    """Path -> text of every generated module."""
    rules = Rules()
    shared: dict[str, set[str]] = {}
    out: dict[str, str] = {}
    converted = []
    for unit in UNITS:
        source = (ROOT / unit.source).read_text(encoding="utf-8")
        module, sharing = convert(unit, source, rules, shared)
        shared[unit.target_module] = sharing
        converted.append((unit, module, source))
    unused = rules.unused()
    if unused:
        raise GenerationError(
            "rename rules used by no module (remove them, or the rewrite they stood for "
            f"stopped happening): {', '.join(unused)}"
        )
    # ruff runs twice per module, in a process of its own: a few at once.
    with ThreadPoolExecutor(4) as pool:
        texts = pool.map(lambda item: render(*item), converted)
        for (unit, _module, _source), text in zip(converted, texts, strict=True):
            out[unit.target] = text
    return out


def strays(expected: Iterable[str]) -> list[str]:
    """Files in the generated directories that this script does not write."""
    known = set(expected) | HAND_WRITTEN
    found = {
        str(path.relative_to(ROOT))
        for directory in GENERATED_DIRS
        for path in (ROOT / directory).rglob("*.py")
    }
    return sorted(found - known)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="diff against the files; exit 1 on a difference"
    )
    args = parser.parse_args(argv)
    try:
        generated = generate()
    except GenerationError as exc:
        print(f"async_to_sync: {exc}", file=sys.stderr)
        return 2
    stale: list[str] = []
    for path, text in generated.items():
        target = ROOT / path
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current == text:
            continue
        if args.check:
            stale.append(path)
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"{path} (committed)",
                    f"{path} (generated)",
                )
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    extra = strays(generated)
    if extra:
        print(
            "async_to_sync: not generated by this script (add it to UNITS or HAND_WRITTEN, "
            f"or delete it): {', '.join(extra)}",
            file=sys.stderr,
        )
        return 1
    if stale:
        print(
            f"async_to_sync: {len(stale)} generated module(s) differ from their async source; "
            "run `make sync` and commit the result",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
