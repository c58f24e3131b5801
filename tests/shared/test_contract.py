"""One contract, every store pairing: each capability behaves the same on a local root (DuckDB
manifest, a directory), on a shared root (PostgreSQL catalog, S3 objects), on a directory
with a PostgreSQL catalog (a file system many hosts mount), and with the shared engine over a
DuckDB manifest catalog (``helpers.engine_over_manifest``: the engine needs nothing of
PostgreSQL).

The local cases run in the default suite; the PostgreSQL ones need the services (marker
``shared``, its own step of ``.ci/run``). A capability that differs between pairings is a bug
in the one that differs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from helpers import engine_over_manifest
from shared_worker import expected, moving_average, ticks, with_average

from jules_cache import FeatureStore, InvalidInput, QueryError
from jules_cache.storage.crash_points import CRASH_ENV

CONFIG = {"window": 5}
PAIRINGS = [
    "local",
    "engine+manifest",  # the shared engine over a DuckDB manifest catalog (helpers.py)
    pytest.param("shared", marks=pytest.mark.shared),
    pytest.param("directory+postgres", marks=pytest.mark.shared),
]
WORKER = Path(__file__).resolve().parent / "shared_worker.py"
# The stages of a publish, in order (jules_cache.storage.crash_points).
PUBLISH_STAGES = ["compute", "write", "fsynced", "renamed", "commit"]


class Pairing:
    """Opens stores of one cache root of the pairing under test (several may be open at once,
    as several processes would), and runs worker processes ("hosts") on the same root."""

    def __init__(self, root: str, settings: dict[str, Any], tmp_path: Path):
        self.root, self.settings, self.tmp_path = root, settings, tmp_path
        self.opened: list[FeatureStore] = []

    def __call__(self, **options: Any) -> FeatureStore:
        settings = {k: v for k, v in self.settings.items() if k != "manifest_rows"}
        store = FeatureStore(self.root, **settings, **options)
        self.opened.append(store)
        return store

    def start_worker(self, name: str, jobs: list, **spec: Any) -> tuple[subprocess.Popen, Path]:
        """A process computing ``jobs`` ([[symbol, seed]]) on this root (``shared_worker``)."""
        host = self.tmp_path / name
        (host / "tmp").mkdir(parents=True)
        (self.tmp_path / "markers").mkdir(exist_ok=True)
        path = host / "spec.json"
        settings = {
            "root": self.root,
            "catalog": self.settings.get("catalog"),
            "schema": self.settings.get("catalog_schema"),
            "manifest_rows": self.settings.get("manifest_rows"),
            "markers": str(self.tmp_path / "markers"),
            "out": str(host / "out.json"),
            "jobs": jobs,
        }
        path.write_text(json.dumps({**settings, **spec.pop("spec", {})}))
        env = {**os.environ, "TMPDIR": str(host / "tmp"), **spec.pop("env", {})}
        process = subprocess.Popen(
            [sys.executable, str(WORKER), str(path)],
            cwd=host,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return process, host

    def computes(self) -> list[str]:
        """What the workers computed, one line per compute."""
        return [p.read_text() for p in (self.tmp_path / "markers").iterdir()]


@pytest.fixture(params=PAIRINGS)
def make_store(request, tmp_path) -> Iterator[Pairing]:
    with contextlib.ExitStack() as wired:
        if request.param in ("local", "engine+manifest"):
            root, settings = str(tmp_path / "cache"), {}
            if request.param == "engine+manifest":
                settings["manifest_rows"] = str(tmp_path / "rows")
                wired.enter_context(engine_over_manifest(tmp_path / "rows"))
        else:
            services = request.getfixturevalue("services")
            shared = request.param == "shared"
            root = request.getfixturevalue("s3_url") if shared else str(tmp_path / "cache")
            schema = request.getfixturevalue("pg_schema")
            settings = {"catalog": services.pg_dsn, "catalog_schema": schema}
        pairing = Pairing(root, settings, tmp_path)
        yield pairing
        for store in pairing.opened:
            store.close()


def _fetch(store: FeatureStore, symbol: str, seed: int):
    return store.fetch(symbol, ticks(seed), CONFIG, with_average, version="1")


def _fetch_as_worker(store: FeatureStore, symbol: str, seed: int):
    """The call a worker makes (``shared_worker``): the same key."""
    return store.fetch(symbol, ticks(seed), CONFIG, moving_average, version="1")


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


def test_auto_gc_runs_once_per_interval_across_stores(make_store):
    """Each store (a process) runs its first auto GC step, unless any store ran one within
    the interval: the catalog's last run decides."""
    _fetch(make_store(auto_gc=3600), "A", 1)  # the first step: no run before it
    _fetch(make_store(auto_gc=3600), "B", 2)  # another store: skipped, one ran just now
    runs = make_store().sql("SELECT count(*) AS n FROM gc_runs")["n"][0]
    assert runs == 1


def test_a_compute_error_propagates_and_stores_nothing(make_store):
    store = make_store()

    def broken(frame: pl.LazyFrame, config: dict) -> pl.LazyFrame:
        raise ZeroDivisionError("bad feature")

    with pytest.raises(ZeroDivisionError):
        store.fetch("A", ticks(1), CONFIG, broken)
    assert store.entries() == []


def _run_worker(make_store: Pairing, name: str, seed: int, **spec) -> dict:
    """One worker computing ("A", seed) to the end; its JSON report."""
    process, host = make_store.start_worker(name, [["A", seed]], **spec)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 0, err.decode()[-3000:]
    report = json.loads((host / "out.json").read_text())
    assert report["wrong"] == 0
    return report


@pytest.mark.slow
def test_processes_racing_one_key_compute_it_once(make_store):
    make_store().close()  # the root (and its catalog) exist before the race
    workers = [
        make_store.start_worker(f"host{i}", [["A", 7]], spec={"sleep": 0.5}) for i in range(3)
    ]
    for process, host in workers:
        _, err = process.communicate(timeout=240)
        assert process.returncode == 0, err.decode()[-3000:]
        assert json.loads((host / "out.json").read_text())["wrong"] == 0
    assert make_store.computes() == ["A:7"]
    assert len(make_store().entries()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("stage", PUBLISH_STAGES)
def test_a_process_killed_at_any_publish_stage_leaves_a_cache_that_answers_right(make_store, stage):
    """SIGKILL at each stage of a publish: the next call returns the right value (the key is
    not left locked), and check(fix=True) leaves one consistent entry that later calls hit."""
    store = make_store()
    process, _ = make_store.start_worker("killed", [["A", 5]], env={CRASH_ENV: stage})
    _, err = process.communicate(timeout=240)
    assert process.returncode == -signal.SIGKILL, err.decode()[-3000:]
    _run_worker(make_store, "next", 5)
    store.check(fix=True, grace_seconds=0)
    assert len(store.entries()) == 1
    assert store.check(grace_seconds=0).consistent
    assert _run_worker(make_store, "later", 5)["results"][0]["hit"]
