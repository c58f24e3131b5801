"""Attacks on the read-only SQL guarantee: nothing a query says may write a byte or leave the root.

Every form below goes through ``store.sql``, ``store.sql_arrow`` and ``jules-cache sql``; each
must be refused (``QueryError`` / exit 1 with the message on stderr), every file under the root
and under a watched folder outside it must stay byte-identical, and the next query in the same
process must see the true data. Further tests run statements that slipped past the statement
check straight on the query session, to show the connection itself cannot write, read outside
files or keep a catalog change.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner
from features import bar_count
from helpers import snapshot

from jules_cache import FeatureStore
from jules_cache.cli import cli
from jules_cache.errors import QueryError
from jules_cache.query import sql as query_module
from jules_cache.synthetic import make_ticks, symbol_names, ticks_for

pytestmark = pytest.mark.attack

SYMBOLS = ("AAPL", "MSFT", "NVDA")

# What a reader of the cache relies on: after every attack it must be what it was when filled.
TRUTH = (
    "SELECT symbol, config_json->>'freq' AS freq, count(*) AS n, sum(n) AS ticks, "
    "min(mean_price) AS lo FROM bar_count__all GROUP BY ALL ORDER BY ALL",
    "SELECT key, feature, symbol, path, bytes FROM entries ORDER BY key",
    "SELECT view_name, feature, entries, symbols FROM feature_views",
    "SELECT count(*) AS n FROM bar_count__all WHERE symbol = 'AAPL'",
)

# {live}: a result file the manifest serves; {manifest}: manifest.duckdb; {root}: the cache
# root; {outside}: a watched folder outside the root ({outside}/victim.parquet is a copy of a
# result, {outside}/secret.txt a private file).
ATTACKS = {
    # EXPLAIN ANALYZE runs the statement it explains
    "explain-analyze-copy-over-live-result": (
        "EXPLAIN ANALYZE COPY (SELECT 42 AS n) TO '{live}' (FORMAT parquet)"
    ),
    "explain-analyze-copy-over-manifest": "EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{manifest}'",
    "explain-analyze-copy-outside": (
        "EXPLAIN ANALYZE COPY (SELECT * FROM entries) TO '{outside}/stolen.csv'"
    ),
    "explain-analyze-copy-into-objects": (
        "EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{root}/objects/planted.parquet'"
    ),
    "explain-analyze-delete": "EXPLAIN ANALYZE DELETE FROM entries",
    "explain-analyze-insert": "EXPLAIN ANALYZE INSERT INTO entries SELECT * FROM entries",
    "explain-analyze-update": "EXPLAIN ANALYZE UPDATE entries SET symbol = 'EVIL'",
    "explain-analyze-create-view": (
        "EXPLAIN ANALYZE CREATE OR REPLACE VIEW bar_count AS SELECT 42 AS n"
    ),
    "explain-analyze-create-temp-view": (
        "EXPLAIN ANALYZE CREATE OR REPLACE TEMP VIEW bar_count AS SELECT 42 AS n"
    ),
    "explain-analyze-create-table": "EXPLAIN ANALYZE CREATE TABLE planted AS SELECT 1 AS x",
    "explain-analyze-attach": "EXPLAIN ANALYZE ATTACH '{outside}/planted.duckdb' AS planted",
    "explain-analyze-export": "EXPLAIN ANALYZE EXPORT DATABASE '{outside}/export'",
    "explain-analyze-cte-delete": (
        "EXPLAIN ANALYZE WITH d AS (DELETE FROM entries RETURNING *) SELECT count(*) FROM d"
    ),
    # plain writes
    "copy-to-outside": "COPY entries TO '{outside}/entries.csv'",
    "copy-over-live-result": "COPY (SELECT 42 AS n) TO '{live}' (FORMAT parquet)",
    "copy-from": "COPY entries FROM '{outside}/secret.txt'",
    "export-database": "EXPORT DATABASE '{outside}/export'",
    "delete": "DELETE FROM entries",
    "drop-view": "DROP VIEW bar_count",
    "create-or-replace-view": "CREATE OR REPLACE VIEW bar_count AS SELECT 42 AS n",
    "create-macro": "CREATE MACRO bar_count() AS TABLE SELECT 42 AS n",
    "attach-manifest": "ATTACH '{manifest}' AS m",
    "attach-new-file": "ATTACH '{outside}/planted.duckdb' AS planted",
    "attach-memory": "ATTACH ':memory:' AS planted",
    "detach": "DETACH memory",
    "use": "USE system.main",
    # the settings that hold the sandbox, and the session state views could depend on
    "set-external-access": "SET enable_external_access = true",
    "reset-external-access": "RESET enable_external_access",
    "set-allowed-directories": "SET allowed_directories = ['/']",
    "set-allowed-paths": "SET allowed_paths = ['{outside}/secret.txt']",
    "set-lock-configuration": "SET lock_configuration = false",
    "reset-lock-configuration": "RESET lock_configuration",
    "set-disabled-filesystems": "SET disabled_filesystems = ''",
    "set-search-path": "SET search_path = 'system.main'",
    "set-variable": (
        "SET VARIABLE jc_bar_count_all_files = ['{outside}/victim.parquet', "
        "'{outside}/victim.parquet', '{outside}/victim.parquet', '{outside}/victim.parquet', "
        "'{outside}/victim.parquet', '{outside}/victim.parquet']"
    ),
    "pragma-profiling-output": "PRAGMA profiling_output = '{outside}/profile.txt'",
    "pragma-enable-profiling": "PRAGMA enable_profiling",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "load-file": "LOAD '{outside}/secret.txt'",
    "call": "CALL enable_profiling()",
    # more than one statement
    "two-statements": "SELECT 1; DELETE FROM entries",
    "select-then-copy": "SELECT 1; COPY (SELECT 42 AS n) TO '{live}' (FORMAT parquet)",
    "begin-commit": "BEGIN TRANSACTION; DELETE FROM entries; COMMIT",
    # data-changing CTEs inside a SELECT
    "cte-delete": "WITH d AS (DELETE FROM entries RETURNING *) SELECT count(*) FROM d",
    "cte-insert": (
        "WITH i AS (INSERT INTO entries SELECT * FROM entries RETURNING *) SELECT count(*) FROM i"
    ),
    "cte-update-nested": (
        "SELECT * FROM (WITH u AS (UPDATE entries SET symbol = 'EVIL' RETURNING *) "
        "SELECT count(*) FROM u)"
    ),
    # SQL hidden inside a string
    "query-function": "SELECT * FROM query('DELETE FROM entries')",
    "query-function-copy": (
        "SELECT * FROM query('COPY (SELECT 42 AS n) TO ''{outside}/q.parquet''')"
    ),
    "query-table": "SELECT * FROM query_table('entries')",
    # reading files directly, outside and inside the root
    "read-text-outside": "SELECT * FROM read_text('{outside}/secret.txt')",
    "read-blob-outside": "SELECT * FROM read_blob('{outside}/secret.txt')",
    "read-csv-outside": "SELECT * FROM read_csv('{outside}/secret.txt')",
    "sniff-csv-outside": "SELECT * FROM sniff_csv('{outside}/secret.txt')",
    "glob-outside": "SELECT * FROM glob('{outside}/*')",
    "read-parquet-outside": "SELECT * FROM read_parquet('{outside}/victim.parquet')",
    "replacement-scan-outside": "SELECT * FROM '{outside}/victim.parquet'",
    "parquet-metadata-outside": "SELECT * FROM parquet_metadata('{outside}/victim.parquet')",
    "read-text-etc": "SELECT * FROM read_text('/etc/hostname')",
    "glob-root": "SELECT * FROM glob('{root}/**')",
    "read-text-manifest": "SELECT * FROM read_blob('{manifest}')",
}

# Every form through store.sql in the default run; through sql_arrow and the CLI as well in the
# slow step (both end in the same guarded execution, so the default run loses no mechanism).
ENTRY_POINTS = (
    "sql",
    pytest.param("sql_arrow", marks=pytest.mark.slow),
    pytest.param("cli", marks=pytest.mark.slow),
)


@dataclass(frozen=True)
class Cache:
    root: Path
    outside: Path
    live: Path

    def places(self) -> dict[str, str]:
        return {
            "root": str(self.root),
            "outside": str(self.outside),
            "live": str(self.live),
            "manifest": str(self.root / "manifest.duckdb"),
        }


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Iterator[Cache]:
    """One filled cache and a watched folder outside it, shared by the attacks (which must
    leave both untouched; `check` runs at the end)."""
    base = tmp_path_factory.mktemp("attack")
    ticks = make_ticks(symbol_names(3), 60_000, seed=11)
    with FeatureStore(base / "cache") as store:
        for symbol in SYMBOLS:
            for freq in ("1m", "5m"):
                store.get_or_compute(symbol, ticks_for(ticks, symbol), {"freq": freq}, bar_count)
        live = store.root / store.entries(symbol="AAPL")[0].path
        outside = base / "outside"
        outside.mkdir()
        shutil.copyfile(live, outside / "victim.parquet")
        (outside / "secret.txt").write_text("a,b\nprivate,1\n")
        yield Cache(store.root, outside, live)
        assert store.check().consistent


@pytest.fixture(scope="module")
def store(cache) -> Iterator[FeatureStore]:
    with FeatureStore(cache.root) as feature_store:
        yield feature_store


def truth(store: FeatureStore) -> list[list[tuple]]:
    return [store.sql(query).rows() for query in TRUTH]


@pytest.fixture(scope="module")
def true_rows(store) -> list[list[tuple]]:
    """What TRUTH returns on the cache as filled: after every attack it must return the same."""
    return truth(store)


def run_entry_point(entry_point: str, store: FeatureStore, query: str) -> str:
    """Run ``query`` the way a user would; return the refusal message (fail if not refused)."""
    if entry_point == "cli":
        done = CliRunner().invoke(cli, ["--root", str(store.root), "sql", query])
        assert done.exit_code == 1, (done.exit_code, done.stdout, done.stderr)
        assert done.stdout == ""
        return done.stderr
    with pytest.raises(QueryError) as info:
        getattr(store, entry_point)(query)
    return str(info.value)


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_is_refused_and_changes_nothing(cache, store, true_rows, attack, entry_point):
    before = snapshot(cache.root, cache.outside)
    message = run_entry_point(entry_point, store, ATTACKS[attack].format(**cache.places()))
    # A form DuckDB cannot even parse (EXPLAIN ANALYZE ATTACH/EXPORT) never ran either.
    assert re.search(r"refused|syntax error", message), message
    assert snapshot(cache.root, cache.outside) == before
    assert truth(store) == true_rows


@pytest.mark.slow
def test_the_cli_entry_point_refuses_with_exit_1_and_the_reason_on_stderr(
    cache, store, jules_cache_command
):
    env = {**os.environ, "JULES_CACHE_ROOT": str(cache.root)}
    before = snapshot(cache.root, cache.outside)
    for attack in ("explain-analyze-copy-over-live-result", "read-text-outside", "cte-delete"):
        done = subprocess.run(
            [jules_cache_command, "sql", ATTACKS[attack].format(**cache.places())],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.returncode == 1, (attack, done.stdout, done.stderr)
        assert done.stdout == "" and "refused" in done.stderr, (attack, done.stderr)
        assert "Traceback" not in done.stderr
    assert snapshot(cache.root, cache.outside) == before


@pytest.mark.slow
def test_a_fresh_process_still_gets_the_true_values(cache, store, jules_cache_command):
    """The finding: a poisoned result file was served as a HIT to a new process."""
    expected = truth(store)
    for attack in ATTACKS.values():
        with pytest.raises(QueryError):
            store.sql(attack.format(**cache.places()))
    env = {**os.environ, "JULES_CACHE_ROOT": str(cache.root)}
    done = subprocess.run(
        [jules_cache_command, "sql", TRUTH[0], "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = [tuple(row.values()) for row in json.loads(done.stdout)]
    assert [tuple(map(str, row)) for row in rows] == [tuple(map(str, row)) for row in expected[0]]


# -- read-only queries keep working ------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "EXPLAIN SELECT count(*) FROM bar_count__all WHERE symbol = 'AAPL'",
        "EXPLAIN ANALYZE SELECT count(*) FROM bar_count__all WHERE symbol = 'AAPL'",
        "/* why */ explain analyze WITH a AS (SELECT * FROM bar_count__all) SELECT count(*) FROM a",
        "EXPLAIN (FORMAT json) SELECT 1",
        "WITH RECURSIVE r AS (SELECT 1 AS x UNION ALL SELECT x + 1 FROM r WHERE x < 3) "
        "SELECT * FROM r",
        "SUMMARIZE SELECT n FROM bar_count__all",
        "DESCRIBE bar_count__all",
        "SHOW TABLES",
        "FROM entries SELECT count(*)",
        "SELECT * FROM range(3)",
    ],
)
def test_read_only_forms_still_run(cache, store, query):
    before = snapshot(cache.root, cache.outside)
    assert store.sql_arrow(query).num_rows > 0
    assert snapshot(cache.root, cache.outside) == before


# -- the mechanism: statements that slipped past the statement check ----------------------------


def session():
    """The process's query session, with every feature view installed (by a real query)."""
    return query_module._get_session()


