"""SQL over the cache: store.sql, the stored views in catalog.duckdb, and `jules-cache sql`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import polars as pl
import pytest
from click.testing import CliRunner
from features import bar_count
from helpers import local_backend
from polars.testing import assert_frame_equal

from jules_cache import FeatureStore
from jules_cache.cli import cli
from jules_cache.errors import QueryError
from jules_cache.query.views import refresh_views, view_names
from jules_cache.synthetic import ticks_for

SYMBOLS = ("AAPL", "MSFT", "NVDA")


def bars_v2(ticks: pl.LazyFrame, config: dict) -> pl.LazyFrame:
    """bar_count with an extra column: a schema change between code versions."""
    return bar_count(ticks, config).with_columns(pl.col("n").alias("n_v2"))


def fill(store: FeatureStore, ticks: pl.DataFrame) -> FeatureStore:
    """Cache bar_count at two frequencies for each of SYMBOLS: six entries."""
    for symbol in SYMBOLS:
        data = ticks_for(ticks, symbol)
        for freq in ("1m", "5m"):
            store.get_or_compute(symbol, data, {"freq": freq}, bar_count)
    store.flush()  # rows of quick successive misses land together: list them all now
    return store


@pytest.fixture
def filled(store, ticks):
    return fill(store, ticks)


@pytest.fixture(scope="module")
def filled_once(tmp_path_factory, ticks) -> Iterator[FeatureStore]:
    """``filled``, built once for the tests that only read it (a hit, a query, a refused
    statement) and so can share it; the check at the end proves it still consistent."""
    with FeatureStore(tmp_path_factory.mktemp("sql") / "cache") as store:
        yield fill(store, ticks)
    assert store.check().consistent


def bare_duckdb(store, sql: str) -> list:
    """Run ``sql`` on the documented catalog.duckdb from a process that never imports
    jules_cache, once ``store.flush()`` has brought the catalog up to date."""
    store.flush()
    script = textwrap.dedent(
        f"""
        import json, sys, duckdb
        con = duckdb.connect({str(store.root / "catalog.duckdb")!r}, read_only=True)
        rows = con.execute({sql!r}).fetchall()
        assert "jules_cache" not in sys.modules
        print(json.dumps(rows, default=str))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd="/", check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_feature_view_has_every_result_and_entry_metadata(filled_once, ticks):
    frame = filled_once.sql(
        "SELECT symbol, config_json->>'freq' AS freq, count(*) AS n, count(DISTINCT key) AS keys "
        "FROM bar_count__all GROUP BY ALL ORDER BY ALL"
    )
    expected = []
    for symbol in SYMBOLS:
        for freq in ("1m", "5m"):
            rows = bar_count(ticks_for(ticks, symbol).lazy(), {"freq": freq}).collect().height
            expected.append((symbol, freq, rows, 1))
    assert frame.rows() == expected
    versions = filled_once.sql("SELECT DISTINCT code_fingerprint, created_at FROM bar_count__all")
    assert versions.height == 6 and versions["code_fingerprint"].null_count() == 0


def test_view_values_equal_the_cached_frames(filled_once, ticks):
    data = ticks_for(ticks, "MSFT")
    direct = filled_once.get_or_compute("MSFT", data, {"freq": "5m"}, bar_count)
    via_sql = filled_once.sql(
        "SELECT ts, n, mean_price FROM bar_count__all "
        "WHERE symbol = $s AND config_json->>'freq' = '5m' ORDER BY ts",
        {"s": "MSFT"},
    )
    via_sql = via_sql.with_columns(pl.col("ts").dt.convert_time_zone("UTC"))  # Etc/UTC
    assert_frame_equal(via_sql, direct.select("ts", "n", "mean_price"), check_dtypes=False)


def test_manifest_tables_and_feature_views_are_queryable(filled_once):
    assert filled_once.sql("SELECT count(*) AS n FROM entries")["n"][0] == 6
    catalog = filled_once.sql("SELECT view_name, feature, entries, symbols FROM feature_views")
    assert catalog.rows() == [("bar_count", "features.bar_count", 6, 3)]


