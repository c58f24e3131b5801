"""One contract, both catalogs: a local root's DuckDB manifest (``ManifestCatalog``) and a
shared cache's PostgreSQL schema (``PostgresCatalog``) keep the same rows and locks
(``storage.catalog.Catalog``), so the engine above them is written once.

The manifest case runs in the default suite; the PostgreSQL one needs the services (marker
``shared``). Processes are spawned (never forked), each with its own connections.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from helpers import catalog_key as _key
from helpers import catalog_row as _row
from helpers import join_all
from helpers import naive_utc_now as _now

from jules_cache.engine.manifest_catalog import ManifestCatalog
from jules_cache.fingerprints.inputs import InputFile
from jules_cache.models import Entry
from jules_cache.storage.catalog import (
    Catalog,
    bump_counter,
    counters,
    entries,
    entries_snapshot,
    entry_inputs,
    keys_with_rows,
    statistics,
)
from jules_cache.storage.layout import Layout
from jules_cache.storage.manifest import Manifest

SPAWN = multiprocessing.get_context("spawn")
JOIN_TIMEOUT = 120
MATCH_ALL = {"key": None, "feature": None, "symbol": None}  # match_entries: every entry
CATALOGS = ["manifest", pytest.param("postgres", marks=pytest.mark.shared)]


@pytest.fixture(params=CATALOGS)
def any_catalog(request, tmp_path):
    if request.param == "postgres":
        yield request.getfixturevalue("catalog")
        return
    manifest = Manifest(Layout.create(tmp_path / "cache"), lock_timeout=60)
    manifest.open()
    yield ManifestCatalog(manifest)


def _entry(catalog: Catalog, key: str) -> Entry | None:
    found = entries(catalog, "get_entry", {"key": key})
    return found[0] if found else None


def _list(catalog: Catalog, **filters) -> list[Entry]:
    """``list_entries``: newest first, filtered by feature, symbol, since (None: all)."""
    return entries(
        catalog, "list_entries", {"feature": None, "symbol": None, "since": None, **filters}
    )


# -- rows ---------------------------------------------------------------------------------------


def test_publish_then_lookups_give_entries_as_a_local_manifest_does(any_catalog):
    catalog = any_catalog
    row = _row(_key(1))
    files = [InputFile("/data/ticks.parquet", 10, 20, 30, 40, "e" * 32)]
    catalog.publish(row, input_method="file-bytes", input_files=files)
    entry = _entry(catalog, row["key"])
    assert entry == Entry(**{**row, "hit_count": 0})
    assert entry.created_at.tzinfo is None  # naive UTC, as DuckDB's TIMESTAMP
    assert _entry(catalog, _key(2)) is None
    catalog.publish(_row(_key(2), symbol="MSFT"))
    assert [e.key for e in _list(catalog)] == [
        _key(2),
        _key(1),
    ]  # newest first
    assert [e.key for e in _list(catalog, symbol="MSFT")] == [_key(2)]
    assert _list(catalog, since=_now() + timedelta(hours=1)) == []
    assert [
        e.key
        for e in entries(
            catalog, "match_entries", {"key": _key(1)[:20], "feature": None, "symbol": None}
        )
    ] == [_key(1)]
    assert entry_inputs(catalog, [_key(1)])[_key(1)] == [
        (0, "/data/ticks.parquet", 10, 20, 30, 40, "file-bytes", "e" * 32)
    ]
    assert keys_with_rows(catalog, [_key(1), _key(3)]) == {_key(1)}


def test_times_are_naive_utc_whatever_the_caller_gives(any_catalog):
    catalog = any_catalog
    from datetime import timezone

    paris_noon = datetime(2024, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    catalog.publish(_row(_key(3), created_at=paris_noon, last_accessed_at=paris_noon))
    entry = _entry(catalog, _key(3))
    assert entry.created_at == datetime(2024, 6, 1, 10, 0)  # naive, UTC
    assert _list(catalog, since=datetime(2024, 6, 1, 10, 0)) == [entry]
    assert _list(catalog, since=datetime(2024, 6, 1, 10, 0, 1)) == []


def test_republish_replaces_the_row_and_starts_its_hits_again(any_catalog):
    catalog = any_catalog
    key = _key(7)
    catalog.publish(_row(key, bytes=1))
    catalog.flush_counts(hits={key: (5, _now())})
    assert _entry(catalog, key).hit_count == 5
    catalog.publish(_row(key, bytes=2))
    entry = _entry(catalog, key)
    assert (entry.bytes, entry.hit_count) == (2, 0)
    assert len(_list(catalog)) == 1


def test_counter_flush_feeds_stats(any_catalog):
    catalog = any_catalog
    catalog.publish(_row(_key(1), symbol="AAPL"))
    catalog.publish(_row(_key(2), symbol="MSFT", feature="vwap"))
    later = _now() + timedelta(seconds=5)
    catalog.flush_counts(
        hits={
            _key(1): (3, later),
            _key(9): (1, later),
        },  # _key(9) has no row: ignored
        misses=2,
        calls={
            _key(1): ("bars", "AAPL", 3, 1),
            _key(2): ("vwap", "MSFT", 0, 1),
            _key(3): ("vwap", "ZZZ", 0, 1),
        },
    )
    entry = _entry(catalog, _key(1))
    assert (entry.hit_count, entry.last_accessed_at) == (3, later)
    assert counters(catalog) == {"misses": 2, "store_failures": 0}
    features = {f.feature: f for f in statistics(catalog, 2)[0]}
    assert (features["bars"].hits, features["bars"].misses) == (3, 1)
    assert features["bars"].seconds_saved == pytest.approx(3 * 2.5)
    assert (features["vwap"].entries, features["vwap"].misses) == (1, 2)
    symbols = statistics(catalog, 2)[1]
    assert [(s.symbol, s.hits, s.misses) for s in symbols] == [
        ("AAPL", 3, 1),
        ("MSFT", 0, 1),
        ("__other__", 0, 1),
    ]
    bump_counter(catalog, "store_failures")
    bump_counter(catalog, "corrupt_files", 2)
    assert counters(catalog) == {"misses": 2, "store_failures": 1, "corrupt_files": 2}


def _flusher(catalog: Catalog, worker: int, rounds: int, barrier) -> None:
    """Even rounds: hits on every key (in another order per worker) and a miss; odd rounds:
    only calls of symbols never seen before, which touch no shared row but the ordinals."""
    keys = [_key(i) for i in range(12)]
    barrier.wait()
    for round_ in range(rounds):
        if round_ % 2 == 0:
            order = keys[worker:] + keys[:worker]
            catalog.flush_counts(hits={key: (1, _now()) for key in order}, misses=1)
        else:
            symbol = f"S{worker}-{round_}"
            catalog.flush_counts(calls={keys[worker]: ("bars", symbol, 1, 0)})
    catalog.close()


@pytest.mark.slow  # processes: the slow step (and the shared one) runs it
def test_concurrent_flushes_from_processes_add_up_without_deadlock(any_catalog):
    catalog = any_catalog
    for i in range(12):
        catalog.publish(_row(_key(i)))
    workers, rounds = 4, 30
    barrier = SPAWN.Barrier(workers)
    processes = [
        SPAWN.Process(target=_flusher, args=(catalog, w, rounds, barrier)) for w in range(workers)
    ]
    for process in processes:
        process.start()
    assert join_all(processes, JOIN_TIMEOUT) == [0] * workers
    even_rounds = (rounds + 1) // 2
    hits = {e.key: e.hit_count for e in _list(catalog)}
    assert hits == {_key(i): workers * even_rounds for i in range(12)}
    assert counters(catalog)["misses"] == workers * even_rounds
    # Every new symbol got an ordinal of its own, though they came from 4 hosts at once.
    symbols = catalog.read("entries.sql", "stats_by_symbol", {"limit": 1_000})
    expected = {f"S{w}-{r}" for w in range(workers) for r in range(1, rounds, 2)}
    assert {symbol for symbol, *_ in symbols} == expected


def test_delete_spares_rows_accessed_since_the_plan(any_catalog):
    catalog = any_catalog
    for i in range(3):
        catalog.publish(
            _row(_key(i)),
            input_method="footer",
            input_files=[InputFile(f"/in{i}", 1, 1, 1, 1, "d")],
        )
    snapshot = {key: when for key, _, when, _ in entries_snapshot(catalog)}
    catalog.flush_counts(hits={_key(1): (1, _now() + timedelta(seconds=1))})  # read since
    deleted = catalog.delete_entries(list(snapshot), list(snapshot.values()))
    assert sorted(deleted) == [(_key(0), "bars"), (_key(2), "bars")]
    assert [e.key for e in _list(catalog)] == [_key(1)]
    assert entry_inputs(catalog, [_key(0)])[_key(0)] == []  # inputs follow their entry
    assert catalog.delete_entries([_key(1)]) == [(_key(1), "bars")]  # unconditional
    assert catalog.delete_entries([]) == []


def test_an_entry_goes_with_its_object_or_not_at_all(any_catalog):
    catalog = any_catalog
    for i in range(4):
        catalog.publish(_row(_key(i)))
    asked: list[list[str]] = []

    def delete_all_but_key_1(keys: list[str]) -> list[str]:
        asked.append(keys)
        return [key for key in keys if key != _key(1)]  # key 1's object could not be deleted

    dropped = catalog.drop_entries([_key(0), _key(1), _key(9)], delete_all_but_key_1)
    assert dropped == [_key(0)] and asked == [[_key(0), _key(1)]]  # key 9 has no row
    assert _entry(catalog, _key(0)) is None
    assert _entry(catalog, _key(1)) is not None  # its object stays: still listed (and served)

    def refuse(keys: list[str]) -> list[str]:
        raise OSError("the object store is gone")

    with pytest.raises(OSError, match="gone"):
        catalog.drop_entries([_key(1)], refuse)
    assert _entry(catalog, _key(1)) is not None  # rolled back
    planned = _entry(catalog, _key(2)).last_accessed_at
    catalog.flush_counts(hits={_key(2): (1, _now() + timedelta(seconds=1))})  # read since
    asked.clear()
    dropped = catalog.drop_entries([_key(2), _key(3)], delete_all_but_key_1, [planned, None])
    assert dropped == [_key(3)] and asked == [[_key(3)]]  # key 2 spared, its object untouched
    assert catalog.drop_entries([], refuse) == []


def test_a_transaction_commits_whole_or_not_at_all(any_catalog):
    catalog = any_catalog
    catalog.migrate()
    with catalog.transaction(lock="view_names") as run:
        run("entries.sql", "bump_counter", {"name": "probe", "delta": 2})
        run("entries.sql", "bump_counter", {"name": "probe", "delta": 3})
    with pytest.raises(RuntimeError), catalog.transaction() as run:
        run("entries.sql", "bump_counter", {"name": "probe", "delta": 100})
        raise RuntimeError("the caller failed midway")
    assert counters(catalog)["probe"] == 5
    catalog.write("entries.sql", "bump_counter", {"name": "probe", "delta": 1})
    assert counters(catalog)["probe"] == 6


def test_a_snapshot_holds_every_table_the_sql_layer_reads(any_catalog):
    catalog = any_catalog
    catalog.publish(_row(_key(1)))
    changes = catalog.changes_since(None)
    tables = {**changes.replaced, **changes.changed}
    assert {"entries", "counters", "gc_runs"} <= set(tables)
    assert tables["entries"].column("key").to_pylist() == [_key(1)]
    assert "gc_runs" not in catalog.changes_since(None, exclude=frozenset({"gc_runs"})).replaced
    assert catalog.migrate() == catalog.migrate()  # idempotent


# -- key locks ------------------------------------------------------------------------------------


def _locker(catalog: Catalog, marks: str, worker: int, rounds: int, barrier, out) -> None:
    """Take overlapping keys; while holding one, own its mark file (O_EXCL: a second holder
    at the same time finds the file there)."""
    overlaps = 0
    barrier.wait()
    for round_ in range(rounds):
        key = _key((worker + round_) % 3)  # 8 workers over 3 keys
        with catalog.key_lock(key, timeout=60):
            mark = Path(marks) / key
            try:
                fd = os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                overlaps += 1
            else:
                os.close(fd)
                time.sleep(0.002)
                mark.unlink()
    catalog.close()
    out.put((worker, overlaps))


@pytest.mark.slow  # processes: the slow step (and the shared one) runs it
def test_one_holder_per_key_across_eight_processes(any_catalog, tmp_path):
    catalog = any_catalog
    workers, rounds = 8, 15
    marks = tmp_path / "marks"
    marks.mkdir()
    barrier, out = SPAWN.Barrier(workers), SPAWN.Queue()
    processes = [
        SPAWN.Process(target=_locker, args=(catalog, str(marks), w, rounds, barrier, out))
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    overlaps = dict(out.get(timeout=JOIN_TIMEOUT) for _ in processes)
    assert join_all(processes, JOIN_TIMEOUT) == [0] * workers
    assert overlaps == dict.fromkeys(range(workers), 0)
    assert list(marks.iterdir()) == []


def test_threads_sharing_one_catalog_also_exclude_each_other(any_catalog):
    """A session's advisory locks stack in PostgreSQL; the catalog must queue its threads."""
    catalog = any_catalog
    holders, overlaps = [0], [0]
    guard = threading.Lock()

    def work():
        for _ in range(20):
            with catalog.key_lock(_key(5), timeout=30):
                with guard:
                    holders[0] += 1
                    overlaps[0] += holders[0] > 1
                time.sleep(0.001)
                with guard:
                    holders[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [0]