SLIPPED = {
    "explain-analyze-copy-over-live-result": ATTACKS["explain-analyze-copy-over-live-result"],
    "explain-analyze-copy-into-objects": ATTACKS["explain-analyze-copy-into-objects"],
    "explain-analyze-copy-over-manifest": ATTACKS["explain-analyze-copy-over-manifest"],
    "explain-analyze-copy-outside": ATTACKS["explain-analyze-copy-outside"],
    "copy-over-live-result": ATTACKS["copy-over-live-result"],
    "export-database": ATTACKS["export-database"],
    "attach-manifest": ATTACKS["attach-manifest"],
    "attach-new-file": ATTACKS["attach-new-file"],
    "read-text-outside": ATTACKS["read-text-outside"],
    "glob-root": ATTACKS["glob-root"],
    "read-parquet-live": "SELECT * FROM read_parquet('{live}')",
    "set-external-access": ATTACKS["set-external-access"],
    "reset-lock-configuration": ATTACKS["reset-lock-configuration"],
    "set-allowed-directories": ATTACKS["set-allowed-directories"],
    "install": ATTACKS["install"],
    "load-file": ATTACKS["load-file"],
}


@pytest.mark.parametrize("attack", sorted(SLIPPED))
def test_the_session_connection_itself_cannot_touch_files(cache, store, attack):
    """Raw ``execute`` on the session's connection, with no statement check at all."""
    store.sql(TRUTH[0])
    before = snapshot(cache.root, cache.outside)
    with pytest.raises(duckdb.Error):
        session().con.execute(SLIPPED[attack].format(**cache.places())).fetchall()
    assert snapshot(cache.root, cache.outside) == before


