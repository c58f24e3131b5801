"""Fingerprints of feature code: a changed function (or helper it calls) is a new key.

What is hashed, per followed function or class ("own digest"):

* its normalised AST: ``ast.dump(tree, include_attributes=False)`` of its source after removing
  docstrings — comments, formatting, blank lines and line numbers do not matter;
* default and keyword-default argument values and closure cell values (canonicalised with
  :func:`~jules_cache.config_fingerprint.canonical_config`; functions, classes and modules among
  them are followed or recorded as below). A default or closure value that cannot be
  canonicalised raises FingerprintError: pass ``version=`` or make it canonicalisable;
* every global name the source mentions (``Name`` ids and attribute names) that resolves in the
  function's globals: constants are canonicalised; user functions/classes are followed; other
  modules, functions and classes are recorded by name and, for third-party packages, their
  installed version (a Polars upgrade is a new key). Globals that cannot be canonicalised (a
  logger, a lock) are recorded by type only — mutable global state is not tracked.

"User code" is any module with a source file outside the standard library and site-packages
(including ``__main__`` and editable installs). User code is followed transitively (cycle-safe);
stdlib and third-party code are not. The final digest combines the root's name, every followed
function's own digest (sorted by qualified name) and the recorded package versions.

``version=`` replaces all of that: the digest then derives only from the feature's qualified
name and the version string, so two different features with the same version never collide.

Special callables: ``functools.partial`` hashes its func plus canonicalised args/keywords; a
bound method hashes its function plus its ``__self__`` state; a callable object hashes its class
(all methods) plus its state (``canonical_config(obj)``, else its ``vars()``). A lambda is found
by parsing its whole source file and picking the ``Lambda`` node(s) at its line and column; if
several match, all are hashed (a false miss at worst). Functions without source (builtins,
C extensions, REPL definitions) raise FingerprintError asking for ``version=``.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import inspect
import json
import linecache
import site
import sys
import sysconfig
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from jules_cache.config_fingerprint import canonical_config
from jules_cache.errors import FingerprintError

SCHEME = "xxh3_128:v1"


@dataclass(frozen=True)
class CodeFingerprint:
    """The code digest of a feature and the own digest of each function it followed."""

    digest: str
    functions: dict[str, str]


def feature_name(func) -> str:
    """Return the module-qualified name of a feature, e.g. ``'mypkg.features.make_bars'``.

    A partial is named after its function, a bound method after its function
    (``mod.Class.method``), a callable object after its class, a lambda by its qualname
    (``mod.outer.<locals>.<lambda>``).
    """
    while isinstance(func, functools.partial):
        func = func.func
    if isinstance(func, types.MethodType):
        func = func.__func__
    if not hasattr(func, "__qualname__") and callable(func):
        func = type(func)
    module = getattr(func, "__module__", None) or "builtins"
    return f"{module}.{getattr(func, '__qualname__', type(func).__qualname__)}"


def code_fingerprint(func, version: str | None = None) -> CodeFingerprint:
    """Fingerprint ``func`` and the user code it calls; see the module docstring.

    ``version`` overrides source inspection. Raises FingerprintError when the source is not
    available or a default/closure value cannot be canonicalised.
    """
    if not callable(func):
        raise FingerprintError(f"compute function must be callable, got {type(func)!r}")
    name = feature_name(func)
    if version is not None:
        own = _hex(b"version\0" + name.encode() + b"\0" + str(version).encode())
        return CodeFingerprint(digest=f"{SCHEME}:{own}", functions={name: own})
    walker = _Walker()
    if isinstance(func, types.FunctionType):
        walker.follow(func)  # the feature itself is always followed, even if installed
        root: Any = ["code", name]
    else:
        root = walker.value(func, "the compute function")
    walker.run()
    if not walker.own:
        raise _no_source(func, "it is not Python code")
    payload = json.dumps(
        [name, root, sorted(walker.own.items()), sorted(walker.packages.items())],
        separators=(",", ":"),
    )
    return CodeFingerprint(digest=f"{SCHEME}:{_hex(payload.encode())}", functions=walker.own)


def _hex(data: bytes) -> str:
    return xxhash.xxh3_128(b"jules-code\0" + data).hexdigest()


# ----------------------------------------------------------------------------- user code


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages())
    paths.add(site.getusersitepackages())
    return tuple(str(Path(p).resolve()) for p in paths if p)


def _is_user_module(module_name: str | None) -> bool:
    module = sys.modules.get(module_name or "")
    if module is None:
        return bool(module_name)  # unknown module: follow it rather than trust it
    if module_name == "__main__":
        return True
    file = getattr(module, "__file__", None)
    if not file:
        return False
    resolved = str(Path(file).resolve())
    return not any(resolved.startswith(d + "/") for d in _library_dirs())


@functools.cache
def _package_version(module_name: str) -> str | None:
    top = module_name.split(".")[0]
    try:  # the distribution usually has the package's name: one cheap lookup
        return importlib.metadata.version(top)
    except importlib.metadata.PackageNotFoundError:
        pass
    # Otherwise map import name -> distribution: this scans every installed package (~1 s).
    dists = _distributions_by_package().get(top, [])
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def _distributions_by_package() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


# ----------------------------------------------------------------------------- source and AST


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = body[0].value if body and isinstance(body[0], ast.Expr) else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _no_source(obj, why: str) -> FingerprintError:
    return FingerprintError(
        f"cannot read the source of {feature_name(obj)} ({why}); pass version='...' to "
        "get_or_compute / code_fingerprint and bump it whenever the code changes"
    )


def _source_trees(obj) -> list[ast.AST]:
    """Return the AST node(s) defining a function or class (lambdas: see module docstring)."""
    if getattr(obj, "__name__", None) == "<lambda>":
        return _lambda_nodes(obj)
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError) as exc:
        raise _no_source(obj, str(exc)) from exc
    try:
        return [ast.parse(textwrap.dedent(source))]
    except SyntaxError as exc:
        raise _no_source(obj, f"its source does not parse: {exc}") from exc


def _lambda_nodes(func) -> list[ast.AST]:
    code = func.__code__
    try:
        file = inspect.getsourcefile(func)
    except TypeError as exc:
        raise _no_source(func, str(exc)) from exc
    if file:
        linecache.checkcache(file)
    lines = linecache.getlines(file) if file else []
    if not lines:
        raise _no_source(func, "no source file")
    try:
        tree = ast.parse("".join(lines))
    except SyntaxError as exc:
        raise _no_source(func, f"its file does not parse: {exc}") from exc
    lambdas = [
        n for n in ast.walk(tree) if isinstance(n, ast.Lambda) and n.lineno == code.co_firstlineno
    ]
    # Instructions of the body carry real column spans; RESUME/RETURN carry (0, 0).
    spans = [p for p in code.co_positions() if p[0] and p[2] is not None and (p[3] or 0) > p[2]]
    if len(lambdas) > 1 and spans:
        line, _, col, _ = spans[0]
        narrowed = [n for n in lambdas if _contains(n.body, line, col)]
        lambdas = narrowed or lambdas
    if not lambdas:
        raise _no_source(func, "its lambda was not found in the source file")
    return lambdas


def _contains(node: ast.AST, line: int, col: int) -> bool:
    start = (node.lineno, node.col_offset)
    end = (node.end_lineno or node.lineno, node.end_col_offset or 0)
    return start <= (line, col) < end


def _referenced_names(trees: list[ast.AST]) -> list[str]:
    names: dict[str, None] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                names[node.id] = None
            elif isinstance(node, ast.Attribute):
                names[node.attr] = None
    return list(names)


# ----------------------------------------------------------------------------- the walk


class _Walker:
    """Follows user functions/classes breadth-first; records everything else by name."""

    def __init__(self) -> None:
        self.own: dict[str, str] = {}
        self.packages: dict[str, str | None] = {}
        self.queue: list[Any] = []
        self.seen: set[int] = set()

    def run(self) -> None:
        while self.queue:
            obj = self.queue.pop(0)
            self.own[feature_name(obj)] = self._own_digest(obj)

    def follow(self, obj) -> None:
        if id(obj) not in self.seen:
            self.seen.add(id(obj))
            self.queue.append(obj)

    def value(self, v: Any, where: str, strict: bool = True) -> Any:
        """Return a JSON-able description of ``v``, enqueuing user code it refers to."""
        if isinstance(v, functools.partial):
            args = [self.value(a, f"{where}.args[{i}]", strict) for i, a in enumerate(v.args)]
            kwargs = {
                k: self.value(a, f"{where}.keywords[{k!r}]", strict)
                for k, a in sorted(v.keywords.items())
            }
            return ["partial", self.value(v.func, f"{where}.func", strict), args, kwargs]
        if isinstance(v, types.MethodType):
            state = self._state(v.__self__, f"{where}.__self__", strict)
            return ["method", self.value(v.__func__, where, strict), state]
        if isinstance(v, types.ModuleType):
            return ["module", v.__name__, self._package(v.__name__)]
        if isinstance(v, types.FunctionType | type):
            return self._code(v)
        if isinstance(v, types.BuiltinFunctionType | types.BuiltinMethodType):
            return ["extern", feature_name(v), self._package(getattr(v, "__module__", None))]
        if callable(v):  # a callable object: its class's code plus its state
            cls = type(v)
            if _is_user_module(cls.__module__):
                self.follow(cls)
                return ["callable", feature_name(cls), self._state(v, where, strict)]
            return ["extern", feature_name(cls), self._package(cls.__module__)]
        try:
            return ["value", canonical_config(v).digest]
        except FingerprintError as exc:
            if strict:
                raise FingerprintError(
                    f"cannot fingerprint {where}: {exc}; pass version='...' to fingerprint this "
                    "code by an explicit version instead"
                ) from exc
            return ["opaque", f"{type(v).__module__}.{type(v).__qualname__}"]

    def _code(self, v) -> Any:
        name = feature_name(v)
        if _is_user_module(getattr(v, "__module__", None)):
            self.follow(v)
            return ["code", name]
        return ["extern", name, self._package(getattr(v, "__module__", None))]

    def _state(self, obj: Any, where: str, strict: bool) -> Any:
        """Describe an instance's state: canonical form, else its ``vars()``."""
        if isinstance(obj, type | types.ModuleType):
            return self.value(obj, where, strict)
        try:
            return ["value", canonical_config(obj).digest]
        except FingerprintError:
            if not hasattr(obj, "__dict__"):
                raise
        return ["vars", self.value(dict(vars(obj)), f"{where} attributes", strict)]

    def _package(self, module_name: str | None) -> str | None:
        if not module_name or _is_user_module(module_name):
            return None
        top = module_name.split(".")[0]
        if top in sys.stdlib_module_names or top == "builtins":
            return None
        self.packages[top] = _package_version(top)
        return top

    def _own_digest(self, obj) -> str:
        dumps, names = _parsed_source(obj)
        parts: list[Any] = [feature_name(obj), dumps]
        functions = _functions_of(obj)
        for fn in functions:
            name = fn.__qualname__
            parts.append(self._function_inputs(fn, name))
        parts.append(self._globals(obj, names, functions))
        payload = json.dumps(parts, separators=(",", ":"))
        return _hex(payload.encode())

    def _function_inputs(self, fn: types.FunctionType, name: str) -> list[Any]:
        defaults = [
            self.value(d, f"default {i} of {name}") for i, d in enumerate(fn.__defaults__ or ())
        ]
        kwdefaults = {
            k: self.value(d, f"default {k!r} of {name}")
            for k, d in sorted((fn.__kwdefaults__ or {}).items())
        }
        cells = {}
        for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell: a name assigned later in the outer scope
                contents = None
            cells[var] = self.value(contents, f"closure variable {var!r} of {name}")
        return [defaults, kwdefaults, sorted(cells.items())]

    def _globals(self, obj, names: list[str], functions: list[Any]) -> list[Any]:
        if functions:
            namespace = functions[0].__globals__
        else:
            namespace = vars(sys.modules.get(getattr(obj, "__module__", ""), types))
        modules = [
            namespace[n]
            for n in names
            if isinstance(namespace.get(n), types.ModuleType)
            and _is_user_module(namespace[n].__name__)
        ]
        found = []
        for name in names:
            if name in namespace:
                found.append([name, self.value(namespace[name], f"global {name!r}", False)])
            for module in modules:
                if name in vars(module):
                    where = f"{module.__name__}.{name}"
                    found.append([where, self.value(vars(module)[name], where, False)])
        return found


