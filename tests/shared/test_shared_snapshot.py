"""store.sql on a shared root copies only what changed since its previous query, and misses
nothing: rows changed behind the library's back, deletes, truncates, and transactions that
commit after a later one (the trap of a plain "highest change number seen" watermark)."""

from __future__ import annotations

import pytest

psycopg = pytest.importorskip(
    "psycopg", reason="psycopg is not installed: pip install -e '.[shared]'"
)
from helpers import shared_backend  # noqa: E402
from psycopg import sql  # noqa: E402
from shared_worker import moving_average, ticks  # noqa: E402

from jules_cache import FeatureStore  # noqa: E402

pytestmark = pytest.mark.shared
HIDDEN = frozenset({"schema_version"})  # untracked bookkeeping: copied whole
COUNT = "SELECT count(*) AS n, sum(hit_count) AS hits FROM entries"


def _store(s3_url: str, services, pg_schema: str) -> FeatureStore:
    return FeatureStore(s3_url, catalog=services.pg_dsn, catalog_schema=pg_schema)


def _connect(services, pg_schema: str) -> psycopg.Connection:
    connection = psycopg.connect(services.pg_dsn, autocommit=True)
    connection.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(pg_schema)))
    return connection


def _fill(store: FeatureStore, symbols: int) -> list[str]:
    return [
        store.fetch(f"S{i}", ticks(i), {"window": 5}, moving_average, version="1").key
        for i in range(symbols)
    ]


def test_a_snapshot_after_one_publish_holds_only_that_row(services, s3_url, pg_schema):
    with _store(s3_url, services, pg_schema) as store:
        _fill(store, 3)
        catalog = shared_backend(store).catalog
        first = catalog.changes_since(None, exclude=HIDDEN)
        assert first.replaced["entries"].num_rows == 3
        _fill(store, 4)  # S0-S2 are hits; S3 is the one publish
        store.flush()
        second = catalog.changes_since(first.watermark, exclude=HIDDEN)
        assert "entries" not in second.replaced
        assert second.changed["entries"].num_rows == 4  # one new row + three hit counts
        third = catalog.changes_since(second.watermark, exclude=HIDDEN)
        # What a later snapshot re-reads is bounded by what was in flight, not the catalog.
        assert len(third.changed.get("entries", [])) <= 4
        assert not third.replaced


def test_rows_changed_behind_the_library_show_in_the_next_query(services, s3_url, pg_schema):
    with _store(s3_url, services, pg_schema) as store, _connect(services, pg_schema) as pg:
        keys = _fill(store, 3)
        store.flush()  # call counters too
        assert store.sql(COUNT).row(0) == (3, 0)
        pg.execute("UPDATE entries SET hit_count = 5 WHERE key = %s", (keys[0],))
        assert store.sql(COUNT).row(0) == (3, 5)
        pg.execute("DELETE FROM entries WHERE key = %s", (keys[1],))
        assert store.sql(COUNT).row(0) == (2, 5)
        assert keys[1] not in store.sql("SELECT key FROM entries")["key"].to_list()
        # A key changed in place: the old key goes, the new one shows.
        pg.execute("UPDATE entries SET key = %s WHERE key = %s", ("f" * 32, keys[2]))
        assert sorted(store.sql("SELECT key FROM entries")["key"]) == sorted([keys[0], "f" * 32])
        # A row deleted and put back within the window shows with its new values.
        row = pg.execute("SELECT * FROM entries WHERE key = %s", (keys[0],)).fetchone()
        with pg.transaction():
            pg.execute("DELETE FROM entries WHERE key = %s", (keys[0],))
            marks = ", ".join(["%s"] * len(row))
            pg.execute(f"INSERT INTO entries VALUES ({marks})", row)
            pg.execute("UPDATE entries SET hit_count = 9 WHERE key = %s", (keys[0],))
        assert store.sql(COUNT).row(0) == (2, 9)
        # Multi-column keys and TRUNCATE (no row triggers fire for it).
        assert store.sql("SELECT count(*) AS n FROM call_counters")["n"][0] > 0
        pg.execute("TRUNCATE call_counters")
        assert store.sql("SELECT count(*) AS n FROM call_counters")["n"][0] == 0
        pg.execute("DELETE FROM entries")
        assert store.sql(COUNT).row(0) == (0, None)


