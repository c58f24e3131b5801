"""store.explain: which key component made a call miss."""

from __future__ import annotations

import polars as pl
from features import bar_count

CONFIG = {"freq": "1m", "windows": [5, 20]}


def test_a_cached_call_explains_as_a_hit(store, aapl):
    store.fetch("AAPL", aapl, CONFIG, bar_count)
    explanation = store.explain("AAPL", aapl, CONFIG, bar_count)
    assert explanation.cached and "hit" in str(explanation)


def test_no_entry_of_the_feature(store, aapl):
    explanation = store.explain("AAPL", aapl, CONFIG, bar_count)
    assert not explanation.cached and explanation.closest_key is None
    assert "no cached entry" in str(explanation)


def test_config_differences_are_named_key_by_key(store, aapl):
    cached = store.fetch("AAPL", aapl, CONFIG, bar_count)
    explanation = store.explain("AAPL", aapl, {"freq": "5m", "windows": [5, 30]}, bar_count)
    assert explanation.closest_key == cached.key
    assert explanation.differences == (
        'config[\'freq\']: "1m" -> "5m"',
        "config['windows']: [5, 20] -> [5, 30]",
    )


def test_data_and_symbol_differences(store, aapl):
    store.fetch("AAPL", aapl, CONFIG, bar_count)
    changed = aapl.with_columns(pl.col("price") + 0.01)
    (difference,) = store.explain("AAPL", changed, CONFIG, bar_count).differences
    assert difference.startswith("data: content differs")
    other = store.explain("MSFT", aapl, CONFIG, bar_count)
    assert other.differences == ("symbol: 'AAPL' -> 'MSFT'",)


def test_a_rewritten_input_file_is_named(store, aapl, tmp_path):
    path = tmp_path / "ticks.parquet"
    aapl.write_parquet(path)
    store.fetch("AAPL", path, CONFIG, bar_count)
    aapl.head(100).write_parquet(path)
    (difference,) = store.explain("AAPL", path, CONFIG, bar_count).differences
    assert f"input file {path.resolve()} changed" in difference


HELPER_SOURCE = """
import polars as pl

def scale(column):
    return pl.col(column) * FACTOR

def feature(ticks, config):
    return ticks.select(scale("price"))
"""


def test_a_changed_helper_function_is_named(store, aapl, load_module):
    before = load_module("user_features", HELPER_SOURCE.replace("FACTOR", "2"))
    store.fetch("AAPL", aapl, {}, before.feature)
    after = load_module("user_features", HELPER_SOURCE.replace("FACTOR", "3"))
    assert not store.fetch("AAPL", aapl, {}, after.feature).hit  # the helper's change misses
    explanation = store.explain(
        "AAPL", aapl, {}, load_module("user_features", HELPER_SOURCE.replace("FACTOR", "4")).feature
    )
    assert "code: user_features.scale changed" in explanation.differences


def test_version_differences(store, aapl):
    store.fetch("AAPL", aapl, CONFIG, bar_count, version="v1")
    explanation = store.explain("AAPL", aapl, CONFIG, bar_count, version="v2")
    assert explanation.differences == ("code version: 'v1' -> 'v2'",)