# Statements that change the session (catalog or state) if run: the guarded execution must
# undo them or throw the session away, so that the next query sees the true data.
CHANGING = {
    "explain-analyze-create-view": ATTACKS["explain-analyze-create-view"],
    "explain-analyze-create-temp-view": ATTACKS["explain-analyze-create-temp-view"],
    "explain-analyze-delete": ATTACKS["explain-analyze-delete"],
    "explain-analyze-update": ATTACKS["explain-analyze-update"],
    "cte-delete": ATTACKS["cte-delete"],
    "drop-view": ATTACKS["drop-view"],
    "drop-table": "DROP TABLE entries",
    "create-table-shadow": "CREATE TEMP TABLE entries AS SELECT * FROM entries LIMIT 0",
    "create-macro": ATTACKS["create-macro"],
    "attach-memory": ATTACKS["attach-memory"],
    "set-search-path": ATTACKS["set-search-path"],
    "set-variable": ATTACKS["set-variable"],
    "commit": "COMMIT",
    "rollback": "ROLLBACK",
    "checkpoint": "CHECKPOINT",
}


@pytest.mark.parametrize("attack", sorted(CHANGING))
def test_a_session_change_that_slipped_through_is_undone(cache, store, true_rows, attack):
    before = snapshot(cache.root, cache.outside)
    statement = duckdb.extract_statements(CHANGING[attack].format(**cache.places()))[0]
    try:
        result = session().execute(statement)
    except duckdb.Error:
        pass  # refused by DuckDB itself: fine, as long as nothing changed
    else:
        assert isinstance(result, pa.Table)
    assert truth(store) == true_rows
    assert snapshot(cache.root, cache.outside) == before


