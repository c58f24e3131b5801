"""One cache shared by several "hosts": processes with separate temp dirs and working folders
and no shared filesystem, meeting only in an S3 bucket (SeaweedFS) and a PostgreSQL catalog.

Real services, real processes (spawned ``python shared_worker.py``), real SIGKILLs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import shared_backend
from shared_worker import expected, moving_average, ticks

from jules_cache import CacheWriteWarning, FeatureStore, StoreError
from jules_cache.errors import QueryError, ServiceUnavailable

pytestmark = pytest.mark.shared
WORKER = Path(__file__).with_name("shared_worker.py")


def _spec(tmp_path: Path, name: str, s3_url: str, services, pg_schema: str, **extra) -> Path:
    """A host's own folder (its cwd and TMPDIR) and the job file it runs."""
    host = tmp_path / name
    (host / "tmp").mkdir(parents=True)
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    spec = {
        "root": s3_url,
        "catalog": services.pg_dsn,
        "schema": pg_schema,
        "markers": str(markers),
        "out": str(host / "out.json"),
        **extra,
    }
    path = host / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def _start(spec: Path) -> subprocess.Popen[bytes]:
    host = spec.parent
    env = {**os.environ, "TMPDIR": str(host / "tmp"), "HOME": str(host)}
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(spec)],
        cwd=host,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _finish(process: subprocess.Popen[bytes], spec: Path, timeout: float = 240) -> dict:
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err.decode()[-3000:]
    return json.loads((spec.parent / "out.json").read_text())


def _computes(tmp_path: Path) -> list[str]:
    return [p.read_text() for p in (tmp_path / "markers").iterdir()]


def _store(s3_url: str, services, pg_schema: str, **options) -> FeatureStore:
    return FeatureStore(s3_url, catalog=services.pg_dsn, catalog_schema=pg_schema, **options)


def test_a_result_computed_on_one_host_is_a_hit_on_another(tmp_path, services, s3_url, pg_schema):
    jobs = [["AAPL", 1], ["MSFT", 2]]
    first = _spec(tmp_path, "host-a", s3_url, services, pg_schema, jobs=jobs)
    second = _spec(tmp_path, "host-b", s3_url, services, pg_schema, jobs=jobs)
    a = _finish(_start(first), first)
    b = _finish(_start(second), second)
    assert [r["hit"] for r in a["results"]] == [False, False]
    assert [r["hit"] for r in b["results"]] == [True, True]
    assert a["wrong"] == b["wrong"] == 0
    assert sorted(_computes(tmp_path)) == ["AAPL:1", "MSFT:2"]
    # nothing of the cache is on either host's disk
    assert not any(p.suffix == ".parquet" for p in tmp_path.rglob("*"))
    with _store(s3_url, services, pg_schema) as store:
        entries = store.entries()
        assert sorted(e.symbol for e in entries) == ["AAPL", "MSFT"]
        assert store.stats().hits == 2


def test_eight_processes_on_overlapping_keys_compute_each_key_once(
    tmp_path, services, s3_url, pg_schema
):
    specs = []
    for n in range(8):  # each host wants 6 of 10 keys, in its own order
        jobs = [[f"S{(n + i) % 10}", (n + i) % 10] for i in range(6)]
        jobs = jobs[n % 3 :] + jobs[: n % 3]
        specs.append(_spec(tmp_path, f"host-{n}", s3_url, services, pg_schema, jobs=jobs,
                           sleep=0.2))  # fmt: skip
    processes = [_start(spec) for spec in specs]
    outputs = [_finish(process, spec) for process, spec in zip(processes, specs, strict=True)]
    assert sum(out["wrong"] for out in outputs) == 0
    computes = _computes(tmp_path)
    assert sorted(computes) == sorted(set(computes)), "a key was computed twice"
    assert len(computes) == 10
    with _store(s3_url, services, pg_schema) as store:
        assert len(store.entries()) == 10
        assert store.check().consistent


def test_a_killed_holder_is_taken_over_and_the_key_computed_once(
    tmp_path, services, s3_url, pg_schema
):
    started = tmp_path / "started"
    jobs = [["KILL", 7]]
    slow = _spec(tmp_path, "host-slow", s3_url, services, pg_schema, jobs=jobs, sleep=60,
                 started=str(started))  # fmt: skip
    victim = _start(slow)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert victim.poll() is None, victim.stderr.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the first host never started computing"
        time.sleep(0.05)
    other = _spec(tmp_path, "host-other", s3_url, services, pg_schema, jobs=jobs)
    taking_over = _start(other)
    time.sleep(0.5)  # it is waiting on the advisory lock now
    killed_at = time.monotonic()
    victim.send_signal(signal.SIGKILL)
    victim.communicate()  # reaps it and closes its pipes
    out = _finish(taking_over, other)
    assert time.monotonic() - killed_at < 10
    assert out["results"][0]["hit"] is False and out["wrong"] == 0
    assert _computes(tmp_path) == ["KILL:7", "KILL:7"]  # the killed start, then the one compute
    with _store(s3_url, services, pg_schema) as store:
        assert len(store.entries()) == 1
        assert store.check().consistent


