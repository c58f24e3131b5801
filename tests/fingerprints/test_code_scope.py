"""Code fingerprints resolve names by Python's scoping rules: a parameter, a local or a
comprehension variable is not the module global of the same name, and a real global is.

Each case is a feature in a real module next to a module global ``shadow``; the global's value
is changed and the code fingerprint is taken again. A feature that never reads the global keeps
its key (a false miss otherwise); one that reads it gets a new key (a stale hit otherwise).
"""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jules_cache.fingerprints.code import code_fingerprint

# Features that bind ``shadow`` themselves, one binding form each: the global never counts.
LOCAL = {
    "parameter": "def feature(frame, shadow):\n    return shadow['k']",
    "keyword-only parameter": "def feature(frame, *, shadow=1):\n    return shadow",
    "star parameters": "def feature(*shadow, **kw):\n    return shadow",
    "assignment": "def feature(frame, c):\n    shadow = c\n    return shadow",
    "annotated assignment": "def feature(frame, c):\n    shadow: int = c\n    return shadow",
    "tuple target": "def feature(frame, c):\n    a, *shadow = c\n    return shadow",
    "for target": "def feature(frame, c):\n    for shadow in c:\n        pass\n    return shadow",
    "with-as": "def feature(frame, c):\n    with open(c) as shadow:\n        return shadow.read()",
    "except-as": (
        "def feature(frame, c):\n    try:\n        return c\n"
        "    except ValueError as shadow:\n        return str(shadow)"
    ),
    "import in the body": (
        "def feature(frame, c):\n    import json as shadow\n    return shadow.dumps(c)"
    ),
    "walrus": "def feature(frame, c):\n    if (shadow := c):\n        return shadow\n",
    "walrus in a comprehension": (
        "def feature(frame, c):\n    [(shadow := x) for x in c]\n    return shadow"
    ),
    "comprehension variable": "def feature(frame, c):\n    return [shadow * 2 for shadow in c]",
    "later generator over an earlier variable": (
        "def feature(frame, c):\n    return [x for shadow in c for x in shadow]"
    ),
    "lambda parameter": (
        "def feature(frame, c):\n    g = lambda shadow: shadow + 1\n    return g(c)"
    ),
    "nested function argument": (
        "def feature(frame, c):\n    def g(shadow):\n        return shadow\n    return g(c)"
    ),
    "nested function reading an enclosing local": (
        "def feature(frame, c):\n    shadow = c\n    def g():\n        return shadow\n"
        "    return g()"
    ),
    "nonlocal": (
        "def feature(frame, c):\n    shadow = c\n    def g():\n        nonlocal shadow\n"
        "        shadow = 1\n    g()\n    return shadow"
    ),
    "match capture": (
        "def feature(frame, c):\n    match c:\n        case [shadow]:\n            return shadow\n"
        "        case {'k': 1, **shadow}:\n            return shadow\n    return None"
    ),
    "nested class method parameter": (
        "def feature(frame, c):\n    class K:\n        def m(self, shadow):\n"
        "            return shadow\n    return K().m(c)"
    ),
}

# Features that read the module global ``shadow``: it always counts.
GLOBAL = {
    "plain read": "def feature(frame, c):\n    return shadow",
    "declared global and assigned": (
        "def feature(frame, c):\n    global shadow\n    shadow = c\n    return shadow"
    ),
    "global in a nested function under a same-named parameter": (
        "def feature(frame, shadow):\n    def g():\n        global shadow\n        return shadow\n"
        "    return g()"
    ),
    "comprehension element": "def feature(frame, c):\n    return [shadow for x in c]",
    "first iterable of a comprehension": ("def feature(frame, c):\n    return [x for x in shadow]"),
    "lambda default": "def feature(frame, c):\n    g = lambda y=shadow: y\n    return g()",
    "nested function default": (
        "def feature(frame, c):\n    def g(y=shadow):\n        return y\n    return g()"
    ),
    "attribute chain": "def feature(frame, c):\n    return shadow.real",
    "class body name read by a method": (
        "def feature(frame, c):\n    class K:\n        shadow = 5\n        def m(self):\n"
        "            return shadow\n    return K().m()"
    ),
    "local bound only after a global read in another scope": (
        "def feature(frame, c):\n    def g():\n        return shadow\n    def h(shadow):\n"
        "        return shadow\n    return g(), h(c)"
    ),
}


def _load(load_module, name: str, body: str):
    return load_module(name, f"shadow = 1\n\n{textwrap.dedent(body)}\n")


def _digest_with(module, value) -> str:
    module.shadow = value
    return code_fingerprint(module.feature).digest


@pytest.mark.parametrize("form", sorted(LOCAL))
def test_a_local_name_is_not_the_global_of_the_same_name(load_module, form):
    module = _load(load_module, "scope_local_" + str(sorted(LOCAL).index(form)), LOCAL[form])
    assert _digest_with(module, 1) == _digest_with(module, 2), form
    assert not any("shadow" in note for note in code_fingerprint(module.feature).unfollowed)


@pytest.mark.parametrize("form", sorted(GLOBAL))
def test_a_global_that_is_read_counts(load_module, form):
    module = _load(load_module, "scope_global_" + str(sorted(GLOBAL).index(form)), GLOBAL[form])
    assert _digest_with(module, 1) != _digest_with(module, 2), form


