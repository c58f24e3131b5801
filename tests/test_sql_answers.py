"""SQL answers a quant can trust: results that convert to Polars, configs never mixed silently,
and a catalog.duckdb that a plain client can reconnect to (issue 20, items 1, 7 and 9)."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import pytest
from features import bar_count

from jules_cache import FeatureStore
from jules_cache.errors import QueryError

# -- item 7: every result type maps to a Polars type, or the query fails with QueryError ----------


def test_an_interval_result_is_a_polars_duration(store, aapl):
    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
    frame = store.sql("SELECT symbol, max(ts) - min(ts) AS span FROM bar_count GROUP BY symbol")
    expected = store.sql("SELECT max(ts) AS hi, min(ts) AS lo FROM bar_count")
    assert frame.schema["span"] == pl.Duration("us")
    assert frame["span"][0] == expected["hi"][0] - expected["lo"][0]


def test_an_interval_of_days_and_microseconds_keeps_its_value(store):
    frame = store.sql("SELECT INTERVAL 2 DAY + INTERVAL 3 SECOND + INTERVAL 7 MICROSECOND AS i")
    assert frame["i"][0] == dt.timedelta(days=2, seconds=3, microseconds=7)


def test_an_interval_of_months_has_no_fixed_length_and_is_refused(store):
    with pytest.raises(QueryError, match=r"column 'i'.*month.*CAST"):
        store.sql("SELECT INTERVAL 1 MONTH AS i")


def test_integer_sums_stay_integers(store, aapl):
    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
    frame = store.sql("SELECT sum(n) AS total, sum(n::INTEGER) AS total32 FROM bar_count")
    assert frame.schema["total"] == pl.Int64
    assert frame.schema["total32"] == pl.Int64
    assert frame["total"][0] == aapl.height


def test_a_hugeint_beyond_int64_keeps_its_exact_value(store):
    frame = store.sql("SELECT sum(x) AS big FROM (VALUES (9223372036854775807), (9)) AS t(x)")
    assert frame["big"][0] == 9223372036854775807 + 9


def test_an_explicit_decimal_stays_a_decimal(store):
    frame = store.sql("SELECT 12::DECIMAL(38, 0) AS d, 1.5::DECIMAL(10, 2) AS e")
    assert isinstance(frame.schema["d"], pl.Decimal)
    assert isinstance(frame.schema["e"], pl.Decimal)


def test_a_union_result_is_a_query_error_saying_how_to_cast(store):
    with pytest.raises(QueryError, match=r"column 'u'.*UNION.*CAST"):
        store.sql("SELECT union_value(k := 1) AS u")


def test_an_interval_inside_a_list_is_a_query_error(store):
    with pytest.raises(QueryError, match=r"column 'l'.*INTERVAL"):
        store.sql("SELECT [INTERVAL 1 DAY] AS l")


def test_every_type_of_duckdb_converts_or_is_a_query_error(store):
    columns = duckdb.connect().sql("SELECT * FROM test_all_types()").columns
    for column in columns:
        try:
            frame = store.sql(f'SELECT "{column}" FROM test_all_types()')
        except QueryError as exc:
            assert column in str(exc)
        else:
            assert frame.height == 3


def test_a_statement_kind_the_client_cannot_name_is_refused(store):
    with pytest.raises(QueryError, match="refused"):
        store.sql("UPDATE EXTENSIONS")


def test_a_lone_surrogate_in_the_query_is_a_query_error(store):
    with pytest.raises(QueryError, match="surrogate"):
        store.sql("SELECT '\ud800' AS s")


def test_a_lone_surrogate_in_a_parameter_is_a_query_error(store):
    with pytest.raises(QueryError, match="surrogate"):
        store.sql("SELECT ? AS s", ["\ud800"])


def test_results_round_trip_into_a_fresh_store(root, aapl):
    with FeatureStore(root) as store:
        store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
        assert store.sql("SELECT count(*) AS n FROM bar_count")["n"].dtype == pl.Int64
