"""Attack: every route by which a feature reaches the user's own code must be in the key.

Each test writes a real package into ``tmp_path``, runs the feature through ``FeatureStore.fetch``
in a NEW process, edits one helper file, and asserts that the next new process recomputes (a
miss with the new value) and that a third, unchanged process hits. Fresh processes are the point:
a stale hit happens when a later process serves an entry computed by older code.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.attack, pytest.mark.slow]  # three new processes per test

RUNNER = """
import importlib, json, sys
import polars as pl
from jules_cache import FeatureStore

root, module, attr = sys.argv[1:4]
feature = getattr(importlib.import_module(module), attr)
frame = pl.DataFrame({"x": [1.0, 2.0, 3.0]})
with FeatureStore(root) as store:
    result = store.fetch("AAA", frame, {"k": 1}, feature)
    explanation = store.explain("AAA", frame, {"k": 1}, feature)
print(json.dumps({
    "hit": result.hit,
    "y": result.value["y"].to_list(),
    "explain": str(explanation),
    "unfollowed": list(getattr(explanation, "unfollowed", ())),
}))
"""


def write_package(base: Path, files: dict[str, str]) -> None:
    """Write ``{"mypkg/sub.py": source, ...}`` under ``base`` (packages get an ``__init__``)."""
    for relative, source in files.items():
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(base).parents:
            if parent != Path(".") and not (base / parent / "__init__.py").exists():
                (base / parent / "__init__.py").write_text("")
        path.write_text(textwrap.dedent(source))


def edit(base: Path, relative: str, old: str, new: str) -> None:
    path = base / relative
    text = path.read_text()
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new))


def run(base: Path, feature: str = "mypkg.features:feature") -> dict:
    """Fetch ``feature`` ("module:attr") in a new process; return hit, values and explanation.

    Bytecode caching is off (an edit within the same second with the same size would otherwise
    load the old ``.pyc``) and every run gets its own hash seed, so set or dict ordering that
    leaks into a digest shows up as a false miss.
    """
    module, attr = feature.split(":")
    env = {
        **os.environ,
        "PYTHONPATH": str(base),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": str(random.randrange(1, 2**32)),
    }
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(base.parent / "cache"), module, attr],
        capture_output=True,
        text=True,
        env=env,
        cwd=base,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_edit_recomputes(base: Path, relative: str, old: str, new: str, **kw) -> dict:
    """First run computes, an edit of ``relative`` recomputes, an unchanged run hits."""
    first = run(base, **kw)
    assert not first["hit"]
    edit(base, relative, old, new)
    after = run(base, **kw)
    assert not after["hit"], f"stale hit after editing {relative}: {after['explain']}"
    assert after["y"] != first["y"], "the recompute must use the edited code"
    again = run(base, **kw)
    assert again["hit"], f"an unchanged re-run in a new process must hit: {again['explain']}"
    assert again["y"] == after["y"]
    return after


HELPER = """
def helper2():
    return 2.0
"""


@pytest.fixture
def pkg(tmp_path) -> Path:
    base = tmp_path / "src"
    base.mkdir()
    return base


def test_attribute_chain_through_modules(pkg):
    """The chain first reported unfollowed: ``mypkg.sub.helper2()``."""
    write_package(
        pkg,
        {
            "mypkg/sub.py": HELPER,
            "mypkg/features.py": """
                import polars as pl
                import mypkg.sub

                def feature(lf, config):
                    return lf.with_columns(y=pl.col("x") * mypkg.sub.helper2())
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")


