"""What joblib.Memory and diskcache users reach for: ``ignore=``, ``contains``,
``clear``, ``expire=`` and ``max_size=``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest
from features import bar_count
from helpers import frame

from jules_cache import FeatureStore, InvalidInput


def noisy_bars(ticks: pl.LazyFrame, config: dict[str, Any]) -> pl.LazyFrame:
    """Returns the config it was given: an ignored key must still reach the function."""
    return ticks.select(pl.len().alias("n"), pl.lit(repr(sorted(config.items()))).alias("seen"))


@pytest.fixture(scope="module")
def refusing(tmp_path_factory) -> Iterator[FeatureStore]:
    """One empty store for the bad-argument tests of this module: a refused call changes
    nothing, so they can share it, and the end proves that none stored anything."""
    with FeatureStore(tmp_path_factory.mktemp("parity") / "cache") as store:
        yield store
        assert store.entries() == []
    assert store.check().consistent


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
def test_a_bad_ignore_is_invalid_input_naming_it(refusing, ignore, config):
    with pytest.raises(InvalidInput, match="ignore"):
        refusing.fetch("A", frame(1), config, bar_count, ignore=ignore)
    with pytest.raises(InvalidInput, match="ignore"):
        refusing.feature(ignore=ignore)(bar_count)("A", frame(1), config)


# -- contains ------------------------------------------------------------------------------------


def exploding(ticks: pl.LazyFrame, config: dict[str, Any]) -> pl.LazyFrame:
    raise AssertionError("contains() must never compute")


def test_contains_says_whether_a_call_would_hit_without_computing_or_counting(store):
    assert store.contains("A", frame(1), {"a": 1}, exploding, name="noisy") is False
    first = store.fetch("A", frame(1), {"a": 1}, noisy_bars, name="noisy")
    assert store.contains("A", frame(1), {"a": 1}, exploding, name="noisy", version=None) is False
    assert store.contains("A", frame(1), {"a": 1}, noisy_bars, name="noisy") is True
    assert store.contains("A", frame(2), {"a": 1}, noisy_bars, name="noisy") is False
    assert store.contains("A", frame(1), {"a": 1, "v": 1}, noisy_bars, name="noisy") is False
    assert store.contains("A", frame(1), {"a": 1, "v": 1}, noisy_bars, name="noisy", ignore=["v"])
    before = store.stats()
    assert (before.hits, before.misses) == (0, 1)  # contains counts nothing
    store.remove(key=first.key)
    assert store.contains("A", frame(1), {"a": 1}, noisy_bars, name="noisy") is False


def test_contains_checks_the_result_itself_not_only_the_row(store):
    first = store.fetch("A", frame(1), {"a": 1}, noisy_bars)
    first.path.unlink()  # the row stays: a hit would miss, so contains must say so
    assert store.contains("A", frame(1), {"a": 1}, noisy_bars) is False
    store.check(fix=True)


def test_feature_contains(store):
    feature = store.feature(name="noisy", ignore=["v"])(noisy_bars)
    assert not feature.contains("A", frame(1), {"a": 1})
    feature("A", frame(1), {"a": 1, "v": 2})
    assert feature.contains("A", frame(1), {"a": 1, "v": 3})


def test_contains_on_a_file_input_reuses_its_memoised_digest(store, tmp_path, monkeypatch):
    import jules_cache.fingerprints.inputs as inputs

    path = tmp_path / "ticks.parquet"
    frame(1).write_parquet(path)
    store.fetch("A", path, {"a": 1}, noisy_bars)

    def no_hashing(files):
        raise AssertionError("the file was hashed again")

    monkeypatch.setattr(inputs, "hash_parquet_content", no_hashing)
    assert store.contains("A", path, {"a": 1}, noisy_bars) is True
    assert store.contains("A", path, {"a": 2}, noisy_bars) is False


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda s: s.contains("A", frame(1), {}, bar_count, name=5), "name"),
        (lambda s: s.contains("A", frame(1), {}, bar_count, ignore="x"), "ignore"),
        (lambda s: s.contains("A", frame(1), {}, 5), "compute_func"),
        (lambda s: s.contains(None, frame(1), {}, bar_count), "symbol"),
    ],
)
def test_contains_validates_its_arguments(refusing, call, named):
    with pytest.raises(InvalidInput, match=named):
        call(refusing)


# -- clear ---------------------------------------------------------------------------------------


def test_feature_clear_removes_every_entry_of_that_feature_only(store):
    named = store.feature(name="noisy")(noisy_bars)
    unnamed = store.feature(bar_count)
    for i in (1, 2):
        named("A", frame(i), {"a": 1})
        named("B", frame(i), {"a": 2})
        unnamed("A", frame(i), {})
    removed = named.clear()
    assert sorted(e.feature for e in removed) == ["noisy"] * 4
    assert {e.feature for e in store.entries()} == {"features.bar_count"}
    assert not named.contains("A", frame(1), {"a": 1})
    assert not named.fetch("A", frame(1), {"a": 1}).hit  # removal is final: computed again
    assert [e.feature for e in unnamed.clear()] == ["features.bar_count"] * 2
    assert unnamed.clear() == []  # nothing left: not an error


def test_store_clear_takes_a_feature_name(store):
    store.fetch("A", frame(1), {}, bar_count, name="bars")
    store.fetch("A", frame(1), {}, noisy_bars, name="other")
    assert [e.feature for e in store.clear(feature="bars")] == ["bars"]
    assert [e.feature for e in store.entries()] == ["other"]
    with pytest.raises(InvalidInput, match="feature"):
        store.clear(feature="")
    with pytest.raises(InvalidInput, match="feature"):
        store.clear(feature=None)


# -- expire= -------------------------------------------------------------------------------------
# Short expiries and a sleep just past them: time must really pass for an entry to expire
# (2 s: the first write of a process can take a few hundred ms, and the expiry counts from it).


@pytest.mark.slow  # seconds of wall time: kept out of the default run
def test_an_expired_entry_is_a_miss_recomputed_and_replaced(store):
    first = store.fetch("A", frame(1), {"a": 1}, noisy_bars, expire=2)
    entry = store.entry(first.key)
    assert entry.expires_at is not None
    # counted from the start of the write, which ends just before the row's created_at
    assert 0 < (entry.expires_at - entry.created_at).total_seconds() <= 2
    time.sleep(2.1)
    assert not store.contains("A", frame(1), {"a": 1}, noisy_bars)
    again = store.fetch("A", frame(1), {"a": 1}, noisy_bars, expire=3600)
    assert not again.hit and again.key == first.key and again.value.equals(first.value)
    replaced = store.entry(first.key)
    assert replaced.created_at > entry.created_at
    assert 3590 < (replaced.expires_at - replaced.created_at).total_seconds() <= 3600
    assert store.fetch("A", frame(1), {"a": 1}, noisy_bars).hit  # stored expiry: not yet
    assert store.fetch("A", frame(1), {"a": 1}, noisy_bars, lazy=True).hit
    assert len(store.entries()) == 1
    stats = store.stats()
    assert (stats.hits, stats.misses) == (2, 2)


@pytest.mark.slow  # seconds of wall time: kept out of the default run
def test_an_expired_entry_is_a_miss_also_for_lazy_hits_and_decorated_features(store):
    bars = store.feature(name="ttl", expire=2)(noisy_bars)
    first = bars.fetch("A", frame(1), {"a": 1}, lazy=True)
    assert bars.fetch("A", frame(1), {"a": 1}, lazy=True).hit  # verified once, then cached
    time.sleep(2.1)
    again = bars.fetch("A", frame(1), {"a": 1}, lazy=True)
    assert not again.hit and again.key == first.key
    assert store.entry(first.key).expires_at > store.entry(first.key).created_at


def test_without_expire_an_entry_never_expires(store):
    first = store.fetch("A", frame(1), {"a": 1}, noisy_bars)
    assert store.entry(first.key).expires_at is None
    week = store.feature(name="week", expire="7d")(noisy_bars)
    kept = week.fetch("A", frame(1), {"a": 1})
    entry = store.entry(kept.key)
    assert 7 * 86400 - 10 < (entry.expires_at - entry.created_at).total_seconds() <= 7 * 86400


@pytest.mark.slow  # seconds of wall time: kept out of the default run
def test_gc_deletes_expired_entries_and_spares_fresh_ones(store):
    gone = store.fetch("A", frame(1), {"a": 1}, noisy_bars, expire=2)
    kept = store.fetch("A", frame(2), {"a": 1}, noisy_bars, expire=3600)
    forever = store.fetch("A", frame(3), {"a": 1}, noisy_bars)
    time.sleep(2.1)
    report = store.gc()
    assert [item.key for item in report.items if item.reason == "expired"] == [gone.key]
    assert store.entry(gone.key) is None and not gone.path.exists()
    assert store.entry(kept.key) is not None and store.entry(forever.key) is not None


def test_a_rebuilt_manifest_keeps_the_expiry_from_the_files(root):
    from click.testing import CliRunner

    from jules_cache import FeatureStore
    from jules_cache.cli import cli

    with FeatureStore(root) as store:
        first = store.fetch("A", frame(1), {"a": 1}, noisy_bars, expire=3600)
        expires = store.entry(first.key).expires_at
    (root / "manifest.duckdb").write_bytes(b"damaged")
    rebuilt = CliRunner().invoke(cli, ["--root", str(root), "check", "--rebuild"])
    assert rebuilt.exit_code == 0, rebuilt.output
    with FeatureStore(root) as store:
        assert store.entry(first.key).expires_at == expires


@pytest.mark.parametrize("expire", ["soon", -1, 0, True, float("nan"), [1]])
def test_a_bad_expire_is_invalid_input_naming_it(refusing, expire):
    with pytest.raises(InvalidInput, match="expire"):
        refusing.fetch("A", frame(1), {}, bar_count, expire=expire)
    with pytest.raises(InvalidInput, match="expire"):
        refusing.feature(expire=expire)(bar_count)


# -- max_size= -----------------------------------------------------------------------------------


@pytest.mark.slow  # seconds of wall time: kept out of the default run
def test_a_store_with_max_size_stays_under_it_after_many_misses(root):
    from jules_cache import FeatureStore

    with FeatureStore(root) as probe:  # how big one result is
        one = probe.fetch("A", frame(0), {"a": 0}, noisy_bars).path.stat().st_size
        probe.remove(all=True)
    cap = int(one * 3.5)
    with FeatureStore(root, max_size=cap) as store:
        keys = []
        for i in range(1, 11):
            keys.append(store.fetch("A", frame(i), {"a": i}, noisy_bars).key)
            sizes = [e.bytes for e in store.entries()]
            assert sum(sizes) <= cap + max(sizes)  # at most one entry over, at any time
        kept = {e.key for e in store.entries()}
        assert sum(e.bytes for e in store.entries()) <= cap
        assert kept == set(keys[-3:])  # the least recently used went first
        assert store.fetch("A", frame(10), {"a": 10}, noisy_bars).hit
        assert store.check().consistent


def test_max_size_takes_bytes_or_a_size_string(root):
    from jules_cache import FeatureStore, StoreOptions

    assert StoreOptions(max_size="50GB").max_size == "50GB"
    with FeatureStore(root, max_size="1KB") as store:
        store.fetch("A", frame(1), {"a": 1}, noisy_bars)
        store.fetch("A", frame(2), {"a": 2}, noisy_bars)
        assert len(store.entries()) <= 1


@pytest.mark.parametrize("max_size", ["lots", -1, 0, True, 1.5, "0GB"])
def test_a_bad_max_size_is_invalid_input_naming_it(root, max_size):
    from jules_cache import FeatureStore

    with pytest.raises(InvalidInput, match="max_size"):
        FeatureStore(root, max_size=max_size)