@pytest.mark.slow
def test_bare_duckdb_finds_the_same_views(filled):
    rows = bare_duckdb(
        filled,
        "SELECT symbol, count(*) FROM bar_count__all GROUP BY 1 ORDER BY 1",
    )
    in_process = filled.sql("SELECT symbol, count(*) FROM bar_count__all GROUP BY 1 ORDER BY 1")
    assert [tuple(r) for r in rows] == in_process.rows()
    views = bare_duckdb(filled, "SELECT view_name, entries FROM feature_views")
    assert views == [["bar_count", 6]]


@pytest.mark.slow
@pytest.mark.leaves_damage  # stray or missing files on purpose
def test_orphan_files_never_appear(filled):
    source = filled.root / filled.entries(symbol="AAPL")[0].path
    orphan = local_backend(filled).layout.objects / "zz" / ("f" * 32 + ".parquet")
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(source.read_bytes())
    with local_backend(filled).manifest.write() as con:
        refresh_views(con, local_backend(filled).layout)
    query = "SELECT count(DISTINCT key) AS k, count(*) AS n FROM bar_count__all"
    assert filled.sql(query)["k"][0] == 6
    assert bare_duckdb(filled, query)[0][0] == 6


@pytest.mark.leaves_damage  # stray or missing files on purpose
def test_a_filter_on_symbol_reads_only_that_symbols_files(filled):
    everything = filled.sql("SELECT count(*) AS n FROM bar_count__all WHERE symbol = 'AAPL'")
    for entry in filled.entries(symbol="MSFT"):
        (filled.root / entry.path).unlink()  # only AAPL's files remain readable
    assert filled.sql("SELECT count(*) AS n FROM bar_count__all WHERE symbol = 'AAPL'").equals(
        everything
    )
    explicit = filled.sql("SELECT count(*) AS n FROM bar_count__all", symbols=["AAPL"])
    assert explicit.equals(everything)
    assert filled.sql("SELECT count(*) AS n FROM bar_count__all", symbols="ZZZ")["n"][0] == 0
    with pytest.raises(QueryError):  # the unfiltered view needs MSFT's (missing) files
        filled.sql("SELECT count(*) FROM bar_count__all")


def test_pruned_and_unpruned_queries_agree(filled_once):
    query = (
        "SELECT symbol, count(*) AS n FROM bar_count__all b "
        "WHERE b.symbol IN ('AAPL', 'NVDA') AND n > 0 GROUP BY ALL ORDER BY ALL"
    )
    reference = filled_once.sql(
        "SELECT symbol, count(*) AS n FROM bar_count__all "
        "WHERE symbol IN ('AAPL', 'NVDA') OR false GROUP BY ALL ORDER BY ALL"
    )  # the OR defeats pruning
    assert filled_once.sql(query).equals(reference)
    # The same view used twice: only one use is filtered, so nothing may be pruned.
    both = filled_once.sql(
        "SELECT (SELECT count(*) FROM bar_count__all WHERE symbol = 'AAPL') AS a, "
        "(SELECT count(*) FROM bar_count__all) AS total"
    )
    assert both["total"][0] == filled_once.sql("SELECT count(*) AS n FROM bar_count__all")["n"][0]
    assert filled_once.sql("SELECT 1 FROM bar_count__all", since="2099-01-01").height == 0


def test_schema_change_between_versions_stays_queryable(store, aapl):
    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count, name="bars", version="1")
    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bars_v2, name="bars", version="2")
    frame = store.sql(
        "SELECT code_version, count(*) AS n, count(n_v2) AS with_v2 FROM bars_history "
        "GROUP BY 1 ORDER BY 1"
    )
    assert frame.rows() == [("1", 390, 0), ("2", 390, 390)]
    assert store.sql("SELECT count(*) AS n FROM bars", versions="2")["n"][0] == 390


