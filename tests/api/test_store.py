"""get_or_compute end to end: hits, misses, what the key covers, inputs, results, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from features import bar_count
from helpers import Counted, local_backend

from jules_cache import (
    CacheWriteWarning,
    FeatureStore,
    FingerprintError,
    InvalidInput,
    JulesCacheError,
    StoreError,
)


def fetch(store, data, config=None, func=bar_count, symbol="AAPL", **kwargs):
    return store.fetch(symbol, data, config or {"freq": "1m"}, func, name="bars", **kwargs)


@pytest.fixture(scope="module")
def refusing(tmp_path_factory) -> Iterator[FeatureStore]:
    """One store for the calls of this module that must store nothing (refused input, a
    result refused or an error from compute): each asserts it is still empty afterwards, so
    they can share it, and the check at the end proves the cache consistent."""
    with FeatureStore(tmp_path_factory.mktemp("refusing") / "cache") as store:
        yield store
        assert store.entries() == []
    assert store.check().consistent


def test_hit_after_miss_returns_equal_frame_without_computing(store, aapl, tmp_path):
    counter = Counted(tmp_path / "calls")
    first = fetch(store, aapl, func=counter)
    second = fetch(store, aapl, func=counter)
    assert (first.hit, second.hit) == (False, True)
    assert counter.calls == 1
    assert second.value.equals(first.value)
    assert second.value.schema == first.value.schema
    assert first.key == second.key and first.path == second.path and second.path.exists()
    assert first.value.height > 0


def test_get_or_compute_returns_a_dataframe_equal_to_direct_compute(store, aapl):
    frame = store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
    assert isinstance(frame, pl.DataFrame)
    assert frame.equals(bar_count(aapl.lazy(), {"freq": "1m"}).collect())


def test_new_store_on_same_root_hits(root, aapl, tmp_path):
    counter = Counted(tmp_path / "calls")
    with FeatureStore(root) as one:
        fetch(one, aapl, func=counter)
    with FeatureStore(str(root) + "/") as two:  # spelled differently, same cache
        result = fetch(two, aapl, func=counter)
    assert result.hit and counter.calls == 1


def test_lazy_returns_a_scan_of_the_cached_file(store, aapl):
    miss = fetch(store, aapl, lazy=True)
    hit = fetch(store, aapl, lazy=True)
    assert isinstance(miss.value, pl.LazyFrame) and isinstance(hit.value, pl.LazyFrame)
    assert hit.hit and not miss.hit
    assert hit.value.collect().equals(fetch(store, aapl).value)


def test_changed_value_in_row_0_of_a_large_frame_misses(store):
    rows = 13_500_000  # > 100 MB: the size at which the old system stopped hashing row 0
    big = pl.DataFrame({"price": np.arange(rows, dtype=np.float64)})
    head = lambda ticks, config: ticks.head(3)  # noqa: E731
    first = store.fetch("BIG", big, {}, head, name="head")
    changed = big.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(-1.0).otherwise(pl.col("price")).alias("price")
    )
    second = store.fetch("BIG", changed, {}, head, name="head")
    assert not second.hit and second.key != first.key
    assert second.value["price"][0] == -1.0


@pytest.mark.parametrize(
    "change",
    [
        lambda df: df.rename({"size": "qty"}),
        lambda df: df.with_columns(pl.col("size").cast(pl.Int32)),
        lambda df: df.reverse(),
        lambda df: df.head(df.height - 1),
    ],
    ids=["renamed-column", "changed-type", "row-order", "dropped-row"],
)
def test_changed_data_misses(store, aapl, change):
    base = fetch(store, aapl)
    assert not fetch(store, change(aapl)).hit
    assert fetch(store, change(aapl)).key != base.key


def test_changed_config_symbol_or_name_misses(store, aapl):
    base = fetch(store, aapl)
    assert not fetch(store, aapl, {"freq": "5m"}).hit
    assert not fetch(store, aapl, symbol="MSFT").hit
    assert not store.fetch("AAPL", aapl, {"freq": "1m"}, bar_count, name="other").hit
    assert fetch(store, aapl).key == base.key


FEATURE_SOURCE = '''
import polars as pl

def feature(ticks, config):
    """Double the price."""
    # a comment
    return ticks.select((pl.col("price") * FACTOR).alias("x"))
'''


def test_code_change_misses_but_comment_or_docstring_change_hits(store, aapl, load_module):
    original = load_module("feat", FEATURE_SOURCE.replace("FACTOR", "2"))
    first = store.fetch("AAPL", aapl, {}, original.feature, name="x")
    reworded = load_module(
        "feat",
        FEATURE_SOURCE.replace("FACTOR", "2")
        .replace("# a comment", "# another comment, longer")
        .replace("Double the price.", "Multiply the price by two."),
    )
    assert store.fetch("AAPL", aapl, {}, reworded.feature, name="x").hit
    changed = load_module("feat", FEATURE_SOURCE.replace("FACTOR", "3"))
    third = store.fetch("AAPL", aapl, {}, changed.feature, name="x")
    assert not third.hit and third.key != first.key


def test_version_overrides_the_code_fingerprint(store, aapl, load_module):
    one = load_module("feat_v", FEATURE_SOURCE.replace("FACTOR", "2"))
    store.fetch("AAPL", aapl, {}, one.feature, name="x", version="v1")
    two = load_module("feat_v", FEATURE_SOURCE.replace("FACTOR", "3"))
    assert store.fetch("AAPL", aapl, {}, two.feature, name="x", version="v1").hit
    assert not store.fetch("AAPL", aapl, {}, two.feature, name="x", version="v2").hit


def test_feature_name_defaults_to_the_functions_qualified_name(store, aapl):
    result = store.fetch("AAPL", aapl, {"freq": "1m"}, bar_count)
    assert result.feature == "features.bar_count"
    assert store.entry(result.key).feature == "features.bar_count"


def test_unsupported_config_raises_fingerprint_error_naming_the_path(refusing, aapl):
    with pytest.raises(FingerprintError, match=r"\['windows'\]\[2\]") as info:
        fetch(refusing, aapl, {"windows": [1, 2, object()]})
    assert isinstance(info.value, TypeError) and isinstance(info.value, JulesCacheError)
    assert refusing.entries() == []


def test_int_and_str_config_keys_do_not_collide(store, aapl):
    one = fetch(store, aapl, {1: "x", "freq": "1m"})
    two = fetch(store, aapl, {"1": "x", "freq": "1m"})
    assert one.key != two.key and not two.hit


SAME_FRAME = """
import polars as pl, sys
from jules_cache import FeatureStore
sys.path.insert(0, {tests!r})
from features import bar_count
frame = pl.DataFrame({{
    "ts": pl.datetime_range(pl.datetime(2024, 3, 1), pl.datetime(2024, 3, 1, 1), "1s", eager=True),
}}).with_columns(
    symbol=pl.lit("AAPL"), venue=pl.format("V{{}}", pl.int_range(pl.len()) % 7), price=1.5,
)
result = FeatureStore({root!r}).fetch("AAPL", frame, {{"freq": "1m"}}, bar_count)
print(result.key, result.hit)
"""


@pytest.mark.slow
def test_string_frames_give_the_same_key_in_different_processes(root):
    script = SAME_FRAME.format(
        tests=str(__import__("pathlib").Path(__file__).parents[1]), root=str(root)
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**__import__("os").environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        outputs.append(done.stdout.split())
    assert outputs[0][0] == outputs[1][0]
    assert outputs == [[outputs[0][0], "False"], [outputs[0][0], "True"]]


@pytest.mark.parametrize("symbol", ["../../etc/passwd", "BRK/B", "日本", "a" * 1024, "..", "/"])
def test_odd_symbols_stay_inside_the_root_and_round_trip(store, aapl, symbol):
    result = fetch(store, aapl, symbol=symbol)
    assert result.path.resolve().is_relative_to(store.root)
    assert fetch(store, aapl, symbol=symbol).hit
    (entry,) = store.entries(symbol=symbol)
    assert entry.symbol == symbol and entry.key == result.key
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to(store.root) for p in files)


@pytest.mark.parametrize(
    ("symbol", "message"),
    [
        ("", "empty"),
        ("  ", "empty"),
        (None, "must be a str"),
        (7, "must be a str"),
        ("a\x00b", "NUL"),
        ("x" * 1025, "at most 1024"),
    ],
)
def test_bad_symbols_are_refused_and_change_nothing(refusing, aapl, symbol, message):
    with pytest.raises(InvalidInput, match=message):
        fetch(refusing, aapl, symbol=symbol)
    assert refusing.entries() == []


# -- inputs -------------------------------------------------------------------------------------


def test_polars_arrow_pandas_and_lazy_inputs_share_one_key(store, aapl):
    plain = aapl.with_columns(pl.col("symbol").cast(pl.String))
    keys = {
        fetch(store, plain).key,
        fetch(store, plain.lazy()).key,
        fetch(store, plain.to_arrow()).key,
        fetch(store, pa.Table.from_batches(plain.to_arrow().to_batches(max_chunksize=777))).key,
    }
    assert len(keys) == 1


def test_pandas_datetime_index_is_kept_as_a_column(store):
    index = pd.date_range("2024-03-01 14:30", periods=600, freq="s", tz="UTC", name="ts")
    frame = pd.DataFrame({"price": np.linspace(10, 11, 600), "size": np.arange(600)}, index=index)
    seen = {}

    def columns_seen(ticks, config):
        seen["columns"] = ticks.collect_schema().names()
        return ticks.select(pl.col("ts").min().alias("first"), pl.col("price").sum())

    result = store.fetch("AAPL", frame, {}, columns_seen, name="cols")
    assert "ts" in seen["columns"]
    assert result.value["first"][0] == datetime(
        2024, 3, 1, 14, 30, tzinfo=result.value["first"][0].tzinfo
    )
    shifted = frame.copy()
    shifted.index = shifted.index + pd.Timedelta(seconds=1)
    assert not store.fetch("AAPL", shifted, {}, columns_seen, name="cols").hit


def test_parquet_paths_are_scanned_and_keyed_by_content(store, aapl, tmp_path):
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    aapl.head(1000).write_parquet(one)
    aapl.tail(1000).write_parquet(two)
    counter = Counted(tmp_path / "calls")
    first = fetch(store, [one, two], func=counter)
    assert first.value.equals(bar_count(pl.scan_parquet([one, two]), {"freq": "1m"}).collect())
    assert fetch(store, [str(one), str(two)], func=counter).hit
    assert not fetch(store, [two, one], func=counter).hit  # order is part of the data
    aapl.head(999).write_parquet(one)  # rewritten in place: must not hit
    assert not fetch(store, [one, two], func=counter).hit
    assert counter.calls == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"price": [1.0]}, "not supported"),
        (42, "not supported"),
        ("/nonexistent/ticks.parquet", "does not exist"),
        ([], "empty list"),
        (pl.DataFrame({"price": []}, schema={"price": pl.Float64}), "no rows"),
        (pl.DataFrame(), "no columns"),
    ],
    ids=["dict", "int", "missing-path", "empty-list", "no-rows", "no-columns"],
)
def test_bad_data_is_refused_with_a_clear_error(refusing, data, message):
    with pytest.raises(InvalidInput, match=message):
        fetch(refusing, data)
    assert refusing.entries() == []


def test_a_non_parquet_file_is_refused(store, tmp_path):
    fake = tmp_path / "ticks.parquet"
    fake.write_text("price\n1.0\n")
    with pytest.raises(InvalidInput, match="not a Parquet file"):
        fetch(store, fake)


# -- results ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "convert",
    [
        lambda lf: lf,
        lambda lf: lf.collect(),
        lambda lf: lf.collect().to_arrow(),
        lambda lf: lf.collect().to_pandas(),
    ],
    ids=["lazy", "polars", "arrow", "pandas"],
)
def test_any_frame_result_is_stored_and_hits_equal(store, aapl, convert):
    func = lambda ticks, config: convert(bar_count(ticks, config))  # noqa: E731
    miss = store.fetch("AAPL", aapl, {"freq": "1m"}, func, name="converted")
    hit = store.fetch("AAPL", aapl, {"freq": "1m"}, func, name="converted")
    assert hit.hit and hit.value.equals(miss.value)
    assert miss.value.height == bar_count(aapl.lazy(), {"freq": "1m"}).collect().height


def _returns_none(ticks, config):
    return None


def _returns_list(ticks, config):
    return [1, 2, 3]


def _returns_duplicate_columns(ticks, config):
    return pd.DataFrame([[1, 2]], columns=["a", "a"])


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (_returns_none, "returned None"),
        (_returns_list, "returned a list"),
        (_returns_duplicate_columns, "duplicate column names"),
    ],
    ids=["none", "list", "duplicate-columns"],
)
def test_bad_results_are_refused_and_nothing_is_cached(refusing, aapl, func, message):
    with pytest.raises(InvalidInput, match=message):
        refusing.fetch("AAPL", aapl, {}, func, name="bad")
    assert refusing.entries() == []
    assert not any(local_backend(refusing).layout.tmp.iterdir())


def test_an_exception_from_compute_propagates_unchanged_and_nothing_is_cached(refusing, aapl):
    class Boom(Exception):
        pass

    def explode(ticks, config):
        raise Boom("no features today")

    with pytest.raises(Boom, match="no features today"):
        refusing.fetch("AAPL", aapl, {}, explode)
    assert refusing.entries() == []
    assert not any(local_backend(refusing).layout.objects.rglob("*.parquet"))


def test_a_broken_lazy_plan_propagates_as_a_polars_error(refusing, aapl):
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        refusing.fetch("AAPL", aapl, {}, lambda t, c: t.select(pl.col("nope")), name="broken")
    assert refusing.entries() == [] and not any(local_backend(refusing).layout.tmp.iterdir())


def test_store_failure_returns_the_result_with_a_warning_or_raises_when_strict(root, aapl):
    with FeatureStore(root) as store:
        local_backend(store).layout.tmp.rmdir()
        local_backend(store).layout.tmp.write_text(
            "a file where the temp folder should be"
        )  # writes fail
        with pytest.warns(CacheWriteWarning, match="could not store"):
            result = fetch(store, aapl)
        assert not result.stored and not result.hit
        assert result.value.equals(bar_count(aapl.lazy(), {"freq": "1m"}).collect())
        assert store.stats().store_failures == 1
        store.strict = True
        with pytest.raises(StoreError, match="could not store"):
            fetch(store, aapl)
        assert store.entries() == []
        assert not any(local_backend(store).layout.objects.rglob("*.parquet"))


# -- manifest, stats, settings ------------------------------------------------------------------


def test_entry_records_what_the_issue_asks_for(store, aapl):
    result = fetch(store, aapl, {"freq": "1m", "vwap_window": 20})
    entry = store.entry(result.key)
    assert entry.feature == "bars" and entry.symbol == "AAPL"
    assert entry.rows == result.value.height and entry.bytes == result.path.stat().st_size
    assert entry.time_column == "ts"
    assert entry.min_time == result.value["ts"].min().replace(tzinfo=None)
    assert entry.max_time == result.value["ts"].max().replace(tzinfo=None)
    assert entry.config == {"freq": "1m", "vwap_window": 20}
    assert json.loads(entry.library_versions)["polars"] == pl.__version__
    assert entry.compute_seconds > 0 and entry.hit_count == 0
    assert entry.path == f"objects/{result.key[:2]}/{result.key}.parquet"
    metadata = pq.read_metadata(result.path).metadata
    assert json.loads(metadata[b"jules_cache.entry"])["key"] == result.key


def test_hits_are_flushed_to_the_manifest_with_access_times(store, aapl):
    miss = fetch(store, aapl)
    created = store.entry(miss.key).last_accessed_at
    for _ in range(3):
        fetch(store, aapl)
    assert store.stats().hits == 3  # counted before the flush too
    store.flush()
    entry = store.entry(miss.key)
    assert entry.hit_count == 3 and entry.last_accessed_at > created


def test_stats_per_feature(store, aapl):
    fetch(store, aapl)
    fetch(store, aapl)
    store.fetch("AAPL", aapl, {}, lambda t, c: t.head(5), name="head")
    stats = store.stats()
    assert (stats.entries, stats.hits, stats.misses) == (2, 1, 2)
    assert {f.feature for f in stats.features} == {"bars", "head"}
    assert stats.bytes == sum(e.bytes for e in store.entries())
    assert stats.hit_rate == pytest.approx(1 / 3)
    assert stats.seconds_saved > 0


def test_root_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("JULES_CACHE_ROOT", str(tmp_path / "a"))
    monkeypatch.setenv("FEATURE_STORE_PATH", str(tmp_path / "b"))
    assert FeatureStore().root == (tmp_path / "a").resolve()
    monkeypatch.delenv("JULES_CACHE_ROOT")
    assert FeatureStore().root == (tmp_path / "b").resolve()


def test_a_root_that_is_a_file_is_refused(tmp_path):
    file = tmp_path / "cache"
    file.write_text("not a directory")
    with pytest.raises(InvalidInput, match="not a directory"):
        FeatureStore(file)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"lock_timeout": -1}, "lock_timeout"),
        ({"tick_data_threshold_mb": -5}, "tick_data_threshold_mb"),
        ({"fingerprint": "sha"}, "fingerprint"),
        ({"compression": "rar"}, "compression"),
        ({"hit_flush_seconds": -1}, "hit_flush_seconds"),
    ],
)
def test_bad_settings_are_refused(tmp_path, setting, message):
    with pytest.raises(InvalidInput, match=message):
        FeatureStore(tmp_path / "cache", **setting)
    assert not (tmp_path / "cache").exists()
