"""Attacks on the files: planted symlinks, a file copied over another key, half-done deletions.

Each test plants what a careless or hostile user could leave inside a cache root and runs
what the library does (GC, check --fix, --rebuild, refresh_views, rm, a miss, a hit). The rule
proven: nothing outside the root is ever created, truncated, moved or deleted, and no wrong
frame is ever served.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from features import bar_count
from helpers import local_backend, snapshot

from jules_cache import CacheWriteWarning, FeatureStore, JulesCacheError, QueryError
from jules_cache.query.views import entry_link, link_folder

pytestmark = pytest.mark.attack

CONFIG = {"freq": "1m"}
SYMBOLS = ("AAPL", "MSFT")


@pytest.fixture
def cache(root, ticks):
    """A root with two results of one feature, and what they computed."""
    with FeatureStore(root) as store:
        results = {
            symbol: store.fetch(symbol, ticks.filter(pl.col("symbol") == symbol), CONFIG, bar_count)
            for symbol in SYMBOLS
        }
    return results


@pytest.fixture
def outside(tmp_path, cache):
    """Someone's folder outside the root: key-named Parquet files, lock-named files, a tree."""
    folder = tmp_path / "outside"
    (folder / "nested").mkdir(parents=True)
    for result in cache.values():  # valid results under the names GC and check look for
        shutil.copy(result.path, folder / result.path.name)
        shutil.copy(result.path, folder / "nested" / result.path.name)
        (folder / f"{result.key}.lock").write_text("precious lock-named file\n")
    (folder / "notes.txt").write_text("precious\n")
    (folder / "manifest.lock").write_text("precious\n")
    return folder


def _replace_with_link(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target, target_is_directory=target.is_dir())


def _first(cache):
    return cache[SYMBOLS[0]]


PLANTS: dict[str, Callable[[Path, Path, dict], None]] = {
    "views": lambda root, out, cache: _replace_with_link(root / "views", out),
    "views-feature": lambda root, out, cache: _replace_with_link(
        link_folder_of(root, _first(cache)), out
    ),
    "views-schema": lambda root, out, cache: _replace_with_link(
        _link_of(root, _first(cache)).parent.parent, out
    ),
    "views-symbol": lambda root, out, cache: _replace_with_link(
        _link_of(root, _first(cache)).parent, out
    ),
    "views-stray": lambda root, out, cache: _replace_with_link(root / "views" / "stray", out),
    "objects": lambda root, out, cache: _replace_with_link(root / "objects", out / "nested"),
    "objects-shard": lambda root, out, cache: _replace_with_link(
        _first(cache).path.parent, out / "nested"
    ),
    "tmp": lambda root, out, cache: _replace_with_link(root / "tmp", out),
    "locks": lambda root, out, cache: _replace_with_link(root / "locks", out),
    "key-lock": lambda root, out, cache: _replace_with_link(
        root / "locks" / f"{_first(cache).key}.lock", out / f"{_first(cache).key}.lock"
    ),
    "manifest-lock": lambda root, out, cache: _replace_with_link(
        root / "manifest.lock", out / "manifest.lock"
    ),
    "quarantine": lambda root, out, cache: _replace_with_link(root / "quarantine", out),
}


def _link_of(root: Path, result) -> Path:
    with FeatureStore(root) as store:
        return entry_link(local_backend(store).layout, store.entry(result.key))


def link_folder_of(root: Path, result) -> Path:
    from jules_cache.storage.layout import Layout

    return link_folder(Layout(root.resolve()), result.feature)


def _store_action(action: str) -> Callable[[Path, pl.DataFrame, dict], object]:
    def run(root: Path, ticks: pl.DataFrame, cache: dict) -> object:
        with FeatureStore(root, lock_timeout=5) as store:
            first = _first(cache)
            aapl = ticks.filter(pl.col("symbol") == first.symbol)
            if action == "gc":
                return store.gc()
            if action == "gc-grace-0":
                return store.gc(grace=0, retention_weeks=0)
            if action == "check-fix":
                return store.check(fix=True, grace_seconds=0)
            if action == "check-rebuild":
                return store.check(rebuild=True, grace_seconds=0)
            if action == "refresh-views":
                return store.refresh_views()
            if action == "rm":
                return store.remove(feature=first.feature)
            if action == "miss":
                return store.fetch(first.symbol, aapl, {"freq": "2m"}, bar_count)
            if action == "hit":
                return store.fetch(first.symbol, aapl, CONFIG, bar_count)
            raise AssertionError(action)

    return run


ACTIONS = ["gc", "gc-grace-0", "check-fix", "check-rebuild", "refresh-views", "rm", "miss", "hit"]