def test_a_schema_change_reads_one_footer_per_schema_in_plain_duckdb(store, aapl):
    """A folder per result schema: the stored view is one read per schema, combined by name,
    never ``union_by_name`` (which reads every file's footer on every query)."""
    from jules_cache.query.views import link_folder

    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count, name="bars", version="1")
    store.get_or_compute("MSFT", aapl, {"freq": "1m"}, bar_count, name="bars", version="1")
    store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bars_v2, name="bars", version="2")
    assert len(list(link_folder(local_backend(store).layout, "bars").iterdir())) == 2
    rows = bare_duckdb(
        store,
        "SELECT symbol, code_version, count(*), count(n_v2) FROM bars_history "
        "GROUP BY ALL ORDER BY ALL",
    )
    assert rows == [["AAPL", "1", 390, 0], ["AAPL", "2", 390, 390], ["MSFT", "1", 390, 0]]
    latest = "SELECT symbol, code_version, count(*) FROM bars GROUP BY ALL ORDER BY ALL"
    assert bare_duckdb(store, latest) == [["AAPL", "2", 390], ["MSFT", "1", 390]]
    view_sql = bare_duckdb(store, "SELECT sql FROM duckdb_views() WHERE view_name = 'bars'")
    assert "union_by_name = true" not in view_sql[0][0].lower().replace("(", "").replace(")", "")


@pytest.mark.slow
def test_views_follow_deletions_and_empty_features_lose_their_view(filled, aapl):
    filled.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count, name="other.thing")
    assert filled.sql("SELECT count(*) AS n FROM thing")["n"][0] == 390
    with local_backend(
        filled
    ).manifest.write() as con:  # what GC does: delete rows, refresh, commit, unlink
        paths = [
            row[0] for row in con.execute("SELECT path FROM entries WHERE symbol='AAPL'").fetchall()
        ]
        con.execute("DELETE FROM entries WHERE symbol = 'AAPL'")
        refresh_views(con, local_backend(filled).layout)
    for path in paths:
        (filled.root / path).unlink()
    assert filled.sql("SELECT DISTINCT symbol FROM bar_count__all ORDER BY 1")[
        "symbol"
    ].to_list() == [
        "MSFT",
        "NVDA",
    ]
    with pytest.raises(QueryError, match=r"available tables and views: .*bar_count"):
        filled.sql("SELECT * FROM thing")
    names = [
        r[0] for r in bare_duckdb(filled, "SELECT view_name FROM duckdb_views() WHERE NOT internal")
    ]
    assert "thing" not in names and "bar_count" in names


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM entries",
        "INSERT INTO counters VALUES ('x', 1)",
        "DROP VIEW bar_count",
        "COPY entries TO 'out.csv'",
        "ATTACH 'x.duckdb'",
        "CREATE TABLE t AS SELECT 1",
        "SELECT 1; DELETE FROM entries",
    ],
)
def test_writes_are_refused_and_change_nothing(filled_once, statement):
    before = filled_once.sql("SELECT count(*) AS n FROM entries")
    with pytest.raises(QueryError, match=r"refused|exactly one"):
        filled_once.sql(statement)
    assert filled_once.sql("SELECT count(*) AS n FROM entries").equals(before)


def test_errors_name_the_available_views(filled_once):
    with pytest.raises(QueryError) as info:
        filled_once.sql("SELECT * FROM bar_counts")
    assert "bar_counts" in str(info.value)
    assert "bar_count, bar_count_history, call_counters" in str(info.value)
    with pytest.raises(QueryError, match=r"(?s)syntax error.*feature_views"):
        filled_once.sql("SELEC 1")


def test_view_names_are_deterministic_identifiers():
    names = view_names(
        ["a.pkg.bars", "b.pkg.bars", "x.vwap", "entries", "9 lives!", "m.<locals>.f"]
    )
    assert names == {
        "a.pkg.bars": "a_pkg_bars",
        "b.pkg.bars": "b_pkg_bars",
        "x.vwap": "vwap",
        "entries": "entries_view",
        "9 lives!": "f_9_lives",
        "m.<locals>.f": "f",
    }
    assert view_names(["b.pkg.bars", "a.pkg.bars"]) == view_names(["a.pkg.bars", "b.pkg.bars"])
    assert view_names(["x.select"], frozenset({"select"})) == {"x.select": "select_view"}


