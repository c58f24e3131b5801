"""StoreOptions checks itself where it is written; one reading of a root for API, CLI, fan-out."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from features import bar_count
from helpers import frame

from jules_cache import FeatureStore, InvalidInput, StoreOptions, compute_many
from jules_cache.roots import resolve_root


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"lock_timeout": "2"}, "lock_timeout"),
        ({"lock_timeout": -1}, "lock_timeout"),
        ({"lock_timeout": float("nan")}, "lock_timeout"),
        ({"auto_gc": "x"}, "auto_gc"),
        ({"auto_gc_limit": 0}, "auto_gc_limit"),
        ({"strict": "yes"}, "strict"),
        ({"fingerprint": "fast"}, "fingerprint"),
        ({"compression": "brotli"}, "compression"),
        ({"catalog_schema": 1}, "catalog_schema"),
        ({"catalog": ""}, "catalog"),
        ({"time_column": "ts\0"}, "time_column"),
    ],
)
def test_a_wrong_setting_fails_where_it_is_written_naming_it(settings, named):
    with pytest.raises(InvalidInput, match=named):
        StoreOptions(**settings)
    with pytest.raises(InvalidInput, match=named):
        StoreOptions.build(settings)


def test_an_unknown_option_name_is_refused_listing_the_known_ones():
    with pytest.raises(InvalidInput, match=r"unknown store option.*lock_timout.*known: "):
        StoreOptions.build({"lock_timout": 5})


def test_a_store_carries_its_options_and_reopens_from_them(tmp_path):
    options = StoreOptions(lock_timeout=5, compression="zstd", hit_flush_seconds=0)
    with FeatureStore.from_options(tmp_path / "cache", options) as store:
        assert store.options == options
        assert store.fetch("A", frame(1), {}, bar_count).stored
    with FeatureStore(tmp_path / "cache", **dataclasses.asdict(options)) as again:
        assert again.options == options
        assert again.fetch("A", frame(1), {}, bar_count).hit


def test_compute_many_refuses_a_wrong_option_in_the_client(tmp_path):
    with pytest.raises(InvalidInput, match="unknown store option"):
        compute_many(tmp_path, bar_count, {"A": frame(1)}, config={}, store_options={"x": 1})
    with pytest.raises(InvalidInput, match="lock_timeout"):
        compute_many(
            tmp_path, bar_count, {"A": frame(1)}, config={}, store_options={"lock_timeout": "1"}
        )


@pytest.mark.parametrize("root", [5, b"/tmp/x", "", "/tmp/a\0b", object()])
def test_a_root_that_is_no_path_or_url_is_invalid_input(root):
    with pytest.raises(InvalidInput, match="root"):
        FeatureStore(root)


@pytest.mark.parametrize("root", ["gs://bucket/cache", "file://tmp/x", "S3X://b/p", "http://h/"])
def test_a_scheme_jules_cache_does_not_store_to_is_refused_not_made_a_folder(root, tmp_path):
    with pytest.raises(InvalidInput, match="cannot store to"):
        FeatureStore(root)
    assert not Path("gs:").exists() and not Path("file:").exists()


def test_no_root_means_the_environment_then_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FEATURE_STORE_PATH", str(tmp_path / "older"))
    assert resolve_root(None).location == str(tmp_path / "older")
    monkeypatch.setenv("JULES_CACHE_ROOT", str(tmp_path / "newer"))
    assert resolve_root(None).location == str(tmp_path / "newer")
    monkeypatch.setenv("JULES_CACHE_ROOT", "s3://bucket/prefix/")
    assert resolve_root(None).shared and resolve_root(None).location == "s3://bucket/prefix"