_PARSED: dict[int, tuple[types.CodeType, list[str], list[str]]] = {}
_PARSED_LIMIT = 4096


def _parsed_source(obj) -> tuple[list[str], list[str]]:
    """Return the normalised AST dumps and referenced names of ``obj``'s source.

    Reading and parsing source is most of the cost of a code fingerprint, so functions are
    cached per code object: the source a code object was compiled from cannot change while
    that code object runs (an edited file only matters once it is re-imported, which makes new
    code objects). Globals, defaults and closures are still read on every call.
    """
    code = getattr(obj, "__code__", None)
    cached = _PARSED.get(id(code)) if code is not None else None
    if cached is not None and cached[0] is code:
        return cached[1], cached[2]
    trees = _source_trees(obj)
    dumps = [ast.dump(_strip_docstrings(t), include_attributes=False) for t in trees]
    names = _referenced_names(trees)
    if code is not None:
        if len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.clear()
        _PARSED[id(code)] = (code, dumps, names)
    return dumps, names


def _functions_of(obj) -> list[types.FunctionType]:
    """Return the Python functions whose defaults/closures/globals belong to ``obj``."""
    if isinstance(obj, types.FunctionType):
        return [obj]
    found = []
    for attr in vars(obj).values():
        if isinstance(attr, staticmethod | classmethod):
            attr = attr.__func__
        if isinstance(attr, property):
            found += [f for f in (attr.fget, attr.fset, attr.fdel) if f is not None]
        elif isinstance(attr, types.FunctionType):
            found.append(attr)
    return [inspect.unwrap(f) for f in found if isinstance(inspect.unwrap(f), types.FunctionType)]