def test_deep_chain_and_import_as(pkg):
    write_package(
        pkg,
        {
            "mypkg/sub/deep.py": HELPER,
            "mypkg/features.py": """
                import polars as pl
                import mypkg.sub.deep as m
                import mypkg.sub.deep

                def feature(lf, config):
                    return lf.with_columns(y=pl.col("x") * m.helper2() + mypkg.sub.deep.helper2())
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub/deep.py", "2.0", "3.0")


def test_from_package_import_module(pkg):
    write_package(
        pkg,
        {
            "mypkg/sub.py": HELPER,
            "mypkg/features.py": """
                import polars as pl
                from mypkg import sub

                def feature(lf, config):
                    return lf.with_columns(y=pl.col("x") * sub.helper2())
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")


def test_import_inside_the_function_body(pkg):
    """The module is imported only when the feature runs: on a hit it never is."""
    write_package(
        pkg,
        {
            "mypkg/sub.py": HELPER,
            "mypkg/features.py": """
                import polars as pl

                def feature(lf, config):
                    import mypkg.sub as m
                    from mypkg.sub import helper2
                    from . import sub
                    return lf.with_columns(y=pl.col("x") * m.helper2() + helper2() + sub.helper2())
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")


def test_module_passed_as_a_value(pkg):
    """``apply(sub)``: the receiver uses ``m.helper2()`` on a parameter, so all of sub counts."""
    write_package(
        pkg,
        {
            "mypkg/sub.py": HELPER,
            "mypkg/tools.py": """
                def apply(m):
                    return m.helper2()
            """,
            "mypkg/features.py": """
                import polars as pl
                from mypkg import sub, tools

                def feature(lf, config):
                    return lf.with_columns(y=pl.col("x") * tools.apply(sub))
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")


def test_module_captured_in_a_closure(pkg):
    write_package(
        pkg,
        {
            "mypkg/sub.py": HELPER,
            "mypkg/features.py": """
                import polars as pl

                def make():
                    import mypkg.sub as m

                    def feature(lf, config):
                        return lf.with_columns(y=pl.col("x") * m.helper2())

                    return feature

                feature = make()
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")


MODEL = """
class Model:
    WINDOW = 20

    def predict(self, x):
        return x * self._scale() + self.WINDOW

    def _scale(self):
        return 2.0
"""


def test_method_of_a_global_instance(pkg):
    write_package(
        pkg,
        {
            "mypkg/models.py": MODEL,
            "mypkg/features.py": """
                import polars as pl
                from mypkg.models import Model

                MODEL = Model()

                def feature(lf, config):
                    return lf.with_columns(y=MODEL.predict(pl.col("x")))
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/models.py", "return 2.0", "return 3.0")


def test_self_method_of_an_instance_made_in_the_feature(pkg):
    write_package(
        pkg,
        {
            "mypkg/models.py": MODEL,
            "mypkg/features.py": """
                import polars as pl
                import mypkg.models

                def feature(lf, config):
                    return lf.with_columns(y=mypkg.models.Model().predict(pl.col("x")))
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/models.py", "return 2.0", "return 3.0")


def test_bound_and_unbound_methods_as_the_feature(pkg):
    """``self._scale()`` inside the feature's own method reaches the rest of its class."""
    write_package(
        pkg,
        {
            "mypkg/models.py": MODEL,
            "mypkg/features.py": """
                import polars as pl
                from mypkg.models import Model

                class Feature(Model):
                    def run(self, lf, config):
                        return lf.with_columns(y=self.predict(pl.col("x")))

                bound = Feature().run

                def unbound(lf, config):
                    return Feature.run(Feature(), lf, config)
            """,
        },
    )
    assert_edit_recomputes(
        pkg, "mypkg/models.py", "return 2.0", "return 3.0", feature="mypkg.features:bound"
    )
    assert_edit_recomputes(
        pkg, "mypkg/models.py", "return 3.0", "return 4.0", feature="mypkg.features:unbound"
    )


def test_class_attribute_data(pkg):
    write_package(
        pkg,
        {
            "mypkg/models.py": MODEL,
            "mypkg/features.py": """
                import polars as pl
                from mypkg import models

                MODEL = models.Model()

                def feature(lf, config):
                    return lf.with_columns(y=MODEL.predict(pl.col("x")))
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/models.py", "WINDOW = 20", "WINDOW = 21")


def test_class_attribute_set_after_the_class_body(pkg):
    """The value the class really has counts, not only its source."""
    write_package(
        pkg,
        {
            "mypkg/models.py": MODEL + "\nModel.WINDOW = 30\n",
            "mypkg/features.py": """
                import polars as pl
                from mypkg import models

                def feature(lf, config):
                    return lf.with_columns(y=models.Model().predict(pl.col("x")))
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/models.py", "Model.WINDOW = 30", "Model.WINDOW = 31")


def test_inherited_method_of_a_base_class_in_another_module(pkg):
    write_package(
        pkg,
        {
            "mypkg/base.py": MODEL,
            "mypkg/models.py": """
                from mypkg import base

                class Child(base.Model):
                    pass
            """,
            "mypkg/features.py": """
                import polars as pl
                from mypkg.models import Child

                CHILD = Child()

                def feature(lf, config):
                    return lf.with_columns(y=CHILD.predict(pl.col("x")))
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/base.py", "return 2.0", "return 3.0")


def test_partial_as_the_feature_and_in_a_global(pkg):
    write_package(
        pkg,
        {
            "mypkg/sub.py": HELPER,
            "mypkg/features.py": """
                import functools
                import polars as pl
                from mypkg import sub

                def apply(lf, config, fn):
                    return lf.with_columns(y=pl.col("x") * fn())

                feature = functools.partial(apply, fn=sub.helper2)
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")


def test_partial_held_in_a_global(pkg):
    write_package(
        pkg,
        {
            "mypkg/sub.py": """
                def scale(x, factor):
                    return x * factor + 1.0
            """,
            "mypkg/features.py": """
                import functools
                import polars as pl
                from mypkg.sub import scale

                SCALE = functools.partial(scale, factor=2.0)

                def feature(lf, config):
                    return lf.with_columns(y=SCALE(pl.col("x")))
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "+ 1.0", "+ 5.0")


DECO = """
import functools

def doubled(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs) * 2.0
    return wrapper
"""


def test_decorator_body_of_the_feature(pkg):
    write_package(
        pkg,
        {
            "mypkg/deco.py": DECO,
            "mypkg/features.py": """
                import polars as pl
                from mypkg.deco import doubled

                @doubled
                def scale():
                    return 1.0

                def feature(lf, config):
                    return lf.with_columns(y=pl.col("x") * scale())
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/deco.py", "* 2.0", "* 4.0")


def test_decorated_helper_reached_through_a_module(pkg):
    write_package(
        pkg,
        {
            "mypkg/deco.py": DECO,
            "mypkg/sub.py": """
                from mypkg.deco import doubled

                @doubled
                def helper2():
                    return 2.0
            """,
            "mypkg/features.py": """
                import polars as pl
                import mypkg.sub

                def feature(lf, config):
                    return lf.with_columns(y=pl.col("x") * mypkg.sub.helper2())
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")


def test_helper_in_a_default_argument_and_a_closure(pkg):
    write_package(
        pkg,
        {
            "mypkg/sub.py": HELPER,
            "mypkg/features.py": """
                import polars as pl
                from mypkg import sub

                def make(fn):
                    def feature(lf, config, other=sub.helper2):
                        return lf.with_columns(y=pl.col("x") * fn() + other())
                    return feature

                feature = make(sub.helper2)
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")


def test_helper_behind_lru_cache_and_a_library_decorator(pkg):
    """Third-party wrappers are not followed themselves, but what they wrap is."""
    write_package(
        pkg,
        {
            "mypkg/sub.py": """
                import contextlib
                import functools

                @functools.lru_cache
                def helper2():
                    return 2.0

                @contextlib.contextmanager
                def scaled():
                    yield helper2() + 1.0
            """,
            "mypkg/features.py": """
                import polars as pl
                from mypkg import sub

                def feature(lf, config):
                    with sub.scaled() as factor:
                        return lf.with_columns(y=pl.col("x") * factor)
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")
    edit(pkg, "mypkg/sub.py", "+ 1.0", "+ 2.0")
    assert not run(pkg)["hit"]


def test_singledispatch_implementation(pkg):
    write_package(
        pkg,
        {
            "mypkg/sub.py": """
                import functools

                @functools.singledispatch
                def factor(x):
                    raise TypeError(x)

                @factor.register
                def _(x: str):
                    return 2.0
            """,
            "mypkg/features.py": """
                import polars as pl
                from mypkg import sub

                def feature(lf, config):
                    return lf.with_columns(y=pl.col("x") * sub.factor("a"))
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")


def test_helper_in_a_global_registry(pkg):
    write_package(
        pkg,
        {
            "mypkg/sub.py": HELPER,
            "mypkg/features.py": """
                import polars as pl
                from mypkg import sub

                REGISTRY = {"scale": sub.helper2, "offsets": [1.0, 2.0]}

                def feature(lf, config):
                    return lf.with_columns(y=pl.col("x") * REGISTRY["scale"]())
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")


def test_getattr_with_a_constant_or_computed_name(pkg):
    write_package(
        pkg,
        {
            "mypkg/sub.py": HELPER,
            "mypkg/features.py": """
                import polars as pl
                from mypkg import sub

                def feature(lf, config):
                    name = "helper" + str(2)
                    return lf.with_columns(
                        y=pl.col("x") * getattr(sub, "helper2")() + getattr(sub, name)()
                    )
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")


def test_globals_lookup_by_computed_name(pkg):
    write_package(
        pkg,
        {
            "mypkg/sub.py": HELPER,
            "mypkg/features.py": """
                import polars as pl
                from mypkg.sub import helper2

                def feature(lf, config):
                    name = config.get("helper", "helper2")
                    return lf.with_columns(y=pl.col("x") * globals()[name]())
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")


def test_importlib_with_a_constant_name(pkg):
    write_package(
        pkg,
        {
            "mypkg/sub.py": HELPER,
            "mypkg/features.py": """
                import importlib
                import polars as pl

                def feature(lf, config):
                    module = importlib.import_module("mypkg.sub")
                    return lf.with_columns(y=pl.col("x") * module.helper2())
            """,
        },
    )
    assert_edit_recomputes(pkg, "mypkg/sub.py", "2.0", "3.0")


def test_routes_that_cannot_be_followed_are_reported(pkg):
    write_package(
        pkg,
        {
            "mypkg/sub.py": HELPER,
            "mypkg/features.py": """
                import importlib
                import sys
                import polars as pl

                PRICE = pl.col("x")

                def feature(lf, config):
                    name = config.get("module", "mypkg.sub")
                    module = importlib.import_module(name)
                    factor = eval("module.helper2()")
                    other = sys.modules[name]
                    return lf.with_columns(y=PRICE * factor * getattr(other, "helper" + "2")())
            """,
        },
    )
    result = run(pkg)
    assert result["unfollowed"] == [
        "mypkg.features.feature -> PRICE: a polars.expr.expr.Expr is recorded by type only",
        "mypkg.features.feature: eval() runs code from a string",
        "mypkg.features.feature: getattr(other, <computed name>) is not followed",
        "mypkg.features.feature: importlib.import_module() of a computed module name",
        "mypkg.features.feature: sys.modules[...] lookup",
    ]
    assert "not followed by the code fingerprint" in result["explain"]
    assert "eval() runs code from a string" in result["explain"]


def test_a_moved_checkout_still_hits(tmp_path):
    """No absolute path, address or hash-seed order in the digest: a copy elsewhere hits."""
    files = {
        "mypkg/sub.py": HELPER,
        "mypkg/models.py": MODEL,
        "mypkg/features.py": """
            import functools
            import polars as pl
            import mypkg.sub
            from mypkg.models import Model

            MODEL = Model()
            NAMES = {"a", "b", "c", "d"}
            SCALE = functools.partial(mypkg.sub.helper2)

            def feature(lf, config):
                return lf.with_columns(y=MODEL.predict(pl.col("x")) * SCALE() + len(NAMES))
        """,
    }
    write_package(tmp_path / "one", files)
    write_package(tmp_path / "two", files)
    assert not run(tmp_path / "one")["hit"]
    assert run(tmp_path / "two")["hit"]


EDITED_BEFORE_THE_CALL = """
import importlib, json, pathlib, sys
import polars as pl
from jules_cache import FeatureStore

root = sys.argv[1]
sys.path.insert(0, sys.argv[2])
import mypkg.features as features  # the old code is imported, then the file is edited
source = pathlib.Path(features.__file__)
source.write_text(source.read_text().replace("* 2", "* 3"))
frame = pl.DataFrame({"x": [1.0, 2.0, 3.0]})
with FeatureStore(root) as store:
    result = store.fetch("AAA", frame, {"k": 1}, features.feature)  # runs the old code
print(json.dumps({"hit": result.hit, "y": result.value["y"].to_list()}))
"""


@pytest.mark.xfail(
    strict=True,
    reason="known gap (docs/guide/notebooks.md): the fingerprint reads the source file, not "
    "the code the process runs, so a module edited after import keys the old code's result "
    "under the new source",
)
def test_a_module_edited_after_import_never_serves_the_old_codes_result(pkg):
    write_package(
        pkg,
        {
            "mypkg/features.py": """
            import polars as pl
            def feature(frame, config):
                return frame.with_columns((pl.col("x") * 2).alias("y"))
            """
        },
    )
    done = subprocess.run(
        [sys.executable, "-c", EDITED_BEFORE_THE_CALL, str(pkg.parent / "cache"), str(pkg)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["y"] == [2.0, 4.0, 6.0]  # the old code ran
    later = run(pkg)  # a new process runs the edited code
    assert later["y"] == [3.0, 6.0, 9.0], "the old code's result was served for the new code"
