"""The same data passed as a Parquet path, a read frame or a scan is one key.

A notebook passing ``"ticks.parquet"`` and a trainer passing ``pl.read_parquet(...)`` or
``pl.scan_parquet(...)`` must share one cached result: a path is keyed by its decoded content,
exactly as the frame is, and that digest is memoised by the files' stat.
"""

from __future__ import annotations

import random

import polars as pl
import pyarrow.parquet as pq
import pytest
from features import bar_count
from helpers import Counted

from jules_cache import FeatureStore
from jules_cache.fingerprints import files as file_fingerprints
from jules_cache.fingerprints import inputs
from jules_cache.fingerprints.data import as_arrow, fingerprint_table


def fetch(store, data, counter):
    return store.fetch("AAPL", data, {"freq": "1m"}, counter, name="bars")


def test_a_path_a_read_frame_and_a_scan_are_one_key_and_one_compute(store, aapl, tmp_path):
    path = tmp_path / "ticks.parquet"
    aapl.write_parquet(path, row_group_size=5_000)
    counter = Counted(tmp_path / "calls")
    ways = [
        path,
        str(path),
        pl.read_parquet(path),
        pl.scan_parquet(path),
        pq.read_table(path),
        [path],
    ]
    results = [fetch(store, data, counter) for data in ways]
    assert counter.calls == 1
    assert len({r.key for r in results}) == 1
    assert all(r.hit for r in results[1:])
    assert results[0].value.equals(results[-1].value)


def test_files_written_by_pyarrow_key_as_the_frame_polars_reads(store, aapl, tmp_path):
    path = tmp_path / "pa.parquet"
    table = aapl.with_columns(pl.col("symbol").cast(pl.String)).to_arrow()
    pq.write_table(table, path, row_group_size=3_000)  # large_string, another writer
    counter = Counted(tmp_path / "calls")
    assert fetch(store, path, counter).key == fetch(store, pl.read_parquet(path), counter).key
    assert counter.calls == 1


def test_several_files_key_as_the_frame_of_all_of_them(store, aapl, tmp_path):
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    aapl.head(7_000).write_parquet(one)
    aapl.slice(7_000).write_parquet(two)
    counter = Counted(tmp_path / "calls")
    by_paths = fetch(store, [one, two], counter)
    assert fetch(store, pl.read_parquet([one, two]), counter).key == by_paths.key
    assert fetch(store, pl.scan_parquet([one, two]), counter).key == by_paths.key
    assert fetch(store, aapl, counter).key == by_paths.key  # the same rows, never split
    assert counter.calls == 1
    assert fetch(store, [two, one], counter).key != by_paths.key  # row order is data
    assert counter.calls == 2


def test_one_cent_in_one_price_is_a_new_key(store, aapl, tmp_path):
    path = tmp_path / "ticks.parquet"
    aapl.write_parquet(path)
    counter = Counted(tmp_path / "calls")
    before = fetch(store, path, counter)
    row = aapl.height // 2
    changed = aapl.with_columns(
        pl.when(pl.int_range(pl.len()) == row)
        .then(pl.col("price") + 0.01)
        .otherwise(pl.col("price"))
        .alias("price")
    )
    changed.write_parquet(path)
    after = fetch(store, path, counter)
    assert after.key != before.key
    assert after.key == fetch(store, changed, counter).key
    assert counter.calls == 2


def test_a_repeat_call_reads_the_digest_from_the_memo_not_the_file(
    root, aapl, tmp_path, monkeypatch
):
    path = tmp_path / "ticks.parquet"
    aapl.write_parquet(path)
    counter = Counted(tmp_path / "calls")
    with FeatureStore(root) as store:
        key = fetch(store, path, counter).key
    decoded = []
    original = file_fingerprints.hash_parquet_content

    def counting(paths, **kwargs):
        decoded.append(paths)
        return original(paths, **kwargs)

    monkeypatch.setattr(inputs, "hash_parquet_content", counting)
    with FeatureStore(root) as store:  # a new store: the memo comes from the manifest
        assert fetch(store, path, counter).key == key
        assert fetch(store, [path, path], counter).key != key
    assert len(decoded) == 1  # only the new path list was decoded
    assert counter.calls == 2


def test_content_digest_decodes_in_batches_equal_to_the_whole_read(aapl, tmp_path, monkeypatch):
    monkeypatch.setattr("jules_cache.fingerprints.data.LEAF_ROWS", 4_096)  # many leaves
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    aapl.head(10_001).write_parquet(one, row_group_size=1_000)
    aapl.slice(10_001).write_parquet(two, row_group_size=777)
    content = file_fingerprints.hash_parquet_content([one, two], threads=2)
    assert content.digest == fingerprint_table(as_arrow(pl.read_parquet([one, two])))
    assert content.files == (
        fingerprint_table(as_arrow(pl.read_parquet(one))),
        fingerprint_table(as_arrow(pl.read_parquet(two))),
    )


def test_a_damaged_file_is_a_clear_error(store, aapl, tmp_path):
    path = tmp_path / "ticks.parquet"
    aapl.write_parquet(path)
    raw = bytearray(path.read_bytes())
    middle = slice(len(raw) // 4, len(raw) // 2)
    raw[middle] = random.Random(7).randbytes(len(raw[middle]))  # the magic and footer stay
    path.write_bytes(bytes(raw))
    with pytest.raises(Exception, match=r"ticks\.parquet") as caught:
        fetch(store, path, Counted(tmp_path / "calls"))
    assert type(caught.value).__module__.startswith("jules_cache")


@pytest.mark.parametrize("name", ["ticks_?.parquet", "ticks_[12].parquet", "ticks_*.parquet"])
def test_a_file_name_with_glob_characters_is_that_file_and_no_other(store, aapl, tmp_path, name):
    # Polars expands glob patterns in paths by default: the literal file must be read alone,
    # or files the memo never stat()ed would feed the result (a later edit to them: stale hit).
    literal = tmp_path / name
    aapl.head(3_000).write_parquet(literal)
    aapl.tail(2_000).write_parquet(tmp_path / "ticks_1.parquet")
    counter = Counted(tmp_path / "calls")
    by_path = fetch(store, literal, counter)
    alone = pl.scan_parquet(literal, glob=False).collect()
    assert alone.height == 3_000
    assert by_path.value.equals(bar_count(alone.lazy(), {"freq": "1m"}).collect())
    assert fetch(store, alone, counter).key == by_path.key
    assert counter.calls == 1


def test_explain_names_the_one_file_of_several_that_changed(store, aapl, tmp_path):
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    aapl.head(5_000).write_parquet(one)
    aapl.slice(5_000).write_parquet(two)
    store.fetch("AAPL", [one, two], {"freq": "1m"}, bar_count, name="bars")
    aapl.slice(5_000, 100).write_parquet(two)
    (difference,) = store.explain(
        "AAPL", [one, two], {"freq": "1m"}, bar_count, name="bars"
    ).differences
    assert f"input file {two.resolve()} changed" in difference
