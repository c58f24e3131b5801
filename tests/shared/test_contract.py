"""One contract, every store pairing: each capability behaves the same on a local root (DuckDB
manifest, a directory) and on a shared root (PostgreSQL catalog, S3 objects).

The local case runs in the default suite; the shared case needs the services (marker
``shared``, its own step of ``.ci/run``). A capability that differs between the two is a bug
in the one that differs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import polars as pl
import pytest
from shared_worker import expected, ticks, with_average

from jules_cache import FeatureStore, InvalidInput, QueryError

CONFIG = {"window": 5}
PAIRINGS = ["local", pytest.param("shared", marks=pytest.mark.shared)]


@pytest.fixture(params=PAIRINGS)
def make_store(request, tmp_path) -> Iterator:
    """Open stores of one cache root of the pairing under test (several may be open at once,
    as several processes would)."""
    opened: list[FeatureStore] = []
    if request.param == "local":
        root, settings = str(tmp_path / "cache"), {}
    else:
        services = request.getfixturevalue("services")
        root = request.getfixturevalue("s3_url")
        schema = request.getfixturevalue("pg_schema")
        settings = {"catalog": services.pg_dsn, "catalog_schema": schema}

    def make(**options) -> FeatureStore:
        store = FeatureStore(root, **settings, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def _fetch(store: FeatureStore, symbol: str, seed: int):
    return store.fetch(symbol, ticks(seed), CONFIG, with_average, version="1")


def test_a_miss_then_a_hit_return_equal_frames_and_are_counted(make_store):
    store = make_store()
    first, second = _fetch(store, "A", 1), _fetch(store, "A", 1)
    assert (first.hit, second.hit) == (False, True)
    assert first.value.equals(second.value) and first.value.equals(expected(1))
    stats = store.stats()
    assert (stats.entries, stats.hits, stats.misses) == (1, 1, 1)


def test_another_store_of_the_root_hits_what_one_computed(make_store):
    _fetch(make_store(), "A", 1)
    other = make_store()
    assert _fetch(other, "A", 1).hit


def test_threads_racing_one_key_compute_it_once(make_store):
    store = make_store()
    results = []

    def call() -> None:
        results.append(_fetch(store, "A", 3))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(not r.hit for r in results) == 1
    assert all(r.value.equals(expected(3)) for r in results)


def test_entries_entry_and_remove_agree_and_removal_is_final(make_store):
    store = make_store()
    keys = [_fetch(store, symbol, seed).key for symbol, seed in (("A", 1), ("B", 2))]
    assert sorted(e.key for e in store.entries()) == sorted(keys)
    assert store.entry(keys[0][:8]).symbol == "A"
    assert [e.key for e in store.remove(symbol="A")] == [keys[0]]
    assert store.entry(keys[0]) is None and not _fetch(make_store(), "A", 1).hit
    with pytest.raises(InvalidInput, match="too short"):
        store.entry("abc")


def test_gc_with_zero_retention_empties_the_cache_and_check_finds_it_consistent(make_store):
    store = make_store()
    _fetch(store, "A", 1)
    report = store.gc(retention_weeks=0)
    assert report.ok and report.total("expired").count == 1
    assert store.entries() == [] and store.check().consistent


def test_sql_sees_every_result_and_refuses_writes(make_store):
    store = make_store()
    for symbol, seed in (("A", 1), ("B", 2)):
        _fetch(store, symbol, seed)
    counted = store.sql("SELECT symbol, count(*) AS n FROM with_average GROUP BY 1 ORDER BY 1")
    assert counted.to_dicts() == [{"symbol": "A", "n": 2000}, {"symbol": "B", "n": 2000}]
    with pytest.raises(QueryError):
        store.sql("CREATE TABLE x AS SELECT 1")


def test_overview_and_stats_describe_the_same_entries(make_store):
    store = make_store()
    _fetch(store, "A", 1)
    overview = store.overview()
    assert overview.entries == store.stats().entries == 1
    assert [(g.feature, g.symbol) for g in overview.groups] == [(store.entries()[0].feature, "A")]


def test_a_compute_error_propagates_and_stores_nothing(make_store):
    store = make_store()

    def broken(frame: pl.LazyFrame, config: dict) -> pl.LazyFrame:
        raise ZeroDivisionError("bad feature")

    with pytest.raises(ZeroDivisionError):
        store.fetch("A", ticks(1), CONFIG, broken)
    assert store.entries() == []
