"""SQL answers a quant can trust: results that convert to Polars, configs never mixed silently,
and a catalog.duckdb that a plain client can reconnect to."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import duckdb
import polars as pl
import pytest
from features import bar_count

from jules_cache import FeatureStore
from jules_cache.errors import QueryError
from jules_cache.synthetic import ticks_for

# -- every result type maps to a Polars type, or the query fails with QueryError ----------


@pytest.fixture(scope="module")
def empty_once(tmp_path_factory) -> Iterator[FeatureStore]:
    """One empty store for the queries of this module that read no feature (they only query
    values and types), so they can share it; it must end empty and consistent."""
    with FeatureStore(tmp_path_factory.mktemp("answers") / "cache") as store:
        yield store
        assert store.entries() == []
    assert store.check().consistent


def test_an_interval_result_is_a_polars_duration(store, aapl):
    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
    frame = store.sql("SELECT symbol, max(ts) - min(ts) AS span FROM bar_count GROUP BY symbol")
    expected = store.sql("SELECT max(ts) AS hi, min(ts) AS lo FROM bar_count")
    assert frame.schema["span"] == pl.Duration("us")
    assert frame["span"][0] == expected["hi"][0] - expected["lo"][0]


def test_an_interval_of_days_and_microseconds_keeps_its_value(empty_once):
    frame = empty_once.sql(
        "SELECT INTERVAL 2 DAY + INTERVAL 3 SECOND + INTERVAL 7 MICROSECOND AS i"
    )
    assert frame["i"][0] == dt.timedelta(days=2, seconds=3, microseconds=7)


def test_an_interval_of_months_has_no_fixed_length_and_is_refused(empty_once):
    with pytest.raises(QueryError, match=r"column 'i'.*month.*CAST"):
        empty_once.sql("SELECT INTERVAL 1 MONTH AS i")


def test_integer_sums_stay_integers(store, aapl):
    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
    frame = store.sql("SELECT sum(n) AS total, sum(n::INTEGER) AS total32 FROM bar_count")
    assert frame.schema["total"] == pl.Int64
    assert frame.schema["total32"] == pl.Int64
    assert frame["total"][0] == aapl.height


def test_a_hugeint_beyond_int64_keeps_its_exact_value(empty_once):
    frame = empty_once.sql("SELECT sum(x) AS big FROM (VALUES (9223372036854775807), (9)) AS t(x)")
    assert frame["big"][0] == 9223372036854775807 + 9


def test_an_explicit_decimal_stays_a_decimal(empty_once):
    frame = empty_once.sql("SELECT 12::DECIMAL(38, 0) AS d, 1.5::DECIMAL(10, 2) AS e")
    assert isinstance(frame.schema["d"], pl.Decimal)
    assert isinstance(frame.schema["e"], pl.Decimal)


def test_a_union_result_is_a_query_error_saying_how_to_cast(empty_once):
    with pytest.raises(QueryError, match=r"column 'u'.*UNION.*CAST"):
        empty_once.sql("SELECT union_value(k := 1) AS u")


def test_an_interval_inside_a_list_is_a_query_error(empty_once):
    with pytest.raises(QueryError, match=r"column 'l'.*INTERVAL"):
        empty_once.sql("SELECT [INTERVAL 1 DAY] AS l")


def test_every_type_of_duckdb_converts_or_is_a_query_error(empty_once):
    columns = duckdb.connect().sql("SELECT * FROM test_all_types()").columns
    for column in columns:
        try:
            frame = empty_once.sql(f'SELECT "{column}" FROM test_all_types()')
        except QueryError as exc:
            assert column in str(exc)
        else:
            assert frame.height == 3


def test_a_statement_kind_the_client_cannot_name_is_refused(empty_once):
    with pytest.raises(QueryError, match="refused"):
        empty_once.sql("UPDATE EXTENSIONS")


def test_a_lone_surrogate_in_the_query_is_a_query_error(empty_once):
    with pytest.raises(QueryError, match="surrogate"):
        empty_once.sql("SELECT '\ud800' AS s")


def test_a_lone_surrogate_in_a_parameter_is_a_query_error(empty_once):
    with pytest.raises(QueryError, match="surrogate"):
        empty_once.sql("SELECT ? AS s", ["\ud800"])


def test_results_round_trip_into_a_fresh_store(root, aapl):
    with FeatureStore(root) as store:
        store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
        assert store.sql("SELECT count(*) AS n FROM bar_count")["n"].dtype == pl.Int64


# -- a query never mixes configs silently ------------------------------------------------


def ofi(ticks: pl.LazyFrame, config: dict) -> pl.LazyFrame:
    """A per-minute feature whose value depends on its config (like an order-flow window)."""
    return bar_count(ticks, {"freq": "1m"}).with_columns(
        (pl.col("n") * config["window"]).alias("flow")
    )


@pytest.fixture(scope="module")
def three_configs(tmp_path_factory, ticks) -> Iterator[FeatureStore]:
    """bar_count under one config, ofi under three: a join that over-counted. Built once per
    module: the tests that use it only query it; the end check proves it still consistent."""
    aapl = ticks_for(ticks, "AAPL")
    with FeatureStore(tmp_path_factory.mktemp("three_configs") / "cache") as store:
        store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
        for window in (5, 10, 20):
            store.get_or_compute("AAPL", aapl, {"window": window}, ofi)
        yield store
        assert len(store.entries()) == 4
    assert store.check().consistent


JOIN = (
    "SELECT b.symbol, count(*) AS minutes FROM bar_count b JOIN {ofi} o "
    "ON b.symbol = o.symbol AND b.ts = o.ts GROUP BY b.symbol"
)


def config_views(store) -> dict[int, str]:
    rows = store.sql("SELECT config_view, config_json FROM feature_configs WHERE view_name = 'ofi'")
    return {int(json.loads(c)["window"]): v for v, c in rows.iter_rows()}


def test_a_join_with_a_feature_of_three_configs_is_refused_not_tripled(three_configs):
    minutes = three_configs.sql("SELECT count(*) AS n FROM bar_count")["n"][0]
    with pytest.raises(QueryError) as caught:
        three_configs.sql(JOIN.format(ofi="ofi"))
    message = str(caught.value)
    assert "3 configs" in message and '"window":10' in message.replace(" ", "")
    for view in config_views(three_configs).values():
        assert view in message
    assert "ofi__all" in message
    one = three_configs.sql(JOIN.format(ofi=config_views(three_configs)[10]))
    assert one["minutes"][0] == minutes


def test_each_config_view_holds_exactly_its_configs_results(three_configs):
    for window, view in config_views(three_configs).items():
        frame = three_configs.sql(f"SELECT DISTINCT config_json->>'window' AS w FROM {view}")
        assert frame["w"].to_list() == [str(window)]
        assert view.startswith("ofi__") and len(view) == len("ofi__") + 8


def test_the_all_configs_view_reads_every_config_on_purpose(three_configs):
    frame = three_configs.sql(
        "SELECT config_json->>'window' AS w, count(*) AS n FROM ofi__all GROUP BY 1 ORDER BY 1"
    )
    assert frame["w"].to_list() == ["10", "20", "5"]
    assert len(set(frame["n"].to_list())) == 1


def test_a_config_view_name_is_stable_when_more_configs_arrive(store, aapl):
    store.get_or_compute("AAPL", aapl, {"window": 5}, ofi)
    before = config_views(store)[5]
    assert store.sql("SELECT count(*) AS n FROM ofi")["n"][0] > 0  # one config: as simple
    store.get_or_compute("AAPL", aapl, {"window": 7}, ofi)
    assert config_views(store)[5] == before
    assert store.sql(f"SELECT count(*) AS n FROM {before}")["n"][0] > 0


def test_a_query_the_check_cannot_see_into_still_never_mixes_configs(three_configs):
    # A table function hides the referenced names from the analysis: every view is installed,
    # and the bare view of a multi-config feature refuses when it is read.
    with pytest.raises(QueryError, match="3 configs"):
        three_configs.sql("SELECT count(*) FROM ofi, range(1)")


def test_a_config_view_of_a_config_gone_says_which_exist(three_configs):
    with pytest.raises(QueryError, match="no results of config 0123abcd"):
        three_configs.sql("SELECT * FROM ofi__0123abcd")


def test_plain_duckdb_on_the_catalog_file_never_mixes_configs_either(three_configs):
    three_configs.flush()  # brings catalog.duckdb up to date
    views = config_views(three_configs)
    con = duckdb.connect(str(three_configs.root / "catalog.duckdb"), read_only=True)
    try:
        with pytest.raises(duckdb.Error, match="3 configs"):
            con.sql(JOIN.format(ofi="ofi")).fetchall()
        minutes = con.sql("SELECT count(*) FROM bar_count").fetchall()[0][0]
        for window, view in views.items():
            assert con.sql(JOIN.format(ofi=view)).fetchall() == [("AAPL", minutes)]
            found = con.sql(f"SELECT DISTINCT config_json->>'window' FROM {view}").fetchall()
            assert found == [(str(window),)]
        total = con.sql("SELECT count(*), count(DISTINCT config_json) FROM ofi__all").fetchall()
        assert total == [(3 * minutes, 3)]
        listed = con.sql("SELECT config_view FROM feature_configs WHERE view_name = 'ofi'")
        assert sorted(row[0] for row in listed.fetchall()) == sorted(views.values())
    finally:
        con.close()


# -- a plain DuckDB client sees newer results when it reconnects -------------------------


def attach(con: duckdb.DuckDBPyConnection, root) -> None:
    """The documented recipe (jules_cache.query.catalog_file): attach, never connect to, the
    catalog file; run it again to see newer results."""
    con.execute("USE memory; DETACH DATABASE IF EXISTS cache")
    con.execute("ATTACH ? AS cache (READ_ONLY)", [str(root / "catalog.duckdb")])
    con.execute("USE cache")


def test_a_connection_to_the_catalog_file_is_a_snapshot_even_on_reconnect(store, aapl, ticks):
    # Why the recipe attaches: DuckDB keeps one database per path while any connection to it
    # is open in the process, so connecting again returns the same, older snapshot.
    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
    store.flush()
    path = str(store.root / "catalog.duckdb")
    held = duckdb.connect(path, read_only=True)
    try:
        before = held.sql("SELECT count(DISTINCT symbol) FROM bar_count").fetchall()
        store.get_or_compute(
            "MSFT", ticks.filter(pl.col("symbol") == "MSFT"), {"freq": "1m"}, bar_count
        )
        store.flush()
        again = duckdb.connect(path, read_only=True)
        assert again.sql("SELECT count(DISTINCT symbol) FROM bar_count").fetchall() == before
        again.close()
    finally:
        held.close()


def test_re_attaching_the_catalog_sees_newer_results_while_another_connection_holds_it(
    store, aapl, ticks
):
    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count)
    store.flush()
    held = duckdb.connect(str(store.root / "catalog.duckdb"), read_only=True)  # a notebook's
    con = duckdb.connect()
    try:
        attach(con, store.root)
        assert con.sql("SELECT count(DISTINCT symbol) FROM bar_count").fetchall() == [(1,)]
        msft = ticks.filter(pl.col("symbol") == "MSFT")
        store.get_or_compute("MSFT", msft, {"freq": "1m"}, bar_count)
        store.get_or_compute("MSFT", msft, {"window": 5}, ofi)  # a new feature, too
        store.flush()
        attach(con, store.root)
        assert con.sql("SELECT count(DISTINCT symbol) FROM bar_count").fetchall() == [(2,)]
        assert con.sql("SELECT count(*) FROM entries").fetchall() == [(3,)]
        assert con.sql("SELECT count(*) > 0 FROM ofi WHERE symbol = 'MSFT'").fetchall() == [(True,)]
        # The held connection keeps its own consistent snapshot and blocks nothing.
        assert held.sql("SELECT count(*) FROM entries").fetchall() == [(1,)]
    finally:
        con.close()
        held.close()


def test_a_config_view_of_a_removed_config_never_serves_its_old_files(store, aapl):
    for window in (5, 10):
        store.get_or_compute("AAPL", aapl, {"window": window}, ofi)
    gone = config_views(store)[10]
    unseen = "SELECT count(*) AS n FROM {view}, range(1)"  # a table function: names unknown
    assert store.sql(unseen.format(view=gone))["n"][0] > 0
    store.remove(key=store.sql(f"SELECT DISTINCT key FROM {gone}")["key"][0])
    for query in (f"SELECT count(*) FROM {gone}", unseen.format(view=gone)):
        with pytest.raises(QueryError, match=rf"{gone}(: ofi has no results| does not exist)"):
            store.sql(query)
    assert store.sql(unseen.format(view="ofi"))["n"][0] > 0  # one config left: as simple


def test_a_link_moved_into_another_symbols_folder_is_never_shown_under_that_symbol(store, ticks):
    """catalog.duckdb's views join each file to its entry by the link's path: a file moved
    by hand into MSFT's folder (rows of AAPL) is left out, never read as MSFT's."""
    for symbol in ("AAPL", "MSFT"):
        store.get_or_compute(symbol, ticks.filter(pl.col("symbol") == symbol), {}, bar_count)
    store.flush()
    con = duckdb.connect()
    try:
        attach(con, store.root)
        per_symbol = "SELECT symbol, count(*) FROM bar_count GROUP BY symbol ORDER BY symbol"
        before = dict(con.sql(per_symbol).fetchall())
        (aapl_link,) = store.root.glob("views/*/*/__jules_symbol=AAPL/*.parquet")
        msft_folder = next(store.root.glob("views/*/*/__jules_symbol=MSFT"))
        aapl_link.rename(msft_folder / aapl_link.name)
        attach(con, store.root)
        assert dict(con.sql(per_symbol).fetchall()) == {"MSFT": before["MSFT"]}
    finally:
        con.close()
        store.refresh_views()  # puts the link back where it belongs, for the check after