def test_cli_sql_formats_and_errors(filled_once, tmp_path):
    runner = CliRunner()
    base = ["--root", str(filled_once.root), "sql"]
    query = "SELECT symbol, count(*) AS n FROM bar_count__all GROUP BY 1 ORDER BY 1"
    table = runner.invoke(cli, [*base, query])
    assert table.exit_code == 0 and "AAPL" in table.stdout
    as_json = runner.invoke(cli, [*base, query, "--format", "json"])
    assert [r["symbol"] for r in json.loads(as_json.stdout)] == list(SYMBOLS)
    piped = runner.invoke(cli, [*base, "-", "--format", "csv"], input=query)
    assert piped.stdout.splitlines()[0] == "symbol,n"
    sql_file = tmp_path / "q.sql"
    sql_file.write_text(query)
    out = tmp_path / "out.parquet"
    written = runner.invoke(
        cli, [*base, "--file", str(sql_file), "--format", "parquet", "--output", str(out)]
    )
    assert written.exit_code == 0 and pl.read_parquet(out)["symbol"].to_list() == list(SYMBOLS)
    failed = runner.invoke(cli, [*base, "SELECT * FROM nope"])
    assert failed.exit_code == 1 and failed.stdout == "" and "feature_views" in failed.stderr
    refused = runner.invoke(cli, [*base, "DELETE FROM entries"])
    assert refused.exit_code == 1 and refused.stdout == ""
    assert runner.invoke(cli, [*base, query, "--format", "parquet"]).exit_code == 2


