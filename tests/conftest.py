"""Shared fixtures: a fresh cache root per test, ticks, a root filled with two entries,
modules written on the fly, and the installed ``jules-cache`` command.

Plain helper functions and classes live in ``helpers.py`` (``from helpers import frame``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest
from helpers import fill_two_entries

from jules_cache import FeatureStore
from jules_cache.synthetic import make_ticks, symbol_names, ticks_for

# Settings a user's shell may hold (the README suggests setting them) that would point the
# tests' stores, CLI runs and subprocesses at the user's own cache or catalog.
USER_SETTINGS = (
    "JULES_CACHE_ROOT",
    "FEATURE_STORE_PATH",
    "JULES_CACHE_CATALOG",
    "JULES_CACHE_CATALOG_SCHEMA",
    "FEATURE_STORE_GC_RETENTION_WEEKS",
    "FEATURE_STORE_LOG_DIR",
)


def pytest_configure(config: pytest.Config) -> None:
    """Run every test as on a fresh machine, whatever the user's environment names."""
    for name in USER_SETTINGS:
        os.environ.pop(name, None)


@pytest.fixture
def root(tmp_path):
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def empty_root(tmp_path_factory) -> Path:
    """A new cache root exactly as the first ``FeatureStore`` on an empty folder leaves it
    (folders, manifest, catalog), made once per session by this very code; never opened again.
    """
    template = tmp_path_factory.mktemp("empty_root") / "cache"
    FeatureStore(template).close()
    return template


@pytest.fixture
def store(root, request, empty_root):
    """A store on a fresh root; afterwards `check` must find the cache consistent.

    The root is a byte copy of ``empty_root`` (timestamps kept, so its catalog is as current
    as the original's): creating a root costs ~60-100 ms of DuckDB work (the manifest's
    migrations and the first catalog build), and most tests are not about creating one. The
    tests that are open ``FeatureStore(root)`` on the empty ``root`` folder themselves.

    Tests that damage the cache on purpose and leave it so are marked ``leaves_damage``.
    """
    shutil.copytree(empty_root, root, symlinks=True)
    with FeatureStore(root) as feature_store:
        yield feature_store
    if request.node.get_closest_marker("leaves_damage") is None and root.is_dir():
        report = feature_store.check()
        assert report.consistent, f"cache left inconsistent: {report.counts}"


@pytest.fixture(scope="session")
def ticks() -> pl.DataFrame:
    return make_ticks(symbol_names(3), 60_000, seed=11)


@pytest.fixture
def aapl(ticks) -> pl.DataFrame:
    return ticks_for(ticks, "AAPL")


@pytest.fixture
def two_entries(root, aapl) -> list[str]:
    """``root`` filled by ``fill_two_entries``; the two keys."""
    return fill_two_entries(root, aapl)


@pytest.fixture
def load_module(tmp_path) -> Iterator[Callable[[str, str], ModuleType]]:
    """Return ``load(name, source)``: write ``source`` as module ``name`` and import it (again,
    if ``name`` was loaded before). The modules leave ``sys.modules`` when the test ends."""
    folder = tmp_path / "modules"
    folder.mkdir()
    loaded: set[str] = set()

    def load(name: str, source: str) -> ModuleType:
        path = folder / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # where code fingerprints look a function's module up
        loaded.add(name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def jules_cache_command() -> str:
    """The installed ``jules-cache`` command: the console script next to this interpreter
    (found even when the environment's ``bin`` is not on PATH), else the one on PATH."""
    beside = Path(sys.executable).parent / "jules-cache"
    if beside.is_file():
        return str(beside)
    on_path = shutil.which("jules-cache")
    if on_path is not None:
        return on_path
    pytest.fail(
        f"no `jules-cache` command next to {sys.executable} or on PATH: install the project "
        "into this interpreter's environment (pip install -e '.[test]')"
    )