def test_gc_racing_republish_never_leaves_a_row_without_its_object(
    tmp_path, services, s3_url, pg_schema
):
    """3 writers republish the same 6 keys while GC (retention 0, grace 0) deletes them."""
    from jules_cache.engine.shared import object_name

    jobs = [[f"G{i}", i] for i in range(6)] * 4
    specs = [_spec(tmp_path, f"host-{n}", s3_url, services, pg_schema, jobs=jobs) for n in range(3)]
    writers = [_start(spec) for spec in specs]
    violations, gc_runs = [], 0
    with _store(s3_url, services, pg_schema) as gc_store:
        backend = shared_backend(gc_store)
        while any(w.poll() is None for w in writers):
            gc_store.gc(retention_weeks=0, grace=0)
            gc_runs += 1
            for entry in gc_store.entries():
                name = object_name(entry.key)
                missing = backend.objects.head(name) is None
                still_a_row = missing and gc_store.entry(entry.key) is not None
                # checked again: not just republished between the two looks
                if still_a_row and backend.objects.head(name) is None:
                    violations.append(entry.key)
        outputs = [_finish(w, spec) for w, spec in zip(writers, specs, strict=True)]
        assert sum(out["wrong"] for out in outputs) == 0
        assert gc_runs >= 1
        assert violations == []
        for entry in gc_store.entries():
            assert backend.objects.head(object_name(entry.key)) is not None
        assert gc_store.check().consistent


def test_gc_dry_run_and_grace_spare_young_orphans(services, s3_url, pg_schema):
    from jules_cache.engine.shared import object_name

    with _store(s3_url, services, pg_schema) as store:
        kept = store.fetch("A", ticks(1), {"window": 5}, moving_average, version="1")
        orphan = store.fetch("B", ticks(2), {"window": 5}, moving_average, version="1")
        shared_backend(store).catalog.delete_entries(
            [orphan.key]
        )  # as if its COMMIT never happened
        dry = store.gc(dry_run=True, grace=0)
        assert dry.total("orphan").count == 1
        assert shared_backend(store).objects.head(object_name(orphan.key)) is not None
        young = store.gc(grace=3600)
        assert young.total("orphan").count == 0  # maybe a publish between PUT and COMMIT
        done = store.gc(grace=0)
        assert done.total("orphan").count == 1
        assert shared_backend(store).objects.head(object_name(orphan.key)) is None
        assert store.entry(kept.key) is not None
        assert store.fetch("A", ticks(1), {"window": 5}, moving_average, version="1").hit


def test_gc_reads_rows_again_for_orphans_published_while_it_listed(
    services, s3_url, pg_schema, monkeypatch
):
    """GC reads the rows while it lists the objects: an object whose row is committed after
    that read is still no orphan."""
    psycopg = pytest.importorskip("psycopg")
    from jules_cache.engine.shared import object_name

    with (
        _store(s3_url, services, pg_schema) as store,
        psycopg.connect(services.pg_dsn, autocommit=True) as other_host,
    ):
        late = store.fetch("B", ticks(2), {"window": 5}, moving_average, version="1")
        other_host.execute(f"SET search_path = {pg_schema}")
        other_host.execute("CREATE TABLE kept AS SELECT * FROM entries WHERE key = %s", [late.key])
        backend = shared_backend(store)
        backend.catalog.delete_entries([late.key])  # an orphan for now
        catalog = backend.catalog
        read = catalog.read

        def snapshot_then_publish(filename, name, params=None):
            rows = read(filename, name, params)
            if name == "entries_snapshot":
                assert late.key not in {row[0] for row in rows}
                other_host.execute("INSERT INTO entries SELECT * FROM kept")  # its COMMIT, late
            return rows

        monkeypatch.setattr(catalog, "read", snapshot_then_publish)
        assert store.gc(dry_run=True, grace=0).total("orphan").count == 0
        other_host.execute("DELETE FROM entries WHERE key = %s", [late.key])
        assert store.gc(grace=0).total("orphan").count == 0
        assert backend.objects.head(object_name(late.key)) is not None
        assert store.entry(late.key) is not None
        monkeypatch.undo()
        assert store.check().consistent


