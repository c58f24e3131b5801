"""Shared fixtures and helpers: a fresh cache root per test, small synthetic frames, a counted
compute function, modules written on the fly, a byte-exact snapshot of folders, and the
installed ``jules-cache`` command.

The helpers are plain functions and classes (tests import them with ``from conftest import``)
because processes started with ``spawn`` must be able to import what they run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest
from features import bar_count

from jules_cache import FeatureStore
from jules_cache.synthetic import make_ticks, symbol_names, ticks_for


@pytest.fixture
def root(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def store(root, request):
    """A store on a fresh root; afterwards `check` must find the cache consistent.

    Tests that damage the cache on purpose and leave it so are marked ``leaves_damage``.
    """
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


def fill_two_entries(root: Path, aapl: pl.DataFrame) -> list[str]:
    """Fill ``root`` with two entries of feature "bars" (AAPL, MSFT; AAPL's read once more,
    one hit); return their keys."""
    with FeatureStore(root) as store:
        first = store.fetch("AAPL", aapl, {"freq": "1m"}, bar_count, name="bars")
        store.fetch("AAPL", aapl, {"freq": "1m"}, bar_count, name="bars")
        second = store.fetch("MSFT", aapl, {"freq": "1m"}, bar_count, name="bars")
    return [first.key, second.key]


@pytest.fixture
def two_entries(root, aapl) -> list[str]:
    """``root`` filled by ``fill_two_entries``; the two keys."""
    return fill_two_entries(root, aapl)


def frame(i: int, rows: int = 200) -> pl.DataFrame:
    """Frame number ``i`` of a family of small inputs (another ``i``, other data, another key):
    ``ts`` one second apart, ``price`` = i + row number, ``size`` = row number."""
    start = pl.datetime(2024, 1, 1)
    return pl.DataFrame(
        {
            "ts": pl.datetime_range(start, start + pl.duration(seconds=rows - 1), "1s", eager=True),
            "price": [float(i + j) for j in range(rows)],
            "size": list(range(rows)),
        }
    )


def snapshot(*folders: Path) -> dict[str, bytes | str]:
    """Everything under ``folders``, links not followed: a file's bytes, a link's target
    ("-> target"), "dir" for a folder; to compare before and after something that must not
    touch them.

    manifest.lock holds the pid of the last process that took it exclusively (a `jules-cache`
    subprocess opening the store does): compared as a pid, not as bytes.
    """
    found: dict[str, bytes | str] = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if path.is_symlink():
                    found[str(path)] = "-> " + os.readlink(path)
                elif path.is_dir():
                    found[str(path)] = "dir"
                else:
                    data = path.read_bytes()
                    pid = name == "manifest.lock" and data.isdigit()
                    found[str(path)] = b"pid" if pid else data
    return found


class Counted:
    """A compute function (``func``, bar_count by default) that leaves one marker file in
    ``log_dir`` per real computation, so a test can count them across stores."""

    def __init__(self, log_dir: Path, func: Callable = bar_count):
        log_dir.mkdir(exist_ok=True)
        self.log_dir = log_dir
        self.func = func

    def __call__(self, ticks, config):
        (self.log_dir / uuid.uuid4().hex).touch()
        return self.func(ticks, config)

    @property
    def calls(self) -> int:
        return len(list(self.log_dir.iterdir()))


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
