"""Code fingerprints: the key follows the feature's own code and its user-module helpers."""

from __future__ import annotations

import functools
import importlib
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jules_cache.errors import FingerprintError
from jules_cache.fingerprints.code import code_fingerprint, feature_name

FEATURES = '''
import numpy as np
from {pkg} import helpers

WINDOW = {window}


def make_bars(frame, config):
    """Docstring: {doc}"""
    return helpers.scale(frame) + WINDOW  # comment: {doc}


def uses_numpy(x):
    return np.log(x)
'''

HELPERS = """
def scale(x):
    return x * {factor}
"""


@pytest.fixture
def write_package(tmp_path, monkeypatch):
    """Return a function that (re)writes and (re)imports a user package's features module."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

    def write(window=20, factor=2, doc="v1", pkg="userpkg"):
        for name in [m for m in sys.modules if m.startswith(pkg)]:
            del sys.modules[name]
        root = tmp_path / pkg
        root.mkdir(exist_ok=True)
        (root / "__init__.py").write_text("")
        (root / "helpers.py").write_text(textwrap.dedent(HELPERS.format(factor=factor)))
        (root / "features.py").write_text(FEATURES.format(pkg=pkg, window=window, doc=doc))
        importlib.invalidate_caches()
        return importlib.import_module(f"{pkg}.features")

    yield write
    for name in [m for m in sys.modules if m.startswith("userpkg")]:
        del sys.modules[name]


def test_same_code_same_digest_and_comments_do_not_matter(write_package):
    a = write_package(doc="first")
    b = write_package(doc="second, reworded docstring and comment")
    assert code_fingerprint(a.make_bars).digest == code_fingerprint(b.make_bars).digest
    fp = code_fingerprint(a.make_bars)
    assert set(fp.functions) >= {"userpkg.features.make_bars", "userpkg.helpers.scale"}


def test_helper_change_and_global_constant_change_invalidate(write_package):
    base = code_fingerprint(write_package().make_bars).digest
    assert code_fingerprint(write_package(factor=3).make_bars).digest != base
    assert code_fingerprint(write_package(window=21).make_bars).digest != base


def test_third_party_code_is_recorded_not_followed(write_package):
    fp = code_fingerprint(write_package().uses_numpy)
    assert list(fp.functions) == ["userpkg.features.uses_numpy"]


def _scaled(x, factor=2):
    return x * factor


def _other(x, factor=2):
    return x * factor + 1


@settings(deadline=None, max_examples=20)
@given(st.integers(-5, 5), st.integers(-5, 5))
def test_partials_closures_and_defaults(a, b):
    same = code_fingerprint(functools.partial(_scaled, factor=a)).digest
    assert same == code_fingerprint(functools.partial(_scaled, factor=a)).digest
    other = code_fingerprint(functools.partial(_scaled, factor=b)).digest
    assert (same == other) == (a == b)

    def make(k):
        def inner(x):
            return x + k

        return inner

    assert (code_fingerprint(make(a)).digest == code_fingerprint(make(b)).digest) == (a == b)


def test_code_change_changes_digest():
    assert code_fingerprint(_scaled).digest != code_fingerprint(_other).digest


def test_lambdas_on_one_line_are_told_apart():
    first, second = (lambda x: x + 1), (lambda x: x + 2)
    assert code_fingerprint(first).digest != code_fingerprint(second).digest
    assert feature_name(first).endswith("<lambda>")


class Scaler:
    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        return x * self.factor

    def apply(self, x):
        return self(x)


def test_methods_and_callable_objects_include_state():
    assert code_fingerprint(Scaler(2)).digest == code_fingerprint(Scaler(2)).digest
    assert code_fingerprint(Scaler(2)).digest != code_fingerprint(Scaler(3)).digest
    assert code_fingerprint(Scaler(2).apply).digest != code_fingerprint(Scaler(3).apply).digest
    assert feature_name(Scaler(2)) == f"{__name__}.Scaler"
    assert feature_name(Scaler(2).apply) == f"{__name__}.Scaler.apply"


def test_version_overrides_source_and_builtins_need_it():
    with pytest.raises(FingerprintError, match="version="):
        code_fingerprint(len)
    with pytest.raises(FingerprintError, match="version="):
        code_fingerprint(np.log)
    assert code_fingerprint(len, version="1").digest != code_fingerprint(len, version="2").digest
    assert (
        code_fingerprint(_scaled, version="1").digest
        != code_fingerprint(_other, version="1").digest
    )


def test_unsupported_closure_value_is_a_clear_error():
    lock = object()

    def feature(x):
        return lock, x

    with pytest.raises(FingerprintError, match="closure variable 'lock'"):
        code_fingerprint(feature)


def test_repl_defined_function_without_source():
    namespace: dict = {"__name__": "__main__"}
    exec("def f(x):\n    return x\n", namespace)
    with pytest.raises(FingerprintError, match="version="):
        code_fingerprint(namespace["f"])


class _Node:
    """A linked structure of the user's own class, as a parser or a tree model might hold."""

    def __init__(self, nxt):
        self.nxt = nxt


def _linked(length: int) -> _Node | None:
    head = None
    for _ in range(length):
        head = _Node(head)
    return head


LINKED = _linked(5000)


@pytest.mark.attack
def test_a_deep_object_graph_is_reported_not_a_crash():
    """Instances are described through their state; 5000 levels must not exhaust the stack."""

    def in_default(lf, config, start=LINKED):
        return start

    with pytest.raises(FingerprintError, match="nested deeper than 64"):
        code_fingerprint(in_default)

    def in_global(lf, config):
        return LINKED

    notes = code_fingerprint(in_global).unfollowed
    assert any("nested deeper than 64" in note for note in notes)
    assert code_fingerprint(in_global).digest == code_fingerprint(in_global).digest
