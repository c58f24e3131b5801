"""Fingerprints of feature code: a changed function (or anything of yours it reaches) is a new key.

What is hashed, per followed function or class ("own digest"; its source is read by
:mod:`jules_cache.fingerprints._code_source`):

* its normalised AST: ``ast.dump(tree, include_attributes=False)`` of the source of its own code
  object (a decorator's wrapper is the wrapper's source, not the wrapped function's) after
  removing docstrings — comments, formatting, blank lines and line numbers do not matter;
* default and keyword-default values and closure cell values, described by :meth:`_Walker.value`.
  A default or closure value that cannot be described raises FingerprintError: pass
  ``version=`` or make it canonicalisable;
* every reference its source makes, resolved on the real objects at fingerprint time — a name
  the code binds itself (parameter, local, comprehension variable…) only through an import in
  its body, never as the global of the same name (:mod:`._scopes` applies Python's rules): dotted
  chains (``pkg.mod.f``, ``m.f`` after ``import pkg.mod as m``, ``mod.f`` after ``from pkg import
  mod``, ``getattr(mod, "f")``) are walked attribute by attribute through your modules, starting
  from the function's globals, its closure cells, and imports inside its body (a user module
  imported there is imported now, as the function would when it runs; a third-party one only
  has its version recorded). Every attribute name the source mentions is also looked up in each
  of your modules it reached (so a module aliased to a local still counts);
* for a class: its bases, and the value of each non-method class attribute (data edited or set
  after the class body counts, not only the source).

How values are described: ``functools.partial``/``partialmethod`` → its func plus its args and
keywords; a bound method → its function plus its ``__self__``; your functions and classes are
followed; a third-party function or class is recorded by name and installed version (its
``__wrapped__`` and the callables in its closure are still followed, so ``functools.lru_cache``
or a library decorator around your function is seen through); canonicalisable data (see
:mod:`jules_cache.fingerprints.config`) by its canonical digest; a list, tuple, dict or set
holding code (a registry of helpers) element by element; an instance of your class → its class
(followed) plus its state (canonical form, else ``vars()``/slots, described the same way).

Routes no walk can follow — ``eval``/``exec``, ``importlib.import_module``/``__import__`` of a
computed name, ``getattr`` with a computed name on something other than one of your modules
(on one of your modules, all its functions, classes and scalar constants are followed, as for
a module of yours passed or held as a value),
``sys.modules[...]``, compiled extension modules of your own, and objects recorded by type only
(a logger, a Polars expression) — are listed in :attr:`CodeFingerprint.unfollowed`, which
``FeatureStore.explain`` prints. ``globals()`` follows the whole module.

"User code" is any module with a source file outside the standard library and site-packages
(including ``__main__`` and editable installs). User code is followed transitively (cycle-safe);
stdlib and third-party code are not. The final digest combines the root's name, every followed
function's own digest (sorted by qualified name), the recorded package versions and, always,
the versions of the libraries that execute every feature (``keys.ENGINE_LIBRARIES``: Polars,
pyarrow, numpy, pandas; see :mod:`jules_cache.fingerprints.keys` for why all four).

``version=`` replaces the source walk: the digest then derives only from the feature's
qualified name, the version string and the engine versions, so two different features with the
same version never collide, and another Polars is still another key.

A lambda is found by parsing its whole source file and picking the ``Lambda`` node(s) at its
line and column; if several match, all are hashed (a false miss at worst). Functions without
source (builtins, C extensions, REPL definitions) raise FingerprintError asking for
``version=``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import site
import struct
import sys
import sysconfig
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from jules_cache.errors import FingerprintError
from jules_cache.fingerprints import keys
from jules_cache.fingerprints._code_source import Import, Source, analyse, no_source, parsed_source
from jules_cache.fingerprints.config import canonical_config
from jules_cache.fingerprints.keys import CODE_SCHEME
from jules_cache.fingerprints.keys import installed_version as _version


@dataclass(frozen=True)
class CodeFingerprint:
    """The code digest of a feature, the own digest of each function it followed, the routes it
    could not follow (``FeatureStore.explain`` prints them), and the installed version of each
    third-party package the code refers to or that executes it (part of the digest)."""

    digest: str
    functions: dict[str, str]
    unfollowed: tuple[str, ...] = field(default=())
    packages: dict[str, str | None] = field(default_factory=dict)


# Fingerprints taken in another process for a callable that was shipped here by value
# (``jules_cache.fanout``): its code objects are the sender's, but their source is not in this
# process, so it could not be fingerprinted here. Keyed by the callable object itself.
_adopted: weakref.WeakKeyDictionary[Any, tuple[str | None, CodeFingerprint]] = (
    weakref.WeakKeyDictionary()
)


def adopt_fingerprint(
    func: Callable[..., Any], version: str | None, fingerprint: CodeFingerprint
) -> bool:
    """Make ``code_fingerprint(func, version)`` return ``fingerprint`` in this process.

    Only for a callable whose code was shipped here from the process that computed
    ``fingerprint`` (cloudpickle by value), after the caller checked that everything else the
    fingerprint covers (your modules by reference, package versions) is the same here. Returns
    False if ``func`` cannot be remembered (not weak-referenceable or not hashable).
    """
    try:
        _adopted[func] = (version, fingerprint)
    except TypeError:
        return False
    return True


def _adopted_fingerprint(func: Callable[..., Any], version: str | None) -> CodeFingerprint | None:
    try:
        adopted = _adopted.get(func)
    except TypeError:  # an unhashable callable object
        return None
    return adopted[1] if adopted is not None and adopted[0] == version else None


def feature_name(func: Any) -> str:
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
    module = main_module_name(getattr(func, "__module__", None) or "builtins")
    return f"{module}.{getattr(func, '__qualname__', type(func).__qualname__)}"


def main_module_name(module: str) -> str:
    """The name of ``module`` as the script's own process knows it.

    A ``multiprocessing`` spawn (or forkserver) child imports the parent's main script as
    ``__mp_main__``: its functions are the same code as the parent's ``__main__`` ones, and
    must get the same feature name and code fingerprint, or every child computes again.
    """
    return "__main__" if module == "__mp_main__" else module


def code_fingerprint(func: Any, version: str | None = None) -> CodeFingerprint:
    """Fingerprint ``func`` and the user code it reaches; see the module docstring.

    ``version`` overrides source inspection. Raises FingerprintError when the source is not
    available or a default/closure value cannot be canonicalised.
    """
    if not callable(func):
        raise FingerprintError(f"compute function must be callable, got {type(func)!r}")
    if _adopted:
        adopted = _adopted_fingerprint(func, version)
        if adopted is not None:
            return adopted
    name = feature_name(func)
    engine = keys.engine_versions()
    if version is not None:
        own = _hex(b"version\0" + name.encode() + b"\0" + str(version).encode())
        payload = json.dumps([own, sorted(engine.items())], separators=(",", ":"))
        return CodeFingerprint(
            digest=f"{CODE_SCHEME}:{_hex(payload.encode())}",
            functions={name: own},
            packages=engine,
        )
    walker = _Walker()
    if isinstance(func, types.FunctionType):
        walker.follow(func)  # the feature itself is always followed, even if installed
        root: Any = ["code", _def_name(func)]
    else:
        root = walker.value(func, "the compute function")
    walker.run()
    if not walker.own:
        raise no_source(func, "it is not Python code")
    functions = walker.functions()
    packages = {**walker.packages, **engine}  # the engine as this process runs it
    payload = json.dumps(
        [name, root, sorted(functions.items()), sorted(packages.items())],
        separators=(",", ":"),
    )
    return CodeFingerprint(
        digest=f"{CODE_SCHEME}:{_hex(payload.encode())}",
        functions=functions,
        unfollowed=_capped(sorted(walker.notes)),
        packages=packages,
    )


def _capped(notes: list[str]) -> tuple[str, ...]:
    if len(notes) <= _MAX_NOTES:
        return tuple(notes)
    return (*notes[:_MAX_NOTES], f"... and {len(notes) - _MAX_NOTES} more")


def _hex(data: bytes) -> str:
    return xxhash.xxh3_128(b"jules-code\0" + data).hexdigest()


def _def_name(obj: Any) -> str:
    """Where ``obj`` is defined: a wrapper is named after its own code, not what it wraps."""
    if isinstance(obj, types.FunctionType):
        module = main_module_name(obj.__globals__.get("__name__", obj.__module__))
        return f"{module}.{obj.__code__.co_qualname}"
    return feature_name(obj)


# ----------------------------------------------------------------------------- user code


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages())
    paths.add(site.getusersitepackages())
    return tuple(str(Path(p).resolve()) for p in paths if p)


@functools.cache
def _is_user_file(file: str) -> bool:
    # Cached: resolving the path was most of the cost of a code fingerprint on a hit.
    resolved = str(Path(file).resolve())
    return not any(resolved.startswith(d + "/") for d in _library_dirs())


def _module_file(module: types.ModuleType) -> str | None:
    file = getattr(module, "__file__", None)
    if file:
        return str(file)
    path = getattr(module, "__path__", None)  # a namespace package has directories only
    first = next(iter(path), None) if path is not None else None
    return str(first) if first is not None else None


def _is_user_module(module_name: str | None) -> bool:
    module = sys.modules.get(module_name or "")
    if module is None:
        return bool(module_name)  # unknown module: follow it rather than trust it
    if module_name == "__main__":
        return True
    file = _module_file(module)
    return bool(file) and _is_user_file(file)


def _is_user_class(cls: type) -> bool:
    return cls.__module__ != "builtins" and _is_user_module(cls.__module__)


@functools.cache
def _package_version(module_name: str) -> str | None:
    top = module_name.split(".")[0]
    try:  # the distribution usually has the package's name: one cheap lookup
        return _version(top)
    except importlib.metadata.PackageNotFoundError:
        pass
    # Otherwise map import name -> distribution: this scans every installed package (~1 s).
    dists = _distributions_by_package().get(top, [])
    for dist in dists:
        try:
            return _version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def _distributions_by_package() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def _functions_of(obj: Any) -> list[types.FunctionType]:
    """Return the Python functions whose defaults/closures/globals belong to ``obj``."""
    if isinstance(obj, types.FunctionType):
        return [obj]
    found = []
    for attr in vars(obj).values():
        if isinstance(attr, staticmethod | classmethod):
            attr = attr.__func__
        if isinstance(attr, property):
            found += [f for f in (attr.fget, attr.fset, attr.fdel) if f is not None]
        elif isinstance(attr, functools.cached_property | functools.partialmethod):
            found.append(attr.func)
        elif isinstance(attr, types.FunctionType):
            found.append(attr)
    unwrapped = []
    for f in found:
        try:
            unwrapped.append(inspect.unwrap(f))
        except ValueError:  # a __wrapped__ cycle: keep the outer function
            unwrapped.append(f)
    # Methods generated from the class body by exec (dataclass __init__, ...) have no source of
    # their own: the class body that produced them is hashed.
    return [
        f
        for f in unwrapped
        if isinstance(f, types.FunctionType) and not f.__code__.co_filename.startswith("<")
    ]


_METHODS = (
    types.FunctionType,
    staticmethod,
    classmethod,
    property,
    functools.cached_property,
)
_SCALARS = (type(None), bool, int, float, str, bytes)
# Exact text of the plain scalar types (subclasses go through canonical_config).
_EXACT_SCALARS: dict[type, Any] = {
    type(None): repr,
    bool: repr,
    int: repr,
    float: lambda x: struct.pack(">d", x).hex(),  # every bit, NaN payloads included
    str: str,
    bytes: bytes.hex,
}
_MISSING = object()
_MAX_DEPTH = 64  # containers/instances nested in one described value
_MAX_OBJECTS = 100_000  # containers/instances described in one fingerprint
_MAX_NOTES = 20


def _wrapped(v: Any) -> Any:
    try:
        return getattr(v, "__wrapped__", None)
    except Exception:  # an object whose __getattr__ misbehaves
        return None


def _stand_in(v: Any) -> Any:
    """The object that ``v`` is fingerprinted as, if its class names one: a ``FeatureStore``
    is described by a constant and a ``Feature`` (``@store.feature``) by its original function.
    A store is a per-process object (root, locks, connections): code that mentions one, as
    ``@store.feature`` above a function does, must get the same key in every process."""
    attribute = getattr(type(v), "__jules_cache_stand_in__", None)
    return getattr(v, attribute, None) if isinstance(attribute, str) else None


# ----------------------------------------------------------------------------- the walk


class _Walker:
    """Follows user functions/classes breadth-first; records everything else by name."""

    def __init__(self) -> None:
        self.own: dict[str, list[str]] = {}
        self.packages: dict[str, str | None] = {}
        self.notes: set[str] = set()
        self.queue: list[Any] = []
        self.seen: dict[int, Any] = {}  # holds the objects so their ids stay unique
        self.active: set[int] = set()  # containers/instances being described (cycle guard)
        self.budget = _MAX_OBJECTS
        self.wholes: dict[str, list[Any]] = {}  # modules followed whole, by name

    def run(self) -> None:
        while self.queue:
            obj = self.queue.pop(0)
            self.own.setdefault(_def_name(obj), []).append(self._own_digest(obj))

    def functions(self) -> dict[str, str]:
        """One digest per name; objects sharing a name (wrappers) are combined order-free."""
        return {
            name: digests[0] if len(digests) == 1 else _hex("\0".join(sorted(digests)).encode())
            for name, digests in self.own.items()
        }

    def follow(self, obj: Any) -> None:
        if id(obj) not in self.seen:
            self.seen[id(obj)] = obj
            self.queue.append(obj)

    def value(self, v: Any, where: str, strict: bool = True, note: bool = True) -> Any:
        """Return a JSON-able description of ``v``, enqueuing user code it refers to."""
        stand_in = _stand_in(v)
        if stand_in is not None:  # a store or a @store.feature wrapper (see _stand_in)
            return ["stand_in", self.value(stand_in, where, strict, note)]
        if isinstance(v, functools.partial | functools.partialmethod):
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
            # One of your modules held or passed as a value (apply(sub), {"a": sub}) may have
            # any attribute used by whoever receives it: all of it counts.
            if _is_user_module(v.__name__):
                return ["module", v.__name__, self._whole_module(v)]
            return self._module(v)
        if isinstance(v, types.FunctionType | type):
            return self._code(v)
        if isinstance(v, types.BuiltinFunctionType | types.BuiltinMethodType):
            module = getattr(v, "__module__", None)
            if module and module in sys.modules and _is_user_module(module):
                self.notes.add(f"{where}: {feature_name(v)} is compiled code without source")
            return ["extern", feature_name(v), self._package(module)]
        if id(v) in self.active:
            return ["cycle"]
        self.budget -= 1
        if len(self.active) >= _MAX_DEPTH or self.budget < 0:
            # A linked structure thousands deep (or a huge object graph) would exhaust the
            # stack or the hit path's time: treat it as a value that cannot be described.
            why = f"nested deeper than {_MAX_DEPTH}" if self.budget >= 0 else "too many objects"
            return self._opaque(v, f"{where} ({why})", strict, note)
        self.active.add(id(v))
        try:
            return self._data(v, where, strict, note)
        finally:
            self.active.discard(id(v))

    def _data(self, v: Any, where: str, strict: bool, note: bool) -> Any:
        cls = type(v)
        exact = _EXACT_SCALARS.get(cls)
        if exact is not None:  # the common constant: skip the full canonical encoder
            return [cls.__name__, exact(v)]
        try:
            digest = canonical_config(v).digest
        except FingerprintError as exc:
            error: FingerprintError | None = exc
        else:
            if _is_user_class(cls):  # a dataclass or enum of yours: its methods count too
                self.follow(cls)
                return ["instance", feature_name(cls), ["value", digest]]
            self._follow_types(v)
            return ["value", digest]
        if isinstance(v, list | tuple):  # holds code (a registry of helpers): item by item
            items = [self.value(x, f"{where}[{i}]", strict, note) for i, x in enumerate(v)]
            return [cls.__name__, items]
        if isinstance(v, set | frozenset):
            items = [self.value(x, f"{where}{{...}}", strict, note) for x in v]
            return [cls.__name__, sorted(items, key=json.dumps)]
        if isinstance(v, dict):
            pairs = [
                [
                    self.value(k, f"{where} key", strict, note),
                    self.value(x, f"{where}[{k!r}]", strict, note),
                ]
                for k, x in v.items()
            ]
            return ["dict", sorted(pairs, key=json.dumps)]
        if _is_user_class(cls):  # an instance of your class: its class plus its state
            self.follow(cls)
            return ["instance", feature_name(cls), self._state(v, where, strict)]
        wrapped = _wrapped(v)
        if wrapped is not None and wrapped is not v:  # functools.lru_cache and the like
            inner = self.value(wrapped, f"{where}.__wrapped__", strict, note)
            return ["wrapped", feature_name(cls), self._package(cls.__module__), inner]
        if callable(v):
            return ["extern", feature_name(cls), self._package(cls.__module__)]
        return self._opaque(v, where, strict, note, error)

    def _opaque(
        self, v: Any, where: str, strict: bool, note: bool, error: Exception | None = None
    ) -> Any:
        """Describe ``v`` by its type only; in defaults and closures that is an error."""
        kind = f"{type(v).__module__}.{type(v).__qualname__}"
        if strict:
            raise FingerprintError(
                f"cannot fingerprint {where}: {error or 'a ' + kind}; pass version='...' to "
                "fingerprint this code by an explicit version instead"
            ) from error
        if note:
            self.notes.add(f"{where}: a {kind} is recorded by type only")
        return ["opaque", kind]

    def _follow_types(self, v: Any) -> None:
        """Follow the classes of your objects nested in canonical data (dataclasses, enums)."""
        if isinstance(v, list | tuple | set | frozenset):
            for x in v:
                self._follow_types(x)
        elif isinstance(v, dict):
            for k, x in v.items():
                self._follow_types(k)
                self._follow_types(x)
        elif not isinstance(v, _SCALARS) and _is_user_class(type(v)):
            self.follow(type(v))

    def _code(self, v: Any) -> Any:
        name = _def_name(v)
        module = v.__globals__.get("__name__") if isinstance(v, types.FunctionType) else None
        module = module or getattr(v, "__module__", None)
        if _is_user_module(module):
            self.follow(v)
            return ["code", name]
        extern: list[Any] = ["extern", name, self._package(module)]
        if isinstance(v, types.FunctionType) and (v.__closure__ or _wrapped(v) is not None):
            # A library decorator around your function (lru_cache, singledispatch's registry):
            # its own code is not followed, what it wraps or closes over is.
            if id(v) in self.active:
                return ["cycle"]
            self.active.add(id(v))
            try:
                inner = [_wrapped(v)] + [_cell(c) for c in v.__closure__ or ()]
                extern += [self.value(x, f"{name} wraps", False, False) for x in inner]
            finally:
                self.active.discard(id(v))
        return extern

    def _state(self, obj: Any, where: str, strict: bool) -> Any:
        """Describe an instance's state: canonical form, else its ``vars()`` and slots."""
        if isinstance(obj, type | types.ModuleType):
            return self.value(obj, where, strict)
        if _is_user_class(type(obj)):  # self.other_method() inside a bound method
            self.follow(type(obj))
        try:
            return ["value", canonical_config(obj).digest]
        except FingerprintError:
            pass
        state = dict(vars(obj)) if hasattr(obj, "__dict__") else {}
        for cls in type(obj).__mro__:
            slots = getattr(cls, "__slots__", ())
            for slot in [slots] if isinstance(slots, str) else slots:
                if slot not in state and hasattr(obj, slot):
                    state[slot] = getattr(obj, slot)
        return ["vars", self.value(state, f"{where} attributes", strict)]

    def _package(self, module_name: str | None) -> str | None:
        if not module_name or _is_user_module(module_name):
            return None
        top = module_name.split(".")[0]
        if top in sys.stdlib_module_names or top == "builtins":
            return None
        self.packages[top] = _package_version(top)
        return top

    # -- one followed function or class ---------------------------------------------------

    def _own_digest(self, obj: Any) -> str:
        where = _def_name(obj)
        functions = _functions_of(obj)
        parts: list[Any] = [where]
        try:
            source = parsed_source(obj)
        except FingerprintError:
            if not isinstance(obj, type):
                raise
            # A class made at runtime (namedtuple, type(...)) has no body to hash: its methods
            # are followed one by one, and its attributes are hashed below as for any class.
            source = analyse([])
            parts.append([self.value(fn, f"method of {where}") for fn in functions])
        parts.append(source.dumps)
        for fn in functions:
            parts.append(self._function_inputs(fn, fn.__qualname__))
        if isinstance(obj, type):
            parts.append(self._class_body(obj, where))
        else:
            wrapped = _wrapped(obj)
            if wrapped is not None:
                parts.append(["wrapped", self.value(wrapped, f"{where}.__wrapped__", False)])
            owner = _owner_class(obj)
            if owner is not None:  # Model.predict passed unbound: self._scale() is in Model
                parts.append(["owner", self.value(owner, f"class of {where}", False)])
        parts.append(self._references(obj, source, functions, where))
        self.notes.update(f"{where}: {what}" for what in source.dynamic)
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
        cells = {
            var: self._reference(_cell(cell), f"closure variable {var!r} of {name}", True)
            for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True)
        }
        return [defaults, kwdefaults, sorted(cells.items())]

    def _class_body(self, cls: type, where: str) -> list[Any]:
        """Bases and class attributes that are data, as the class has them now."""
        bases = [self.value(b, f"base of {where}", False) for b in cls.__bases__]
        attrs = []
        for name, v in vars(cls).items():
            dunder = name.startswith("__") and name.endswith("__")
            sunder = name.startswith("_") and name.endswith("_")  # enum internals, _abc_impl
            if dunder or sunder or name.startswith("_abc_") or isinstance(v, _METHODS):
                continue
            # A library descriptor (a namedtuple field getter) behaves as its type says.
            quiet = hasattr(type(v), "__get__") and not _is_user_class(type(v))
            label = f"class attribute {where}.{name}"
            attrs.append([name, self.value(v, label, False, not quiet)])
        return [bases, attrs]

    def _references(
        self, obj: Any, source: Source, functions: list[types.FunctionType], where: str
    ) -> list[Any]:
        """Resolve every reference of ``source`` on the real objects, following your code."""
        module = sys.modules.get(getattr(obj, "__module__", None) or "")
        if isinstance(obj, types.FunctionType):
            namespace = obj.__globals__
        elif module is not None:
            namespace = vars(module)
        else:
            namespace = functions[0].__globals__ if functions else {}
        cells: dict[str, list[Any]] = {}
        for fn in functions:
            for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
                cells.setdefault(var, []).append(_cell(cell))
        package = namespace.get("__package__") or ""
        bound: dict[str, list[Any]] = {}
        reached: dict[str, types.ModuleType] = {}
        found: list[Any] = []
        for imp in source.imports:
            target = self._import(imp, package, where)
            if isinstance(target, types.ModuleType) and _is_user_module(target.__name__):
                reached[target.__name__] = target
            if imp.bound and target is not _MISSING:
                bound.setdefault(imp.bound, []).append(target)

        def bases(name: str, local: bool) -> list[tuple[str, Any]]:
            # A local of the code (a parameter, an assignment...) gets a value from an import
            # in the body at most; never from the module global or a cell of the same name.
            candidates = [("import", x) for x in bound.get(name, [])]
            if local:
                return candidates
            candidates += [("closure", x) for x in cells.get(name, [])]
            if name in namespace:
                candidates.append(("global", namespace[name]))
            return candidates

        chains = [(c, False) for c in source.chains] + [(c, True) for c in source.local_chains]
        for chain, local in chains:
            for kind, base in bases(chain[0], local):
                dotted, described, _ = self._walk(base, chain, reached, where)
                found.append([kind, dotted, described])
        whole: dict[str, types.ModuleType] = {}
        for base_chain, text, local in source.computed_getattrs:
            targets = (
                [self._walk(b, base_chain, {}, where)[2] for _, b in bases(base_chain[0], local)]
                if base_chain
                else []
            )
            modules = [t for t in targets if isinstance(t, types.ModuleType)]
            for target in modules:
                if _is_user_module(target.__name__):
                    whole[target.__name__] = target
            if not targets:
                self.notes.add(f"{where}: getattr({text}, <computed name>) is not followed")
        if source.uses_globals and isinstance(namespace.get("__name__"), str):
            own_module = sys.modules.get(namespace["__name__"])
            if own_module is not None:
                whole[own_module.__name__] = own_module
        # A name mentioned as an attribute may reach a global (self.helper -> helper) or any
        # module reached above under a local alias (m = mod; m.helper): look it up in all.
        for name in source.attrs:
            if name in namespace:
                label = f"{where} -> {name}"
                found.append(["global", name, self._reference(namespace[name], label, False)])
            for module_name, reached_module in sorted(reached.items()):
                if name in vars(reached_module):
                    dotted = f"{module_name}.{name}"
                    label = f"{where} -> {dotted}"
                    described = self._reference(vars(reached_module)[name], label, False)
                    found.append(["in", dotted, described])
        for module_name, whole_module in sorted(whole.items()):
            found.append(["module", module_name, self._whole_module(whole_module)])
        return found

    def _walk(
        self,
        obj: Any,
        chain: tuple[str, ...],
        reached: dict[str, types.ModuleType],
        where: str,
    ) -> list[Any]:
        """Follow ``chain`` from ``obj`` through your modules; describe where it lands."""
        walked = 1
        while isinstance(obj, types.ModuleType) and _is_user_module(obj.__name__):
            reached[obj.__name__] = obj
            if walked == len(chain):
                break
            attr = chain[walked]
            walked += 1
            nxt = vars(obj).get(attr, _MISSING)
            if nxt is _MISSING:
                nxt = sys.modules.get(f"{obj.__name__}.{attr}", _MISSING)
            if nxt is _MISSING:
                return [".".join(chain[:walked]), ["missing"], None]
            obj = nxt
        dotted = ".".join(chain[:walked])
        return [dotted, self.value(obj, f"{where} -> {dotted}", False), obj]

    def _module(self, module: types.ModuleType) -> list[Any]:
        return ["module", module.__name__, self._package(module.__name__)]

    def _reference(self, v: Any, where: str, strict: bool) -> Any:
        """Describe a name's value; a module there is only used through the chains resolved
        separately (``m.helper()``), so it is not followed whole."""
        if isinstance(v, types.ModuleType):
            return self._module(v)
        return self.value(v, where, strict)

    def _whole_module(self, module: types.ModuleType) -> list[Any]:
        """All the code and scalar constants of a module reached by a computed name or held as
        a value (computed once per fingerprint)."""
        name = module.__name__
        if name not in self.wholes:
            self.wholes[name] = ["pending"]  # a module that reaches itself
            found = []
            for attr, v in sorted(vars(module).items()):
                if attr.startswith("__") or isinstance(v, types.ModuleType):
                    continue
                if callable(v) or isinstance(v, _SCALARS):
                    found.append([attr, self.value(v, f"{name}.{attr}", False, False)])
            self.wholes[name] = found
        return self.wholes[name]

    def _import(self, imp: Import, package: str, where: str) -> Any:
        """The object an import in a body binds, importing your modules only (as it would)."""
        name = imp.module
        if imp.level:
            try:
                name = importlib.util.resolve_name("." * imp.level + name, package)
            except (ImportError, ValueError):
                self.notes.add(f"{where}: relative import of {imp.module!r} cannot be resolved")
                return _MISSING
        module = self._user_module(name, where)
        if module is None:
            return _MISSING
        if imp.attr is not None:
            target = vars(module).get(imp.attr, _MISSING)
            if target is _MISSING:
                target = self._user_module(f"{name}.{imp.attr}", where) or _MISSING
            return target
        if imp.top:
            return sys.modules.get(name.partition(".")[0], _MISSING)
        return module

    def _user_module(self, name: str, where: str) -> types.ModuleType | None:
        """Module ``name`` if it is your code (imported now if need be); None otherwise."""
        module = sys.modules.get(name)
        if module is not None:
            if _is_user_module(name):
                return module
            self._package(name)
            return None
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names:
            return None
        if top not in sys.modules:
            try:
                spec = importlib.util.find_spec(top)
            except (ImportError, ValueError):
                spec = None
            if spec is None:
                self.notes.add(f"{where}: module {name!r} is not importable here")
                return None
            locations = list(spec.submodule_search_locations or [])
            origin = spec.origin if spec.has_location else next(iter(locations), None)
            if not origin or not _is_user_file(origin):
                self.packages[top] = _package_version(top)
                return None
        elif not _is_user_module(top):
            self._package(top)
            return None
        try:
            return importlib.import_module(name)
        except Exception as exc:  # its own error: the feature would raise it when it runs
            self.notes.add(f"{where}: importing {name!r} failed ({type(exc).__name__}: {exc})")
            return None


def _owner_class(fn: types.FunctionType) -> type | None:
    """The class a function was defined in (``Model.predict`` -> ``Model``), if reachable."""
    *path, _ = fn.__code__.co_qualname.split(".")
    if not path or "<locals>" in path:
        return None
    owner: Any = fn.__globals__.get(path[0])
    for name in path[1:]:
        owner = getattr(owner, name, None)
    return owner if isinstance(owner, type) else None


def _cell(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell: a name assigned later in the outer scope
        return None
