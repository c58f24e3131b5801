"""Read what the source of a function or class references, once per code object.

The static half of the code fingerprint (:mod:`jules_cache.fingerprints.code` is the dynamic
half, which resolves these references on the live objects): the normalised AST of a function's
own code object or a class body, and what it names — dotted chains (``pkg.sub.helper2``,
``getattr(mod, "f")``), attribute names, imports written in the body, and the routes no walk
can follow (``eval``, computed imports, computed ``getattr``, ``sys.modules[...]``). A chain
rooted in one of the code's own locals (a parameter, an assignment, a comprehension variable…;
see :mod:`jules_cache.fingerprints._scopes`) is kept apart: only an import in the body can
give it a value, never the module global of the same name.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import sys
import textwrap
import types
from dataclasses import dataclass
from typing import Any, NamedTuple

from jules_cache.errors import FingerprintError
from jules_cache.fingerprints._scopes import local_names


class Import(NamedTuple):
    """An import written inside a function or class body."""

    bound: str | None  # the local name it binds (None: the module is only reached)
    module: str  # the module to import (relative to the package when ``level`` > 0)
    attr: str | None  # ``from module import attr``
    level: int
    top: bool  # ``import a.b.c`` binds ``a``, not ``a.b.c``


@dataclass(frozen=True)
class Source:
    """What the source of one function or class says, independent of runtime values."""

    dumps: list[str]
    chains: list[tuple[str, ...]]  # dotted references, longest only: ("mypkg", "sub", "helper2")
    local_chains: list[tuple[str, ...]]  # the same, rooted in a local of the code itself
    attrs: list[str]  # every attribute name (and constant getattr name) mentioned
    imports: list[Import]
    computed_getattrs: list[Computed]
    uses_globals: bool  # ``globals()`` is called: any name of the module may be reached
    dynamic: list[str]  # routes no walk can follow


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = node.body
        first = body[0].value if body and isinstance(body[0], ast.Expr) else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _name(obj: object) -> str:
    module = getattr(obj, "__module__", None) or "builtins"
    return f"{module}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def no_source(obj: object, why: str) -> FingerprintError:
    return FingerprintError(
        f"cannot read the source of {_name(obj)} ({why}); pass version='...' to "
        "get_or_compute / code_fingerprint and bump it whenever the code changes"
    )


def _source_trees(obj: Any) -> list[ast.AST]:
    """Return the AST node(s) defining a function or class (lambdas: see module docstring)."""
    if getattr(obj, "__name__", None) == "<lambda>":
        return _lambda_nodes(obj)
    try:
        # inspect.getsource(function) follows __wrapped__ and would hash the wrapped function's
        # source in place of the wrapper's: such a function is read through its code object.
        # A function defined in the module its __module__ names is read as itself: the same
        # source (a function's source IS its code object's) found faster, since inspect finds
        # the module of a code object by scanning every loaded module's file (~25 ms on a
        # process's first fingerprint), that of a function by its __module__.
        by_code = isinstance(obj, types.FunctionType) and not _in_own_module(obj)
        source = inspect.getsource(obj.__code__ if by_code else obj)
    except (OSError, TypeError) as exc:
        raise no_source(obj, str(exc)) from exc
    try:
        return [ast.parse(textwrap.dedent(source))]
    except SyntaxError as exc:
        raise no_source(obj, f"its source does not parse: {exc}") from exc


def _in_own_module(func: types.FunctionType) -> bool:
    """Whether ``func`` follows no ``__wrapped__`` and was compiled from its module's file."""
    if hasattr(func, "__wrapped__"):
        return False
    module = sys.modules.get(func.__module__ or "")
    return getattr(module, "__file__", None) == func.__code__.co_filename


def _lambda_nodes(func: types.FunctionType) -> list[ast.AST]:
    code = func.__code__
    try:
        file = inspect.getsourcefile(func)
    except TypeError as exc:
        raise no_source(func, str(exc)) from exc
    if file:
        linecache.checkcache(file)
    lines = linecache.getlines(file) if file else []
    if not lines:
        raise no_source(func, "no source file")
    try:
        tree = ast.parse("".join(lines))
    except SyntaxError as exc:
        raise no_source(func, f"its file does not parse: {exc}") from exc
    lambdas: list[ast.Lambda] = [
        n for n in ast.walk(tree) if isinstance(n, ast.Lambda) and n.lineno == code.co_firstlineno
    ]
    # Instructions of the body carry real column spans; RESUME/RETURN carry (0, 0).
    spans = [
        (line, col)
        for line, _, col, end in code.co_positions()
        if line and col is not None and end is not None and end > col
    ]
    if len(lambdas) > 1 and spans:
        line, col = spans[0]
        narrowed = [n for n in lambdas if _contains(n.body, line, col)]
        lambdas = narrowed or lambdas
    if not lambdas:
        raise no_source(func, "its lambda was not found in the source file")
    return [*lambdas]


def _contains(node: ast.expr, line: int, col: int) -> bool:
    start = (node.lineno, node.col_offset)
    end = (node.end_lineno or node.lineno, node.end_col_offset or 0)
    return start <= (line, col) < end


def _constant_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _is_constant_getattr(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and len(node.args) >= 2
        and _constant_str(node.args[1]) is not None
    )


class Computed(NamedTuple):
    """A ``getattr(base, <computed name>)`` call."""

    base: tuple[str, ...] | None  # the base as a chain, if it is one
    text: str  # the base's source, for the note
    local: bool  # the base chain is rooted in a local of the code


def _chain(node: ast.AST) -> tuple[str, ...] | None:
    """``a.b.c`` (or ``getattr(a.b, "c")``) as ``("a", "b", "c")``; None if not rooted in a name."""
    rooted = _rooted_chain(node)
    return rooted[1] if rooted else None