@pytest.mark.slow
def test_cli_entry_point_subprocess(filled, jules_cache_command):
    env = {**os.environ, "JULES_CACHE_ROOT": str(filled.root)}
    done = subprocess.run(
        [
            jules_cache_command,
            "sql",
            "SELECT count(*) AS n FROM bar_count__all",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (
        json.loads(done.stdout)[0]["n"]
        == filled.sql("SELECT count(*) AS n FROM bar_count__all")["n"][0]
    )
    bad = subprocess.run(
        [jules_cache_command, "sql", "SELECT * FROM nope"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 1 and bad.stdout == "" and "bar_count" in bad.stderr


def test_a_publish_between_two_queries_is_seen_by_the_second(filled, aapl):
    query = "SELECT count(DISTINCT key) AS k FROM bar_count__all"
    assert filled.sql(query)["k"][0] == 6
    assert filled.sql(query)["k"][0] == 6  # served from the session's cached snapshot
    filled.get_or_compute("AAPL", aapl, {"freq": "15m"}, bar_count)
    assert filled.sql(query)["k"][0] == 7
    assert filled.sql("SELECT count(*) AS n FROM entries")["n"][0] == 7


def test_a_gc_between_two_queries_is_seen_by_the_second(filled):
    assert filled.sql("SELECT count(*) AS n FROM entries")["n"][0] == 6
    assert filled.sql("SELECT count(*) AS n FROM bar_count__all")["n"][0] > 0
    report = filled.gc(max_size=1, grace=0)
    assert report.ok and filled.entries() == []
    assert filled.sql("SELECT count(*) AS n FROM entries")["n"][0] == 0
    with pytest.raises(QueryError, match="available tables and views"):
        filled.sql("SELECT count(*) AS n FROM bar_count__all")


def test_two_roots_with_the_same_keys_keep_their_own_files(root, ticks, tmp_path):
    stores = [FeatureStore(tmp_path / name) for name in ("a", "b")]
    for store in stores:
        store.get_or_compute("AAPL", ticks_for(ticks, "AAPL"), {"freq": "1m"}, bar_count)
    first, second = stores
    assert first.entries()[0].key == second.entries()[0].key
    assert first.sql("SELECT count(*) AS n FROM bar_count__all")["n"][0] == 390
    (second.root / second.entries()[0].path).unlink()
    with pytest.raises(QueryError):  # must read b's (missing) file, not a's
        second.sql("SELECT count(*) AS n FROM bar_count__all")
    assert first.sql("SELECT count(*) AS n FROM bar_count__all")["n"][0] == 390


@pytest.mark.slow
def test_a_publish_links_its_file_and_leaves_the_stored_catalog_alone(store, aapl):
    from jules_cache.query.views import entry_link, link_folder

    view_sql = "SELECT sql FROM duckdb_views() WHERE view_name = 'bar_count'"
    for i in range(5):
        store.get_or_compute(f"S{i:03d}", aapl, {"freq": "1h"}, bar_count)
        if i == 0:
            first_sql = bare_duckdb(store, view_sql)
    assert bare_duckdb(store, view_sql) == first_sql  # one view over the folder, not per file
    with local_backend(store).manifest.read() as con:  # the private manifest holds no views at all
        assert con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchall() == [
            (0,)
        ]
    rows = bare_duckdb(store, "SELECT count(DISTINCT symbol), count(*) FROM bar_count")
    assert rows == [[5, 5 * 7]]
    folder = link_folder(local_backend(store).layout, "features.bar_count")
    links = {path.stem: path for path in folder.rglob("*.parquet")}
    assert set(links) == {entry.key for entry in store.entries()}
    (schema,) = folder.iterdir()  # one result schema, and in its folder one folder per symbol
    assert {path.name for path in schema.iterdir()} == {
        f"__jules_symbol=S{i:03d}" for i in range(5)
    }
    for entry in store.entries():  # each link to its entry's file
        assert links[entry.key] == entry_link(local_backend(store).layout, entry)
        assert links[entry.key].samefile(local_backend(store).layout.result_path(entry.key))
    one = bare_duckdb(store, "SELECT count(*) FROM bar_count WHERE symbol = 'S003'")
    assert one == [[7]]


@pytest.mark.slow
def test_a_result_recomputed_after_its_file_was_lost_is_relinked(store, aapl):
    from jules_cache.query.views import entry_link

    first = store.fetch("AAPL", aapl, {"freq": "1h"}, bar_count)
    first.path.unlink()  # lost behind the cache's back: the row and the link remain
    again = store.fetch("AAPL", aapl, {"freq": "1h"}, bar_count)
    assert not again.hit and again.path.exists()
    link = entry_link(local_backend(store).layout, store.entry(again.key))
    assert link.samefile(again.path)  # the link follows the new file, not the lost one
    assert bare_duckdb(store, "SELECT count(*) FROM bar_count") == [[7]]


@pytest.mark.slow
def test_stored_views_stay_queryable_after_gc_rm_and_quarantine(filled):
    total = bare_duckdb(filled, "SELECT count(DISTINCT key) FROM bar_count__all")[0][0]
    assert total == 6
    # GC deletes some entries (budget: roughly half the bytes) and refreshes the views in the
    # same transaction as the row deletes.
    budget = sum(entry.bytes for entry in filled.entries()) // 2
    report = filled.gc(max_size=budget, grace=0)
    assert report.ok and 0 < len(filled.entries()) < 6
    left = len(filled.entries())
    assert bare_duckdb(filled, "SELECT count(DISTINCT key) FROM bar_count__all")[0][0] == left
    victim = filled.entries()[0]
    filled.remove(key=victim.key)
    assert bare_duckdb(filled, "SELECT count(DISTINCT key) FROM bar_count__all")[0][0] == left - 1
    survivor = filled.entries()[0]
    (filled.root / survivor.path).write_bytes(b"garbage")  # damaged: `check --fix` quarantines
    filled.check(fix=True)
    assert filled.check().consistent
    rows = bare_duckdb(filled, "SELECT count(DISTINCT key) FROM bar_count__all")
    assert rows[0][0] == left - 2


@pytest.mark.slow
def test_views_an_earlier_version_stored_in_the_manifest_are_dropped(store, aapl):
    store.get_or_compute("AAPL", aapl, {"freq": "1h"}, bar_count)
    with local_backend(
        store
    ).manifest.write() as con:  # what earlier versions stored in the manifest
        con.execute("CREATE SCHEMA jules_cache_parts")
        con.execute("CREATE VIEW jules_cache_parts.bar_count__0000 AS SELECT 1 AS n")
        con.execute("CREATE VIEW bar_count AS SELECT * FROM jules_cache_parts.bar_count__0000")
        con.execute("CREATE VIEW feature_views AS SELECT 1 AS n")
    store.get_or_compute("MSFT", aapl, {"freq": "1h"}, bar_count)
    store.flush()  # the writer brings catalog.duckdb up to date
    again = FeatureStore(store.root)  # migrates: the manifest keeps no views
    with local_backend(again).manifest.read() as con:
        assert con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchall() == [
            (0,)
        ]
        schemas = "SELECT count(*) FROM duckdb_schemas() WHERE schema_name = 'jules_cache_parts'"
        assert con.execute(schemas).fetchall() == [(0,)]
    assert bare_duckdb(again, "SELECT count(DISTINCT symbol) FROM bar_count") == [[2]]


@pytest.mark.slow  # seconds of wall time: kept out of the default run
def test_plain_duckdb_where_symbol_opens_only_that_symbols_files(store, aapl):
    """The stored views read one folder per symbol with hive partitioning: a filter on
    ``symbol`` never opens another symbol's files (here: a damaged one)."""
    from jules_cache.query.views import entry_link

    for symbol in ("AAPL", "MSFT"):
        store.get_or_compute(symbol, aapl, {"freq": "1h"}, bar_count)
    msft = store.entries(symbol="MSFT")[0]
    assert bare_duckdb(store, "SELECT count(*) FROM bar_count") == [[14]]
    link = entry_link(local_backend(store).layout, msft)
    link.unlink()
    link.write_bytes(b"not a parquet file")  # only the view reads it
    for view in ("bar_count", "bar_count_history"):
        assert bare_duckdb(store, f"SELECT count(*) FROM {view} WHERE symbol = 'AAPL'") == [[7]]
        assert bare_duckdb(store, f"SELECT count(*) FROM {view} WHERE symbol IN ('AAPL')") == [[7]]
    with pytest.raises(AssertionError, match="parquet"):
        bare_duckdb(store, "SELECT count(*) FROM bar_count")
    assert store.check(fix=True).consistent  # relinked to the entry's file
    assert bare_duckdb(store, "SELECT count(*) FROM bar_count") == [[14]]


ODD_SYMBOLS = (
    "BRK/B",
    "AAPL",
    "aapl",  # AAPL's folder on a case-insensitive file system, were case not encoded
    "日本",
    "../../etc/passwd",
    "__HIVE_DEFAULT_PARTITION__",  # what DuckDB reads as NULL, were "_" not encoded
    "a=b/c",
    "100",
    "X" * 1000,  # too long for a folder name: linked in the feature's folder itself
)


@pytest.mark.slow  # seconds of wall time: kept out of the default run
def test_any_symbol_round_trips_through_the_plain_duckdb_views(store, aapl):
    from jules_cache.query.views import link_folder

    for symbol in ODD_SYMBOLS:
        store.get_or_compute(symbol, aapl, {"freq": "1h"}, bar_count)
    rows = bare_duckdb(store, "SELECT symbol, count(*) FROM bar_count GROUP BY symbol")
    assert dict(rows) == dict.fromkeys(ODD_SYMBOLS, 7)
    for symbol in ODD_SYMBOLS:
        literal = symbol.replace("'", "''")
        query = f"SELECT count(*), min(symbol) FROM bar_count_history WHERE symbol = '{literal}'"
        assert bare_duckdb(store, query) == [[7, symbol]]
    (folder,) = link_folder(
        local_backend(store).layout, "features.bar_count"
    ).iterdir()  # one schema
    assert len([p for p in folder.iterdir() if p.is_dir()]) == len(ODD_SYMBOLS) - 1
    assert store.check().consistent
    store.remove(symbol="BRK/B")  # its link and its emptied folder go
    assert len([p for p in folder.iterdir() if p.is_dir()]) == len(ODD_SYMBOLS) - 2
    store.remove(symbol="X" * 1000)
    assert [p for p in folder.iterdir() if not p.is_dir()] == []
    rows = bare_duckdb(store, "SELECT symbol, count(*) FROM bar_count GROUP BY symbol")
    assert dict(rows) == dict.fromkeys(ODD_SYMBOLS[1:-1], 7)
    assert store.check().consistent


def test_links_of_a_root_made_before_symbol_folders_stay_queryable_until_relinked(store, aapl):
    from jules_cache.query import catalog_file
    from jules_cache.query.views import entry_link, link_folder

    for symbol in ("AAPL", "MSFT"):
        store.get_or_compute(symbol, aapl, {"freq": "1h"}, bar_count)
    folder = link_folder(local_backend(store).layout, "features.bar_count")
    for entry in store.entries():  # the layout before: every link in the feature's folder
        link = entry_link(local_backend(store).layout, entry)
        link.rename(folder / link.name)
        link.parent.rmdir()
    (schema,) = [path for path in folder.iterdir() if path.is_dir()]
    schema.rmdir()
    catalog_file.build(local_backend(store).manifest)
    query = "SELECT symbol, count(*) FROM bar_count GROUP BY symbol ORDER BY symbol"
    assert bare_duckdb(store, query) == [["AAPL", 7], ["MSFT", 7]]
    assert len(store.check().of_kind("view_link")) == 4  # two links in the old place
    assert store.check(fix=True).consistent
    assert store.check().problems == ()
    (schema,) = folder.iterdir()
    assert sorted(p.name for p in schema.iterdir()) == [
        "__jules_symbol=AAPL",
        "__jules_symbol=MSFT",
    ]
    catalog_file.build(local_backend(store).manifest)
    assert bare_duckdb(store, query) == [["AAPL", 7], ["MSFT", 7]]


def test_a_root_whose_path_looks_like_a_partition_adds_no_column(tmp_path, aapl):
    """DuckDB's hive partitioning parses every ``key=value`` in a path, the root's too."""
    from jules_cache import FeatureStore

    with FeatureStore(tmp_path / "year=2024" / "a=b=c" / "cache") as store:
        store.get_or_compute("AAPL", aapl, {"freq": "1h"}, bar_count)
        columns = [row[0] for row in bare_duckdb(store, "DESCRIBE bar_count")]
        assert not {"year", "a", "a=b"} & set(columns)
        assert columns == store.sql("SELECT * FROM bar_count").columns
        query = "SELECT count(*) FROM bar_count WHERE symbol = 'AAPL'"
        assert bare_duckdb(store, query) == [[7]]


def test_a_file_copied_over_a_checked_one_is_refused_by_the_next_query(store, ticks):
    """A file's key check is reused only while the file is the one checked: a copy over it
    after a query read it is refused by the next query, pruned or whole."""
    import shutil

    config = {"freq": "1m"}
    a = store.fetch("AAPL", ticks.filter(pl.col("symbol") == "AAPL"), config, bar_count)
    b = store.fetch("MSFT", ticks.filter(pl.col("symbol") == "MSFT"), config, bar_count)
    store.flush()
    pruned = "SELECT count(*) AS n FROM bar_count WHERE symbol = 'MSFT'"
    whole = "SELECT count(*) AS n FROM bar_count"
    assert store.sql(pruned)["n"][0] == len(b.value)
    assert store.sql(whole)["n"][0] == len(a.value) + len(b.value)
    shutil.copy(a.path, b.path)
    for query in (pruned, whole):
        with pytest.raises(QueryError, match="check --fix"):
            store.sql(query)
    assert store.check(fix=True).consistent  # quarantines the impostor, as the message says