@pytest.mark.slow
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("plant", list(PLANTS))
def test_a_planted_symlink_never_leads_outside_the_root(root, ticks, cache, outside, plant, action):
    PLANTS[plant](root, outside, cache)
    before = snapshot(outside)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = _store_action(action)(root, ticks, cache)
        for warning in caught:  # a miss may return its value uncached, saying why
            assert issubclass(warning.category, CacheWriteWarning), warning
            assert "link" in str(warning.message), warning.message
    except JulesCacheError as exc:  # refusing is fine; it must name what it refused
        message = str(exc)
        assert "link" in message or "not a directory" in message or "not a regular" in message, (
            message
        )
    else:
        if action in ("miss", "hit"):
            expected = bar_count(
                ticks.filter(pl.col("symbol") == _first(cache).symbol).lazy(),
                {"freq": "2m"} if action == "miss" else CONFIG,
            ).collect()
            assert result.value.equals(expected)
    assert snapshot(outside) == before
    assert outside.is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("plant", ["objects-shard", "views", "manifest-lock"])
def test_the_cli_refuses_a_planted_symlink_with_exit_1_naming_it(root, cache, outside, plant):
    PLANTS[plant](root, outside, cache)
    before = snapshot(outside)
    for command in (["gc", "--grace", "0s"], ["check", "--fix"]):
        done = subprocess.run(
            [sys.executable, "-m", "jules_cache", "--root", str(root), *command],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        assert "link" in done.stderr, done.stderr
    assert snapshot(outside) == before


def test_a_root_that_is_itself_a_symlink_keeps_working(tmp_path, ticks):
    real = tmp_path / "real-root"
    real.mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(real, target_is_directory=True)
    aapl = ticks.filter(pl.col("symbol") == "AAPL")
    with FeatureStore(alias) as store:
        first = store.fetch("AAPL", aapl, CONFIG, bar_count)
        assert store.fetch("AAPL", aapl, CONFIG, bar_count).hit
        assert store.gc(retention_weeks=0, grace=0).ok
        assert store.check(fix=True).consistent
    assert not first.path.exists()
    assert first.path.resolve().is_relative_to(real)


# -- a hit checks the key the file carries -----------------------------------------------------


@pytest.mark.slow
def test_a_file_copied_over_another_key_is_never_served(store, ticks):
    aapl = ticks.filter(pl.col("symbol") == "AAPL")
    msft = ticks.filter(pl.col("symbol") == "MSFT")
    a = store.fetch("AAPL", aapl, CONFIG, bar_count)
    b = store.fetch("MSFT", msft, CONFIG, bar_count)
    shutil.copy(a.path, b.path)  # same size class; a valid Parquet file with A's frame
    for lazy in (False, True):
        again = store.fetch("MSFT", msft, CONFIG, bar_count, lazy=lazy)
        value = again.value.collect() if lazy else again.value
        assert value.equals(bar_count(msft.lazy(), CONFIG).collect())
        assert not value.equals(a.value)
    assert list((store.root / "quarantine").iterdir())  # the impostor kept for inspection
    # A new process (nothing verified in memory) gets B's frame too.
    script = (
        f"import sys, polars as pl; sys.path.insert(0, {str(Path(__file__).parents[1])!r})\n"
        "from features import bar_count\n"
        "from jules_cache import FeatureStore\n"
        "from jules_cache.synthetic import make_ticks, symbol_names, ticks_for\n"
        "msft = ticks_for(make_ticks(symbol_names(3), 60_000, seed=11), 'MSFT')\n"
        f"r = FeatureStore({str(store.root)!r}).fetch('MSFT', msft, {CONFIG!r}, bar_count)\n"
        f"assert r.value.equals(bar_count(msft.lazy(), {CONFIG!r}).collect())\n"
        "print('hit' if r.hit else 'miss')\n"
    )
    shutil.copy(a.path, b.path)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "miss"


def test_sql_refuses_a_file_copied_over_another_key(store, ticks):
    aapl = ticks.filter(pl.col("symbol") == "AAPL")
    msft = ticks.filter(pl.col("symbol") == "MSFT")
    a = store.fetch("AAPL", aapl, CONFIG, bar_count)
    b = store.fetch("MSFT", msft, CONFIG, bar_count)
    store.flush()  # both listed: the attack is on a listed entry's file
    shutil.copy(a.path, b.path)
    for query in (
        "SELECT count(*) FROM bar_count",
        "SELECT * FROM bar_count WHERE symbol = 'MSFT'",
    ):
        with pytest.raises(QueryError, match="check --fix"):
            store.sql(query)
    assert store.check(fix=True).consistent  # quarantines the impostor, as the message says
    assert store.sql("SELECT count(*) AS n FROM bar_count")["n"][0] == len(a.value)