def _rooted_chain(node: ast.AST) -> tuple[ast.Name, tuple[str, ...]] | None:
    """``_chain`` and the ``ast.Name`` node it is rooted in."""
    attrs: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        elif _is_constant_getattr(node):
            assert isinstance(node, ast.Call)
            attrs.append(_constant_str(node.args[1]) or "")
            node = node.args[0]
        elif isinstance(node, ast.Name):
            return node, (node.id, *reversed(attrs))
        else:
            return None


def analyse(trees: list[ast.AST]) -> Source:
    """Read, once per code object, every reference the source makes."""
    chains: dict[tuple[str, ...], None] = {}
    local_chains: dict[tuple[str, ...], None] = {}
    attrs: dict[str, None] = {}
    imports: list[Import] = []
    computed: list[Computed] = []
    dynamic: dict[str, None] = {}
    uses_globals = False
    for tree in trees:
        local = local_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name | ast.Attribute) or _is_constant_getattr(node):
                rooted = _rooted_chain(node)
                if rooted:
                    root, chain = rooted
                    (local_chains if id(root) in local else chains)[chain] = None
                    attrs.update(dict.fromkeys(chain[1:]))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    bound = alias.asname or alias.name.partition(".")[0]
                    top = alias.asname is None and "." in alias.name
                    imports.append(Import(bound, alias.name, None, 0, top))
            elif isinstance(node, ast.ImportFrom):
                # (``import *`` is only legal at module level: its names are globals.)
                for alias in node.names:
                    bound = alias.asname or alias.name
                    module = node.module or ""
                    imports.append(Import(bound, module, alias.name, node.level, False))
            if isinstance(node, ast.Call):
                uses_globals |= _call(node, imports, computed, dynamic, local)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                target = node.targets[0] if len(node.targets) == 1 else None
                name = _imported_name(node.value)
                if isinstance(target, ast.Name) and name:  # m = importlib.import_module("x")
                    imports.append(Import(target.id, name, None, 0, False))
            elif isinstance(node, ast.Subscript) and _chain(node.value) == ("sys", "modules"):
                dynamic["sys.modules[...] lookup"] = None
    return Source(
        dumps=[ast.dump(_strip_docstrings(t), include_attributes=False) for t in trees],
        chains=_longest(chains),
        local_chains=_longest(local_chains),
        attrs=list(attrs),
        imports=imports,
        computed_getattrs=computed,
        uses_globals=uses_globals,
        dynamic=list(dynamic),
    )


def _longest(chains: dict[tuple[str, ...], None]) -> list[tuple[str, ...]]:
    """The chains that are not a prefix of another one (``a.b`` is walked as part of ``a.b.c``)."""
    prefixes = {chain[:i] for chain in chains for i in range(1, len(chain))}
    return [chain for chain in chains if chain not in prefixes]


def _call_name(node: ast.Call) -> str | None:
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def _imported_name(node: ast.Call) -> str | None:
    """The module a constant ``importlib.import_module("x")`` / ``__import__("x")`` loads."""
    if _call_name(node) not in ("import_module", "__import__") or not node.args:
        return None
    name = _constant_str(node.args[0])
    return name if name and not name.startswith(".") else None


def _call(
    node: ast.Call,
    imports: list[Import],
    computed: list[Computed],
    dynamic: dict[str, None],
    local: set[int],
) -> bool:
    """Record what a call can reach beyond plain references; True if it is ``globals()``."""
    name = _call_name(node)
    if name in ("eval", "exec"):
        dynamic[f"{name}() runs code from a string"] = None
    elif name in ("import_module", "__import__"):
        module = _imported_name(node)
        if module:
            imports.append(Import(None, module, None, 0, False))
        else:
            label = "importlib.import_module" if name == "import_module" else "__import__"
            dynamic[f"{label}() of a computed module name"] = None
    elif name == "getattr" and isinstance(node.func, ast.Name) and len(node.args) >= 2:
        base = node.args[0]
        if _constant_str(node.args[1]) is None and not (
            isinstance(base, ast.Name) and base.id in ("self", "cls")  # the class is followed
        ):
            rooted = _rooted_chain(base)
            chain, is_local = (rooted[1], id(rooted[0]) in local) if rooted else (None, False)
            computed.append(Computed(chain, ast.unparse(base), is_local))
    return name == "globals" and isinstance(node.func, ast.Name) and not node.args


_PARSED: dict[int, tuple[Any, Source | FingerprintError]] = {}
_PARSED_LIMIT = 4096


def parsed_source(obj: Any) -> Source:
    """Return the analysed source of a function or class.

    Reading and parsing source is most of the cost of a code fingerprint, so it is cached per
    code object (per class object for classes): the source a code object was compiled from
    cannot change while that code object runs (an edited file only matters once it is
    re-imported, which makes new code objects). Globals, defaults and closures are still read on
    every call. The cache holds the object itself, so its ``id`` cannot be reused meanwhile.
    """
    anchor = obj.__code__ if isinstance(obj, types.FunctionType) else obj
    cached = _PARSED.get(id(anchor))
    if cached is not None and cached[0] is anchor:
        if isinstance(cached[1], FingerprintError):
            raise cached[1]
        return cached[1]
    try:
        source: Source | FingerprintError = analyse(_source_trees(obj))
    except FingerprintError as exc:
        source = exc  # a class made at runtime stays without source: do not search again
    if len(_PARSED) >= _PARSED_LIMIT:
        _PARSED.clear()
    _PARSED[id(anchor)] = (anchor, source)
    if isinstance(source, FingerprintError):
        raise source
    return source
