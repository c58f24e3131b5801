"""A process that only hits never loads DuckDB, not even at exit or on close(): its counts go to
a journal file (``storage.counts_journal``) that the next write or read of the manifest through
the API folds in, once."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from features import bar_count
from helpers import local_backend

from jules_cache import FeatureStore
from jules_cache.storage import counts_journal
from jules_cache.storage.layout import Layout

HIT_ONLY = """
import atexit, sys
from pathlib import Path
# Registered first, so it runs last: after jules_cache's own exit flush.
atexit.register(lambda: Path(sys.argv[2]).write_text(str("duckdb" in sys.modules)))
import polars as pl
from features import bar_count
from jules_cache import FeatureStore
store = FeatureStore(sys.argv[1])
ticks = pl.read_parquet(Path(sys.argv[1]).parent / "aapl.parquet")
assert store.fetch("AAPL", ticks, {"freq": "1m"}, bar_count).hit
"""


def hit_in_new_process(root: Path, tmp_path: Path) -> bool:
    """Run one hit in a new interpreter; whether DuckDB was loaded by the time it exited."""
    marker = tmp_path / "duckdb-loaded"
    tests = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", HIT_ONLY, str(root), str(marker)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tests), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    return marker.read_text() == "True"


def hits_of(store: FeatureStore) -> int:
    return store.stats().hits


def test_a_hit_only_process_never_loads_duckdb_and_its_hits_are_counted(root, aapl, tmp_path):
    aapl.write_parquet(root.parent / "aapl.parquet")
    with FeatureStore(root) as store:
        store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
        store.flush()  # its miss counted in the manifest: no journal of its own
    for _ in range(3):
        assert hit_in_new_process(root, tmp_path) is False
    assert len(counts_journal.waiting(Layout(root))) == 3  # one file per process
    with FeatureStore(root) as store:
        assert hits_of(store) == 3
        assert counts_journal.waiting(Layout(root)) == []  # folded in, once
        assert hits_of(store) == 3


def test_a_publish_folds_the_journal_in_with_its_own_row(root, aapl, ticks, tmp_path):
    aapl.write_parquet(root.parent / "aapl.parquet")
    with FeatureStore(root, hit_flush_seconds=0) as store:
        store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
        hit_in_new_process(root, tmp_path)
        assert len(counts_journal.waiting(Layout(root))) == 1
        store.get_or_compute("AAPL", aapl, {"freq": "5m"}, bar_count)  # a miss: a write
        assert counts_journal.waiting(Layout(root)) == []
        hits = sorted(entry.hit_count for entry in store.entries())
        assert hits == [0, 1]  # the other process's hit, on the 1m entry


def test_an_unreadable_journal_file_is_logged_and_dropped_never_blocking_writes(
    store, aapl, caplog
):
    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
    layout = local_backend(store).layout
    folder = counts_journal.folder(layout)
    folder.mkdir(exist_ok=True)
    (folder / "123.cut.json").write_text('{"hits": {"ab')  # damaged on disk
    (folder / "124.abc.json.part").write_text("{")  # being written: not a journal file yet
    with caplog.at_level(logging.WARNING, logger="jules_cache"):
        assert hits_of(store) == 0
    assert "ignoring unreadable hit counts" in caplog.text
    assert counts_journal.waiting(layout) == []
    assert (folder / "124.abc.json.part").exists()  # not a journal file: never read
    (folder / "124.abc.json.part").unlink()


def test_a_counts_link_planted_in_the_root_is_never_followed(store, aapl, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "1.a.json").write_text('{"hits": {}, "misses": 5, "calls": {}}')
    layout = local_backend(store).layout
    counts_journal.folder(layout).symlink_to(outside)
    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
    local_backend(store).flush(closing=True)  # the journal cannot be written: the manifest
    assert store.stats().misses == 1 and store.stats().hits == 1
    assert (outside / "1.a.json").exists()  # never read, never deleted
    counts_journal.folder(layout).unlink()