def test_state_changes_across_several_slipped_statements_are_undone(cache, store, true_rows):
    """Statements that each do one harmless-looking step, together a shadow of ``entries``."""
    steps = [
        "ATTACH ':memory:' AS planted",
        "CREATE TABLE planted.main.entries AS SELECT * FROM entries LIMIT 0",
        "USE planted",
        "SET search_path = 'planted.main'",
        "BEGIN TRANSACTION",
    ]
    for step in steps:
        with contextlib.suppress(duckdb.Error):
            session().execute(duckdb.extract_statements(step)[0])
    assert truth(store) == true_rows


def test_a_read_only_statement_keeps_the_session(store):
    store.sql(TRUTH[0])
    kept = session()
    store.sql(TRUTH[1])
    with pytest.raises(QueryError):
        store.sql("SELECT * FROM no_such_view")
    with pytest.raises(QueryError):
        store.sql("SELECT * FROM read_text('/etc/hostname')")
    assert session() is kept  # failed queries do not cost a new session (~40 ms)
    kept.execute(duckdb.extract_statements("ATTACH ':memory:' AS planted")[0])
    assert session() is kept  # undone by the ROLLBACK
    with contextlib.suppress(duckdb.Error):
        kept.execute(duckdb.extract_statements("COMMIT")[0])
    assert session() is not kept  # nothing left to roll back: the session is thrown away
    assert "planted" not in str(store.sql("SELECT database_name FROM duckdb_databases()"))


def _bars_text(ticks, config):
    """bar_count with ``n`` as text: a column whose type changed between code versions."""
    import polars as pl

    return bar_count(ticks, config).with_columns(pl.col("n").cast(pl.String))


def test_incompatible_column_types_across_versions_are_a_query_error(tmp_path):
    ticks = ticks_for(make_ticks(symbol_names(1), 5_000, seed=3), "AAPL")
    with FeatureStore(tmp_path / "cache") as other:
        other.get_or_compute("AAPL", ticks, {"freq": "1m"}, bar_count, name="bars", version="1")
        other.get_or_compute("AAPL", ticks, {"freq": "1m"}, _bars_text, name="bars", version="2")
        with pytest.raises(QueryError, match=r"incompatible column types.*versions="):
            other.sql("SELECT count(*) FROM bars_history")
        assert other.sql("SELECT count(*) AS n FROM bars", versions="2")["n"][0] > 0
        one = other.sql("SELECT n FROM bars_history WHERE code_version = '1' LIMIT 1")
        assert one.schema["n"].is_integer()