@settings(deadline=None, max_examples=40)
@given(
    st.one_of(st.integers(), st.text(max_size=8), st.floats(allow_nan=False)),
    st.one_of(st.integers(), st.text(max_size=8), st.floats(allow_nan=False)),
)
def test_an_unrelated_global_named_like_the_config_parameter_never_changes_the_key(a, b):
    module = _PARAMETER_MODULE
    module.config = a
    first = code_fingerprint(module.make_bars).digest
    module.config = b
    assert code_fingerprint(module.make_bars).digest == first


def test_a_lambda_feature_parameter_is_not_the_global(load_module):
    module = load_module(
        "scope_lambda", "config = 1\nfeature = lambda ticks, config: ticks.head(config['n'])\n"
    )
    before = code_fingerprint(module.feature).digest
    module.config = 2
    assert code_fingerprint(module.feature).digest == before


def test_the_readme_example_has_nothing_unfollowed(load_module):
    """The README's quick start: a global ``ticks`` frame beside ``make_bars(ticks, config)``."""
    module = load_module(
        "scope_readme",
        """
        import polars as pl

        def make_bars(ticks: pl.LazyFrame, config: dict) -> pl.LazyFrame:
            return ticks.sort("ts").with_columns(pl.col("price").pct_change().alias("ret"))

        ticks = pl.DataFrame({"ts": [1, 2], "price": [1.0, 2.0]})
        config = {"freq": "1m"}
        """,
    )
    fingerprint = code_fingerprint(module.make_bars)
    assert fingerprint.unfollowed == ()
    module.ticks = module.ticks.head(1)
    module.config = {"freq": "5m"}
    assert code_fingerprint(module.make_bars).digest == fingerprint.digest


@pytest.fixture(autouse=True, scope="module")
def _parameter_module(tmp_path_factory):
    """A module for the hypothesis test (function-scoped fixtures do not mix with @given)."""
    import importlib.util
    import sys

    global _PARAMETER_MODULE
    path = tmp_path_factory.mktemp("scope") / "scope_parameter.py"
    path.write_text(
        "import polars as pl\n\nconfig = None\n\n"
        "def make_bars(ticks, config):\n"
        "    return ticks.with_columns(pl.col('price') * config['k'])\n"
    )
    spec = importlib.util.spec_from_file_location("scope_parameter", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["scope_parameter"] = module
    spec.loader.exec_module(module)
    _PARAMETER_MODULE = module
    yield
    sys.modules.pop("scope_parameter", None)


_PARAMETER_MODULE = None


# -- the scope rules agree with CPython's compiler, name by name ---------------------------------

_GLOBAL_OPS = {"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME", "STORE_NAME"}
_GLOBAL_OPS |= {"DELETE_NAME"}
_LOCAL_OPS = {"LOAD_FAST", "STORE_FAST", "DELETE_FAST", "LOAD_DEREF", "STORE_DEREF"}
_LOCAL_OPS |= {"DELETE_DEREF", "LOAD_CLASSDEREF", "LOAD_CLOSURE"}


def _compiled_kinds(code) -> dict[tuple, set[str]]:
    """How the compiler resolved each name, by the source position of its instruction."""
    import dis
    import types

    found: dict[tuple, set[str]] = {}
    stack = [code]
    while stack:
        current = stack.pop()
        for instruction in dis.get_instructions(current):
            where = instruction.positions
            if where is None or where.lineno is None:
                continue
            key = (instruction.argval, where.lineno, where.col_offset, where.end_col_offset)
            if instruction.opname in _GLOBAL_OPS:
                found.setdefault(key, set()).add("global")
            elif instruction.opname in _LOCAL_OPS:
                found.setdefault(key, set()).add("local")
        stack += [c for c in current.co_consts if isinstance(c, types.CodeType)]
    return found


def _disagreements(source: str) -> tuple[int, list[str]]:
    """Compare ``local_names`` with the compiler on every top-level def/class of ``source``."""
    import ast

    from jules_cache.fingerprints._scopes import local_names

    compared, wrong = 0, []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        fragment = ast.Module(body=[node], type_ignores=[])  # analysed alone, as a feature is
        kinds = _compiled_kinds(compile(fragment, "<fragment>", "exec"))
        local = local_names(fragment)
        for name in ast.walk(fragment):
            if not isinstance(name, ast.Name):
                continue
            compiled = kinds.get((name.id, name.lineno, name.col_offset, name.end_col_offset))
            if compiled is None:  # not compiled to a name instruction (e.g. an annotation)
                continue
            compared += 1
            ours = "local" if id(name) in local else "global"
            if compiled != {ours}:
                wrong.append(
                    f"{node.name}: {name.id!r} line {name.lineno} is {compiled}, not {ours}"
                )
    return compared, wrong


def test_scopes_agree_with_the_compiler_on_real_code():
    """Every name in the forms above, and in a few large real modules, is resolved as CPython
    resolves it: a global the compiler loads is never taken for a local (a stale hit), and a
    local is never taken for a global (a false miss)."""
    import collections
    import dataclasses
    import inspect
    import typing

    import jules_cache.fingerprints.code

    sources = [textwrap.dedent(body) for body in [*LOCAL.values(), *GLOBAL.values()]]
    sources += [inspect.getsource(m) for m in (inspect, collections, dataclasses, typing)]
    sources.append(inspect.getsource(jules_cache.fingerprints.code))
    compared, wrong = 0, []
    for source in sources:
        count, errors = _disagreements(source)
        compared += count
        wrong += errors
    assert compared > 5000
    assert wrong == []