def test_check_finds_and_fixes_a_row_whose_object_is_gone(services, s3_url, pg_schema):
    from jules_cache.engine.shared import object_name

    with _store(s3_url, services, pg_schema) as store:
        got = store.fetch("A", ticks(1), {"window": 5}, moving_average, version="1")
        shared_backend(store).objects.delete([object_name(got.key)])
        report = store.check()
        assert report.counts["missing_file"] == 1 and not report.consistent
        assert store.check(fix=True).consistent
        assert store.entries() == []
        again = store.fetch("A", ticks(1), {"window": 5}, moving_average, version="1")
        assert not again.hit and again.value.equals(expected(1))


def test_a_copied_object_of_another_key_is_never_served(services, s3_url, pg_schema):
    from jules_cache.engine.shared import object_name

    with _store(s3_url, services, pg_schema) as store:
        a = store.fetch("A", ticks(1), {"window": 5}, moving_average, version="1")
        b = store.fetch("B", ticks(2), {"window": 5}, moving_average, version="1")
        objects = shared_backend(store).objects
        data = objects.get(object_name(a.key))
        objects.delete([object_name(b.key)])
        assert objects.put_if_absent(object_name(b.key), data)
        again = store.fetch("B", ticks(2), {"window": 5}, moving_average, version="1")
        assert not again.hit
        assert again.value.equals(expected(2))


def test_sql_over_the_shared_cache_prunes_by_symbol(services, s3_url, pg_schema):
    with _store(s3_url, services, pg_schema) as store:
        for n, symbol in enumerate(["A", "B", "C"]):
            store.fetch(symbol, ticks(n), {"window": 5}, moving_average, version="1")
        store.refresh_views()
        view = next(iter(store.refresh_views().values()))
        counts = store.sql(f"SELECT symbol, count(*) AS n FROM {view} GROUP BY 1 ORDER BY 1")
        assert counts.to_dicts() == [{"symbol": s, "n": 2000} for s in ["A", "B", "C"]]
        one = store.sql(f"SELECT avg(ma) AS m FROM {view} WHERE symbol = 'B'")
        assert one["m"][0] == pytest.approx(expected(1)["ma"].mean())
        assert store.sql("SELECT count(*) AS n FROM entries")["n"][0] == 3


def test_sql_on_a_shared_root_never_mixes_configs_either(services, s3_url, pg_schema):
    """The view-per-config mechanism of a local root (tests/sql/test_sql_answers.py) on S3."""
    with _store(s3_url, services, pg_schema) as store:
        for window in (5, 10):
            store.fetch("A", ticks(0), {"window": window}, moving_average, version="1")
        view = next(iter(store.refresh_views().values()))
        with pytest.raises(QueryError, match="2 configs"):
            store.sql(f"SELECT count(*) FROM {view}")
        listed = store.sql(
            f"SELECT config_view, config_json FROM feature_configs WHERE view_name = '{view}'"
        )
        assert listed.height == 2
        for config_view, config_json in listed.iter_rows():
            frame = store.sql(
                f"SELECT count(*) AS n, any_value(config_json) AS c FROM {config_view}"
            )
            assert frame.row(0) == (2000, config_json)
        assert store.sql(f"SELECT count(*) AS n FROM {view}__all")["n"][0] == 4000


def test_sql_sees_every_change_since_the_previous_query(services, s3_url, pg_schema):
    """store.sql keeps its copy of the catalog between queries (and skips unchanged tables):
    a publish, a hit count and a removal, here or by another host, must all show."""
    count = "SELECT count(*) AS n, sum(hit_count) AS hits FROM entries"
    with (
        _store(s3_url, services, pg_schema) as store,
        _store(s3_url, services, pg_schema) as other_host,
    ):
        store.fetch("A", ticks(0), {"window": 5}, moving_average, version="1")
        view = next(iter(store.refresh_views().values()))
        assert store.sql(count).row(0) == (1, 0)
        other_host.fetch("B", ticks(1), {"window": 5}, moving_average, version="1")
        assert store.sql(count).row(0) == (2, 0)
        symbols = f"SELECT DISTINCT symbol FROM {view} ORDER BY 1"
        assert store.sql(symbols)["symbol"].to_list() == ["A", "B"]
        assert other_host.fetch("A", ticks(0), {"window": 5}, moving_average, version="1").hit
        other_host.flush()
        assert store.sql(count).row(0) == (2, 1)
        other_host.remove(symbol="A")
        assert store.sql(count).row(0) == (1, 0)
        assert store.sql(symbols)["symbol"].to_list() == ["B"]


def test_remove_deletes_rows_then_objects(services, s3_url, pg_schema):
    from jules_cache.engine.shared import object_name

    with _store(s3_url, services, pg_schema) as store:
        got = store.fetch("A", ticks(1), {"window": 5}, moving_average, version="1")
        removed = store.remove(symbol="A")
        assert [e.key for e in removed] == [got.key]
        assert shared_backend(store).objects.head(object_name(got.key)) is None
        assert store.entries() == []


