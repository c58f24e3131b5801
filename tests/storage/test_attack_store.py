"""Attacks on the store's own paths: half-done removals, a full disk at COMMIT, lazy results
under auto-GC, orphans served as hits, and a group-shared root.

Each test fails on the code before the trust work and passes after (see docs/guide/defended.md).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from features import bar_count
from helpers import local_backend

from jules_cache import CacheWriteWarning, FeatureStore
from jules_cache.query.views import entry_link

pytestmark = pytest.mark.attack

CONFIG = {"freq": "1m"}
TESTS = Path(__file__).resolve().parents[1]


def _rows(store: FeatureStore, sql: str) -> list[tuple]:
    with local_backend(store).manifest.read() as con:
        return con.execute(sql).fetchall()


def _file_input_entry(store: FeatureStore, ticks: pl.DataFrame, tmp_path: Path):
    """An entry keyed from a Parquet input file: it has rows in entries AND entry_inputs."""
    source = tmp_path / "AAPL.parquet"
    ticks.filter(pl.col("symbol") == "AAPL").write_parquet(source)
    return store.fetch("AAPL", source, CONFIG, bar_count)


# -- one way to delete an entry -------------------------------------------------------


def _remove_by(store: FeatureStore, how: str, result) -> None:
    if how == "rm":
        store.remove(key=result.key)
    elif how == "gc":
        assert store.gc(retention_weeks=0, grace=0).ok
    elif how == "check-fix-lost-file":
        result.path.unlink()
        assert store.check(fix=True).consistent
    elif how == "quarantine-on-read":
        data = bytearray(result.path.read_bytes())
        data[len(data) // 3] ^= 0xFF  # damage a page
        result.path.write_bytes(bytes(data))
        store.check(fix=True, deep=True)
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["rm", "gc", "check-fix-lost-file", "quarantine-on-read"])
def test_every_removal_leaves_no_row_link_or_file_behind(store, ticks, tmp_path, how):
    result = _file_input_entry(store, ticks, tmp_path)
    link = entry_link(local_backend(store).layout, store.entry(result.key))
    assert link.samefile(result.path)
    assert _rows(store, "SELECT count(*) FROM entry_inputs") == [(1,)]
    _remove_by(store, how, result)
    assert _rows(store, "SELECT count(*) FROM entries") == [(0,)]
    assert _rows(store, "SELECT count(*) FROM entry_inputs") == [(0,)]
    assert not link.exists() and not link.parent.exists()  # nor the folders it emptied
    assert not result.path.exists()


def test_check_reports_and_fixes_orphan_rows_of_every_table(store, ticks, tmp_path):
    result = _file_input_entry(store, ticks, tmp_path)
    with local_backend(store).manifest.write() as con:
        con.execute("DELETE FROM entries WHERE key = ?", [result.key])  # a half-done delete
    result.path.unlink()
    report = store.check()
    assert [p.kind for p in report.problems if p.kind == "orphan_row"] == ["orphan_row"]
    fixed = store.check(fix=True)
    assert fixed.consistent
    assert _rows(store, "SELECT count(*) FROM entry_inputs") == [(0,)]


# -- lazy results under auto-GC ------------------------------------------------------


def test_a_lazy_miss_under_auto_gc_returns_a_valid_frame(root, ticks, monkeypatch):
    monkeypatch.setenv("FEATURE_STORE_GC_RETENTION_WEEKS", "0")
    aapl = ticks.filter(pl.col("symbol") == "AAPL")
    with FeatureStore(root, auto_gc=1e-6) as store:
        for freq in ("1m", "2m", "5m"):  # each publish is followed by an eager GC step
            config = {"freq": freq}
            value = store.get_or_compute("AAPL", aapl, config, bar_count, lazy=True)
            assert value.collect().equals(bar_count(aapl.lazy(), config).collect())


# -- a full disk at COMMIT -----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs (root only: a manifest checkpoint needs a few MB); the crash hook fills
    it right before the COMMIT."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)])
    if done.returncode:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_at_commit_leaves_a_clean_cache(small_disk, ticks, monkeypatch):
    root = small_disk / "cache"
    aapl = ticks.filter(pl.col("symbol") == "AAPL").head(20_000)
    monkeypatch.setenv("JULES_CACHE_CRASH_AT", "fill-disk:commit")
    monkeypatch.setenv("JULES_CACHE_CRASH_AT_ROOT", str(root))
    store = FeatureStore(root)
    with pytest.warns(CacheWriteWarning, match="No space left"):
        result = store.fetch("AAPL", aapl, CONFIG, bar_count)
    assert not result.stored
    assert result.value.equals(bar_count(aapl.lazy(), CONFIG).collect())
    monkeypatch.delenv("JULES_CACHE_CRASH_AT")
    (root / "tmp" / "fill-disk").unlink()  # the disk is freed
    report = store.check()
    assert report.consistent and not report.problems, report.counts
    again = store.fetch("AAPL", aapl, CONFIG, bar_count)  # and the next publish works
    assert not again.hit and again.stored
    assert store.fetch("AAPL", aapl, CONFIG, bar_count).hit


@pytest.mark.slow  # waits for the flush thread
def test_a_full_disk_at_the_row_flush_keeps_the_row_until_it_works(small_disk, ticks, monkeypatch):
    """Once a store has written the manifest, its rows are written by its flush thread: a full
    disk there fails no call (the result is published and served), is reported on the next
    call, and the row is written once the disk is freed."""
    root = small_disk / "cache"
    aapl = ticks.filter(pl.col("symbol") == "AAPL").head(20_000)
    store = FeatureStore(root)
    assert store.fetch("AAPL", aapl, {"freq": "5m"}, bar_count).stored  # the manifest works
    backend = local_backend(store)
    monkeypatch.setenv("JULES_CACHE_CRASH_AT", "fill-disk:commit")
    monkeypatch.setenv("JULES_CACHE_CRASH_AT_ROOT", str(root))
    result = store.fetch("AAPL", aapl, CONFIG, bar_count)
    assert result.stored and not result.hit
    deadline = time.monotonic() + 30
    while backend.take_error() is None:  # the flush thread's COMMIT failed
        assert time.monotonic() < deadline, "the row flush never ran"
        time.sleep(0.01)
    assert store.fetch("AAPL", aapl, CONFIG, bar_count).hit  # served meanwhile
    monkeypatch.delenv("JULES_CACHE_CRASH_AT")
    (root / "tmp" / "fill-disk").unlink()  # the disk is freed
    report = store.check()  # writes the rows kept in memory first
    assert report.consistent and not report.problems, report.counts
    entry = store.entry(result.key)
    assert entry is not None and entry.hit_count == 1
    store.close()


# -- orphans of a killed rm or GC ----------------------------------------------------


def test_an_orphan_served_as_a_hit_is_registered_again(store, ticks):
    aapl = ticks.filter(pl.col("symbol") == "AAPL")
    first = store.fetch("AAPL", aapl, CONFIG, bar_count)
    with local_backend(
        store
    ).manifest.write() as con:  # an rm killed after its COMMIT, before the unlink
        con.execute("DELETE FROM entries WHERE key = ?", [first.key])
    assert store.stats().entries == 0
    assert store.fetch("AAPL", aapl, CONFIG, bar_count).hit
    store.flush()
    stats = store.stats()
    assert stats.entries == 1 and stats.hits == 1
    assert store.entry(first.key) is not None
    view = store.sql("SELECT count(*) AS n FROM bar_count")
    assert view["n"][0] > 0


# -- also: a cache shared by a group --------------------------------------------------------


GROUP_SCRIPT = """
import os, sys
os.umask(0o002)
sys.path.insert(0, {tests!r})
from features import bar_count
from jules_cache import FeatureStore
from jules_cache.synthetic import make_ticks, symbol_names, ticks_for
ticks = ticks_for(make_ticks(symbol_names(3), 20_000, seed=11), "AAPL")
store = FeatureStore({root!r})
store.fetch("AAPL", ticks, {{"freq": "1m"}}, bar_count)
store.check(fix=True)
store.close()
"""


@pytest.mark.slow
def test_under_a_group_writable_umask_everything_is_group_writable(tmp_path):
    root = tmp_path / "shared-cache"
    script = GROUP_SCRIPT.format(tests=str(TESTS), root=str(root))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    not_group_writable = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and not mode & stat.S_IWGRP:
                not_group_writable.append(f"{path.relative_to(root)} {stat.filemode(mode)}")
    assert not not_group_writable
