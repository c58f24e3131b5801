"""Shared fixtures: a fresh cache root per test and small synthetic tick frames."""

from __future__ import annotations

import polars as pl
import pytest

from jules_cache import FeatureStore
from jules_cache.synthetic import make_ticks, symbol_names, ticks_for


@pytest.fixture
def root(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def store(root, request):
    """A store on a fresh root; afterwards `check` must find the cache consistent.

    Tests that damage the cache on purpose and leave it so are marked ``leaves_damage``.
    """
    with FeatureStore(root) as feature_store:
        yield feature_store
    if request.node.get_closest_marker("leaves_damage") is None and root.is_dir():
        report = feature_store.check()
        assert report.consistent, f"cache left inconsistent: {report.counts}"


@pytest.fixture(scope="session")
def ticks() -> pl.DataFrame:
    return make_ticks(symbol_names(3), 60_000, seed=11)


@pytest.fixture
def aapl(ticks) -> pl.DataFrame:
    return ticks_for(ticks, "AAPL")