def test_an_unreachable_catalog_is_named(s3_url):
    with pytest.raises(ServiceUnavailable, match=r"PostgreSQL at 127\.0\.0\.1:9"):
        FeatureStore(s3_url, catalog="postgresql://nobody@127.0.0.1:9/none")


def test_an_unreachable_object_store_still_returns_the_value(
    services, s3_url, pg_schema, monkeypatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    store = _store(s3_url, services, pg_schema)
    with pytest.warns(CacheWriteWarning, match="S3"):
        got = store.fetch("A", ticks(1), {"window": 5}, moving_average, version="1")
    assert not got.stored and got.value.equals(expected(1))
    strict = _store(s3_url, services, pg_schema, strict=True)
    with pytest.raises(StoreError, match="S3"):
        strict.fetch("A", ticks(1), {"window": 5}, moving_average, version="1")


def test_the_cli_works_on_a_shared_root(services, s3_url, pg_schema, monkeypatch):
    with _store(s3_url, services, pg_schema) as store:
        store.fetch("A", ticks(1), {"window": 5}, moving_average, version="1")
    monkeypatch.setenv("JULES_CACHE_CATALOG", services.pg_dsn)
    monkeypatch.setenv("JULES_CACHE_CATALOG_SCHEMA", pg_schema)
    cli = Path(sys.executable).with_name("jules-cache")
    base = [str(cli), "--root", s3_url]
    listed = subprocess.run([*base, "ls", "--json"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "moving_average" in listed.stdout or '"A"' in listed.stdout
    gc = subprocess.run([*base, "gc", "--dry-run"], capture_output=True, text=True, timeout=60)
    assert gc.returncode == 0, gc.stderr
    check = subprocess.run([*base, "check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr


def test_hits_need_no_catalog_round_trip(services, s3_url, pg_schema):
    with _store(s3_url, services, pg_schema, hit_flush_seconds=3600) as store:
        store.fetch("A", ticks(1), {"window": 5}, moving_average, version="1")
        shared_backend(store).catalog.close()
        calls = []
        original = shared_backend(store).catalog._connected

        def counting():
            calls.append(1)
            return original()

        shared_backend(store).catalog._connected = counting  # type: ignore[method-assign]
        for _ in range(5):
            assert store.fetch("A", ticks(1), {"window": 5}, moving_average, version="1").hit
        assert calls == []


def test_ignore_contains_and_clear_on_a_shared_root(services, s3_url, pg_schema):
    """The joblib habits go through the shared backend's own exists and remove."""
    data = ticks(1)
    with _store(s3_url, services, pg_schema) as store:
        bars = store.feature(name="avg", ignore=["verbose"])(moving_average)
        assert not bars.contains("AAPL", data, {"window": 3, "verbose": True})
        first = bars.fetch("AAPL", data, {"window": 3, "verbose": True})
        assert bars.contains("AAPL", data, {"window": 3})
        assert bars.fetch("AAPL", data, {"window": 3, "verbose": False}).hit
        bars("MSFT", data, {"window": 3})
        assert store.entry(first.key).config == {"window": 3}
        assert sorted(e.symbol for e in bars.clear()) == ["AAPL", "MSFT"]
        assert store.entries() == []
        assert not bars.contains("AAPL", data, {"window": 3})
        assert not bars.fetch("AAPL", data, {"window": 3}).hit


def test_expire_on_a_shared_root_replaces_the_object_and_gc_deletes_it(services, s3_url, pg_schema):
    """An expired object is a miss whose publish replaces it (conditional PUT refused: it is
    deleted and PUT again under the key's lock) and upserts its row; GC deletes the expired."""
    data = ticks(1)
    with _store(s3_url, services, pg_schema) as store:
        first = store.fetch("AAPL", data, {"window": 3}, moving_average, expire=2)
        expires = store.entry(first.key).expires_at
        assert expires is not None
        gone = store.fetch("MSFT", data, {"window": 3}, moving_average, expire=2)
        time.sleep(2.1)
        assert not store.contains("AAPL", data, {"window": 3}, moving_average)
        again = store.fetch("AAPL", data, {"window": 3}, moving_average, expire=3600)
        assert not again.hit and again.value.equals(first.value)
        assert store.entry(first.key).expires_at > expires
        assert store.fetch("AAPL", data, {"window": 3}, moving_average).hit
        report = store.gc()
        assert [item.key for item in report.items if item.reason == "expired"] == [gone.key]
        assert [e.key for e in store.entries()] == [first.key]
