"""The versions of the libraries that execute a feature are part of its key.

A feature that only calls methods of its frame names no library, yet Polars runs it (and
pyarrow, numpy and pandas carry data into and out of it); their semantics change between
releases (``group_by_dynamic``, ``rolling``, ``pct_change``), so a host with another Polars must
compute, not be served this host's result. The installed versions are faked here through the one
function that reads them (``keys._installed_engine``); Polars itself is the real one.
"""

from __future__ import annotations

import importlib.metadata

import polars as pl
import pytest

from jules_cache.fingerprints import keys
from jules_cache.fingerprints.code import code_fingerprint

POLARS = importlib.metadata.version("polars")


def only_frame_methods(ticks, config):
    return ticks.sort("ts").select("ts", "price")


def with_engine(monkeypatch, **versions: str) -> None:
    real = keys.engine_versions()
    monkeypatch.setattr(keys, "_installed_engine", lambda: {**real, **versions})


@pytest.mark.parametrize("library", keys.ENGINE_LIBRARIES)
def test_each_engine_library_version_changes_the_code_fingerprint(monkeypatch, library):
    before = code_fingerprint(only_frame_methods)
    pinned = code_fingerprint(only_frame_methods, "v1")
    with_engine(monkeypatch, **{library: "0.0.1"})
    assert code_fingerprint(only_frame_methods).digest != before.digest
    assert code_fingerprint(only_frame_methods, "v1").digest != pinned.digest  # version= too
    assert code_fingerprint(only_frame_methods).packages[library] == "0.0.1"


def test_the_same_engine_gives_the_same_key():
    assert code_fingerprint(only_frame_methods) == code_fingerprint(only_frame_methods)
    assert code_fingerprint(only_frame_methods).packages["polars"] == POLARS


def test_another_polars_misses_and_explain_names_it(store, aapl, monkeypatch):
    first = store.fetch("AAPL", aapl, {}, only_frame_methods)
    assert store.fetch("AAPL", aapl, {}, only_frame_methods).hit
    with_engine(monkeypatch, polars="0.20.31")
    explanation = store.explain("AAPL", aapl, {}, only_frame_methods)
    assert not explanation.cached and explanation.closest_key == first.key
    assert explanation.differences == (f"library: polars {POLARS} → 0.20.31",)
    again = store.fetch("AAPL", aapl, {}, only_frame_methods)
    assert not again.hit and again.key != first.key
    recorded = store.entry(again.key).library_versions
    assert '"polars": "0.20.31"' in recorded  # the entry records the versions its key used


def test_explain_names_a_pandas_change_under_version(store, aapl, monkeypatch):
    store.fetch("AAPL", aapl, {}, only_frame_methods, version="v1")
    real = keys.engine_versions()["pandas"]
    with_engine(monkeypatch, pandas="1.5.3")
    explanation = store.explain("AAPL", aapl, {}, only_frame_methods, version="v1")
    assert explanation.differences == (f"library: pandas {real} → 1.5.3",)


def test_a_feature_result_is_real_polars_output(store, aapl):
    """Sanity: the feature the key tests use computes with the installed Polars."""
    result = store.fetch("AAPL", aapl, {}, only_frame_methods).value
    assert isinstance(result, pl.DataFrame) and result.columns == ["ts", "price"]