def test_a_transaction_committing_after_a_later_one_is_not_missed(services, s3_url, pg_schema):
    """Writer A begins first and commits last; a query between B's commit and A's must not
    move its watermark past A."""
    with (
        _store(s3_url, services, pg_schema) as store,
        _connect(services, pg_schema) as first,
        _connect(services, pg_schema) as second,
    ):
        keys = _fill(store, 2)
        assert store.sql(COUNT).row(0) == (2, 0)
        with first.transaction():
            first.execute("UPDATE entries SET hit_count = 7 WHERE key = %s", (keys[0],))
            second.execute("UPDATE entries SET hit_count = 1 WHERE key = %s", (keys[1],))
            assert store.sql(COUNT).row(0) == (2, 1)  # B committed, A not yet
        assert store.sql(COUNT).row(0) == (2, 8)
        first.execute("DELETE FROM entries WHERE key = %s", (keys[1],))
        assert store.sql(COUNT).row(0) == (1, 7)


def test_the_bookkeeping_table_is_not_visible_to_sql(services, s3_url, pg_schema):
    with _store(s3_url, services, pg_schema) as store:
        _fill(store, 1)
        tables = store.sql("SELECT table_name FROM information_schema.tables")["table_name"]
        assert not {"row_deletions", "row_deletions_pruned"} & set(tables.to_list())
        assert "entries" in tables.to_list()


def test_a_position_the_server_never_reached_gets_every_table_whole(services, s3_url, pg_schema):
    """A catalog restored from a dump restarts its transaction ids: a position taken before
    would find no row "newer" and the copy would never change again."""
    with _store(s3_url, services, pg_schema) as store:
        _fill(store, 2)
        catalog = shared_backend(store).catalog
        now = catalog.changes_since(None, exclude=HIDDEN).watermark
        for position in (now + 10**9, now - 2**31):  # ahead of the server; too old for xmin
            changes = catalog.changes_since(position, exclude=HIDDEN)
            assert changes.replaced["entries"].num_rows == 2
            assert not changes.changed


def _entries_oid() -> int:
    """The DuckDB table id of the query session's copy of ``entries`` (a new id: copied anew)."""
    from jules_cache.query import sql as query_sql

    assert query_sql._session is not None
    found = query_sql._session.con.execute(
        "SELECT table_oid FROM duckdb_tables() WHERE table_name = 'entries'"
    ).fetchall()
    return int(found[0][0])


def _same_rows(store: FeatureStore, pg: psycopg.Connection) -> None:
    """The query session's ``entries`` holds exactly the catalog's rows, column for column."""
    query = "SELECT key, symbol, hit_count, bytes FROM entries ORDER BY key"
    seen = [tuple(row) for row in store.sql(query).iter_rows()]
    assert seen == [tuple(row) for row in pg.execute(query).fetchall()]


def test_the_sessions_copy_takes_inserts_updates_and_deletes_in_place(services, s3_url, pg_schema):
    """After the first query, only what changed reaches the session's copy of a table: the
    table is never copied anew, and it holds the catalog's rows after every kind of change."""
    with _store(s3_url, services, pg_schema) as store, _connect(services, pg_schema) as pg:
        keys = _fill(store, 3)
        store.flush()
        _same_rows(store, pg)
        table = _entries_oid()
        _fill(store, 5)  # two inserts, three hit counts
        store.flush()
        _same_rows(store, pg)
        pg.execute("UPDATE entries SET hit_count = 11, bytes = 7 WHERE key = %s", (keys[0],))
        _same_rows(store, pg)
        pg.execute("DELETE FROM entries WHERE key = %s", (keys[1],))
        _same_rows(store, pg)
        pg.execute("UPDATE entries SET key = %s WHERE key = %s", ("e" * 32, keys[2]))
        _same_rows(store, pg)
        assert _entries_oid() == table


