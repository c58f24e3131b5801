"""What joblib.Memory and diskcache users reach for (issue #20): ``ignore=``, ``contains``,
``clear``, ``expire=`` and ``max_size=``."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from features import bar_count
from helpers import frame

from jules_cache import InvalidInput


def noisy_bars(ticks: pl.LazyFrame, config: dict[str, Any]) -> pl.LazyFrame:
    """Returns the config it was given: an ignored key must still reach the function."""
    return ticks.select(pl.len().alias("n"), pl.lit(repr(sorted(config.items()))).alias("seen"))


# -- ignore= -------------------------------------------------------------------------------------


def test_ignored_keys_leave_the_key_but_reach_the_function(store):
    first = store.fetch("A", frame(1), {"a": 1, "verbose": True}, noisy_bars, ignore=["verbose"])
    assert first.value["seen"][0] == "[('a', 1), ('verbose', True)]"
    plain = store.fetch("A", frame(1), {"a": 1}, noisy_bars)
    assert plain.hit and plain.key == first.key  # exactly the key of the config without it
    quiet = store.fetch("A", frame(1), {"a": 1, "verbose": False}, noisy_bars, ignore=["verbose"])
    assert quiet.hit and quiet.value.equals(first.value)
    assert store.entry(first.key).config == {"a": 1}
    other = store.fetch("A", frame(1), {"a": 2, "verbose": True}, noisy_bars, ignore=["verbose"])
    assert not other.hit  # only the named keys leave the key


def test_ignore_without_the_key_in_the_config_is_fine_and_not_ignoring_keys_it(store):
    keyed = store.fetch("A", frame(1), {"a": 1}, noisy_bars, ignore=["absent"])
    assert store.fetch("A", frame(1), {"a": 1}, noisy_bars).key == keyed.key
    assert store.fetch("A", frame(1), {"a": 1, "verbose": 1}, noisy_bars).key != keyed.key


def test_ignore_is_top_level_only(store):
    nested = {"a": {"verbose": 1}}
    keyed = store.fetch("A", frame(1), nested, noisy_bars, ignore=["verbose", "a.verbose"])
    assert store.fetch("A", frame(1), {"a": {}}, noisy_bars).key != keyed.key


def test_the_decorator_and_explain_take_ignore(store):
    feature = store.feature(name="noisy", ignore=["verbose"])(noisy_bars)
    first = feature.fetch("A", frame(1), {"a": 1, "verbose": True})
    assert feature.fetch("A", frame(1), {"a": 1, "verbose": False}).hit
    assert feature.explain("A", frame(1), {"a": 1, "verbose": "x"}).cached
    assert not feature.explain("A", frame(1), {"a": 2}).cached
    explained = store.explain(
        "A", frame(1), {"a": 1, "v": 3}, noisy_bars, name="noisy", ignore=["v"]
    )
    assert explained.cached and explained.key == first.key


@pytest.mark.parametrize(
    ("ignore", "config"),
    [
        ("verbose", {"verbose": 1}),  # a str is not a list of keys
        ([1], {1: 1}),
        (["ok", None], {"ok": 1}),
        ([""], {"": 1}),
        (5, {"a": 1}),
        (["a"], [1, 2]),  # keys to ignore, but the config has no keys
    ],
)
def test_a_bad_ignore_is_invalid_input_naming_it(store, ignore, config):
    with pytest.raises(InvalidInput, match="ignore"):
        store.fetch("A", frame(1), config, bar_count, ignore=ignore)
    with pytest.raises(InvalidInput, match="ignore"):
        store.feature(ignore=ignore)(bar_count)("A", frame(1), config)