def test_a_copy_older_than_the_change_log_is_copied_whole(services, s3_url, pg_schema):
    """Queries not naming ``entries`` move the catalog copy on; once the kept changes no longer
    reach back to the session's copy, it is copied whole, and still right."""
    from jules_cache.engine import shared_sql

    with _store(s3_url, services, pg_schema) as store, _connect(services, pg_schema) as pg:
        keys = _fill(store, 2)
        store.flush()
        _same_rows(store, pg)
        table = _entries_oid()
        for hits in range(shared_sql._LOGGED + 1):
            pg.execute("UPDATE entries SET hit_count = %s WHERE key = %s", (hits, keys[0]))
            store.sql("SELECT count(*) FROM call_counters")  # a new version, entries untouched
        pg.execute("DELETE FROM entries WHERE key = %s", (keys[1],))
        _same_rows(store, pg)
        assert _entries_oid() != table


def test_sql_refuses_an_object_of_another_key_pruned_or_whole(services, s3_url, pg_schema):
    """A pruned query reads its few objects whole into memory and checks them there; a whole
    view checks footers: either way an object copied over another key's is refused."""
    from jules_cache.engine.shared import object_name
    from jules_cache.errors import QueryError

    with _store(s3_url, services, pg_schema) as store:
        a = store.fetch("A", ticks(1), {"window": 5}, moving_average, version="1")
        b = store.fetch("B", ticks(2), {"window": 5}, moving_average, version="1")
        view = next(iter(store.refresh_views().values()))
        pruned = f"SELECT count(*) AS n FROM {view} WHERE symbol = 'B'"
        assert store.sql(pruned)["n"][0] == len(b.value)
        objects = shared_backend(store).objects
        data = objects.get(object_name(a.key))
        objects.delete([object_name(b.key)])
        assert objects.put_if_absent(object_name(b.key), data)
        for query in (pruned, f"SELECT count(*) AS n FROM {view}"):
            with pytest.raises(QueryError, match="check --fix"):
                store.sql(query)


def test_gc_prunes_the_deletion_notes_and_an_older_copy_is_still_right(
    services, s3_url, pg_schema, monkeypatch
):
    """Every deleted row leaves a note for the copies of the catalog that store.sql keeps;
    kept for ever, the notes grew with every rm and GC. GC now drops notes older than
    ``shared_upkeep.DELETION_NOTES_KEPT_SECONDS``; a copy taken before notes it needed were
    dropped is copied whole, never left holding a deleted row."""
    from jules_cache.engine import shared_upkeep

    with _store(s3_url, services, pg_schema) as store, _connect(services, pg_schema) as pg:
        keys = _fill(store, 4)
        store.flush()
        catalog = shared_backend(store).catalog
        before = catalog.changes_since(None, exclude=HIDDEN)  # a reader's copy, kept
        _same_rows(store, pg)
        store.remove(key=keys[0])
        pg.execute("DELETE FROM entries WHERE key = %s", (keys[1],))
        (notes,) = pg.execute("SELECT count(*) FROM row_deletions").fetchone()
        assert notes >= 2
        monkeypatch.setattr(shared_upkeep, "DELETION_NOTES_KEPT_SECONDS", 0.0)
        store.gc()
        assert pg.execute("SELECT count(*) FROM row_deletions").fetchone() == (0,)
        _same_rows(store, pg)  # the store's own session copy: still exactly the catalog
        after = catalog.changes_since(before.watermark, exclude=HIDDEN)
        assert after.replaced["entries"].num_rows == 2  # the notes it needed are gone: whole
        pg.execute("DELETE FROM entries WHERE key = %s", (keys[2],))  # noted after the prune
        since = catalog.changes_since(after.watermark, exclude=HIDDEN)
        assert "entries" not in since.replaced
        assert since.deleted["entries"] == [(keys[2],)]
