"""Attacks on the manifest: lost, half-written, held open by a plain DuckDB session, not
writable; and a view that cannot be built.

Every test runs real processes on real files: external DuckDB sessions are ``python -c``
children that never import jules_cache, crashes are real SIGKILLs (``JULES_CACHE_CRASH_AT``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from features import bar_count

from jules_cache import FeatureStore
from jules_cache.errors import CacheWriteWarning, ManifestBusy, ManifestError

pytestmark = pytest.mark.attack

TESTS = Path(__file__).resolve().parents[1]
SYMBOLS = ("AAPL", "MSFT", "NVDA")


def fill(root, ticks, symbols=SYMBOLS) -> dict[str, object]:
    """Cache one result per symbol; return {key: frame}."""
    from jules_cache.synthetic import ticks_for

    with FeatureStore(root) as store:
        results = [
            store.fetch(s, ticks_for(ticks, s), {"freq": "5m"}, bar_count, name="bars")
            for s in symbols
        ]
    return {r.key: r.value for r in results}


def assert_every_result_hits(root, ticks, cached, symbols=SYMBOLS) -> None:
    """A fresh store serves every cached result as a hit, and stats count the hits."""
    from jules_cache.synthetic import ticks_for

    with FeatureStore(root) as store:
        for symbol in symbols:
            result = store.fetch(
                symbol, ticks_for(ticks, symbol), {"freq": "5m"}, bar_count, name="bars"
            )
            assert result.hit and result.value.equals(cached[result.key])
        stats = store.stats()
        assert stats.entries == len(symbols) and stats.hits == len(symbols)
        assert store.check().consistent


class Session:
    """A plain DuckDB session in another process (no jules_cache), holding ``path`` open."""

    SCRIPT = textwrap.dedent(
        """
        import json, sys, duckdb
        con = duckdb.connect(sys.argv[1], read_only=True)
        assert "jules_cache" not in sys.modules
        print("open", flush=True)
        for line in sys.stdin:
            rows = con.execute(line).fetchall()
            print(json.dumps(rows, default=str), flush=True)
        """
    )

    def __init__(self, path: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        line = self.process.stdout.readline()
        assert line.strip() == "open", self.process.stderr.read()

    @property
    def pid(self) -> int:
        return self.process.pid

    def query(self, sql: str) -> list:
        self.process.stdin.write(sql.replace("\n", " ") + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, self.process.stderr.read()
        return json.loads(line)

    def close(self) -> None:
        self.process.communicate(timeout=30)


# -- a plain DuckDB reader -------------------------------------------------------------


@pytest.mark.slow
def test_a_session_held_on_the_catalog_blocks_no_publish_hit_gc_or_check(root, ticks):
    """Open catalog.duckdb for hours: everything keeps working, the session keeps a consistent
    snapshot, and a new session sees the new state."""
    from jules_cache.synthetic import ticks_for

    fill(root, ticks, SYMBOLS[:2])
    session = Session(root / "catalog.duckdb")
    try:
        query = "SELECT count(DISTINCT symbol), count(*) FROM bars"
        before = session.query(query)
        assert before[0][0] == 2
        with FeatureStore(root, lock_timeout=5, hit_flush_seconds=0) as store:
            data = ticks_for(ticks, "NVDA")
            assert not store.fetch("NVDA", data, {"freq": "5m"}, bar_count, name="bars").hit
            assert store.fetch("NVDA", data, {"freq": "5m"}, bar_count, name="bars").hit
            assert store.stats().entries == 3
            assert store.check(fix=True).consistent
            store.refresh_views()
            assert store.gc(retention_weeks=1, grace=0).ok
            store.remove(symbol="AAPL")
            store.flush()
        assert session.query("SELECT count(*) FROM entries") == [[2]]  # its snapshot
        fresh = Session(root / "catalog.duckdb")
        try:
            assert fresh.query(query) == [[2, fresh.query("SELECT sum(rows) FROM entries")[0][0]]]
            assert fresh.query("SELECT count(*) FROM entries") == [[2]]
            assert [r[0] for r in fresh.query("SELECT view_name FROM feature_views")] == ["bars"]
        finally:
            fresh.close()
    finally:
        session.close()


@pytest.mark.slow
def test_even_a_read_write_session_on_the_catalog_blocks_nothing(root, ticks):
    """A client that forgets read_only=True (and writes) still cannot stop the cache."""
    from jules_cache.synthetic import ticks_for

    fill(root, ticks, SYMBOLS[:1])
    script = (
        "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
        "c.execute('CREATE TABLE mine AS SELECT 1 AS x'); print('open', flush=True); "
        "sys.stdin.readline()"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", script, str(root / "catalog.duckdb")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "open"
        with FeatureStore(root, lock_timeout=5) as store:
            data = ticks_for(ticks, "MSFT")
            assert not store.fetch("MSFT", data, {"freq": "5m"}, bar_count, name="bars").hit
            store.refresh_views()
    finally:
        writer.communicate("\n", timeout=30)
    session = Session(root / "catalog.duckdb")
    try:
        assert session.query("SELECT count(DISTINCT symbol) FROM bars") == [[2]]
    finally:
        session.close()


@pytest.mark.slow
def test_a_session_held_on_the_manifest_is_reported_busy_naming_it(root, ticks):
    cached = fill(root, ticks, SYMBOLS[:1])
    session = Session(root / "manifest.duckdb")
    try:
        with pytest.raises(ManifestBusy) as info:
            FeatureStore(root, lock_timeout=0.3)
        message = str(info.value)
        assert f"pid {session.pid}" in message and info.value.holder_pid == session.pid
        assert "catalog.duckdb" in message and "busy" in message
        assert "check --rebuild" not in message and "nothing is damaged" in message
    finally:
        session.close()
    assert_every_result_hits(root, ticks, cached, SYMBOLS[:1])


@pytest.mark.slow
def test_a_busy_manifest_is_waited_for_up_to_the_lock_timeout(root, ticks):
    fill(root, ticks, SYMBOLS[:1])
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
            "print('open', flush=True); time.sleep(1.0)",
            str(root / "manifest.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "open"
    with FeatureStore(root, lock_timeout=30) as store:  # waits ~1 s, then works
        assert store.stats().entries == 1
    holder.communicate(timeout=30)


# -- not writable ----------------------------------------------------------------------


def test_an_immutable_manifest_is_reported_not_writable_not_damaged(root, ticks):
    fill(root, ticks, SYMBOLS[:1])
    manifest = root / "manifest.duckdb"
    if subprocess.run(["chattr", "+i", str(manifest)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(ManifestError) as info:
            FeatureStore(root)
        message = str(info.value)
        assert "not writable" in message and "check --rebuild" not in message
        assert not isinstance(info.value, ManifestBusy)
    finally:
        subprocess.run(["chattr", "-i", str(manifest)], check=True)


def test_a_damaged_manifest_opens_serving_hits_and_its_one_rebuild_is_check(root, ticks):
    """A damaged manifest: the store opens with a warning naming the fix, serves hits, stores
    nothing and says why; ``check(rebuild=True)`` on that very store (what the CLI's
    ``check --rebuild`` runs) repairs it. There is no other way to rebuild."""
    from jules_cache.synthetic import ticks_for

    cached = fill(root, ticks)
    manifest = root / "manifest.duckdb"
    manifest.write_bytes(os.urandom(manifest.stat().st_size))
    fix = r"damaged.*check --rebuild.*check\(rebuild=True\)"
    with pytest.warns(CacheWriteWarning, match=fix):
        store = FeatureStore(root)
    aapl = ticks_for(ticks, "AAPL")
    assert store.fetch("AAPL", aapl, {"freq": "5m"}, bar_count, name="bars").hit
    with pytest.raises(ManifestError, match=fix):
        store.entries()
    with pytest.warns(CacheWriteWarning, match="could not store"):
        unstored = store.fetch("AAPL", aapl, {"freq": "1h"}, bar_count, name="bars")
    assert not unstored.stored
    report = store.check(rebuild=True)
    assert report.consistent and report.rebuilt_from is not None
    assert store.stats().hits == 1  # the hit served while damaged is kept
    store.close()
    with pytest.raises(TypeError):
        FeatureStore(root, rebuild=True)  # type: ignore[call-arg]
    with FeatureStore(root) as again:
        for symbol in SYMBOLS:
            got = again.fetch(
                symbol, ticks_for(ticks, symbol), {"freq": "5m"}, bar_count, name="bars"
            )
            assert got.hit and got.value.equals(cached[got.key])


# -- hits without a manifest -----------------------------------------------------------


@pytest.mark.slow  # waits out the flush interval twice
@pytest.mark.leaves_damage  # the manifest is deleted under the store on purpose
def test_hits_keep_serving_when_the_manifest_is_deleted_and_counts_survive(root, ticks):
    from jules_cache.synthetic import ticks_for

    cached = fill(root, ticks)
    store = FeatureStore(root, hit_flush_seconds=0)
    (root / "manifest.duckdb").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(20):
            for symbol in SYMBOLS:
                data = ticks_for(ticks, symbol)
                result = store.fetch(symbol, data, {"freq": "5m"}, bar_count, name="bars")
                assert result.hit and result.value.equals(cached[result.key])
    failures = [w for w in caught if issubclass(w.category, CacheWriteWarning)]
    assert len(failures) == 1 and "could not record hits" in str(failures[0].message)
    assert [w for w in caught if w not in failures] == []
    FeatureStore(root).close()  # another process repairs the root (rebuilds the manifest)
    store.flush()  # the counts kept in memory land in the rebuilt manifest
    assert store.stats().hits == 60
    with warnings.catch_warnings(record=True) as again:  # a new episode warns once again
        warnings.simplefilter("always")
        (root / "manifest.duckdb").unlink()
        data = ticks_for(ticks, "AAPL")
        for _ in range(3):
            assert store.fetch("AAPL", data, {"freq": "5m"}, bar_count, name="bars").hit
    assert len([w for w in again if issubclass(w.category, CacheWriteWarning)]) == 1
    store.check(rebuild=True)
    store.close()


@pytest.mark.slow
def test_hits_keep_serving_while_a_session_holds_the_manifest(root, ticks):
    from jules_cache.synthetic import ticks_for

    cached = fill(root, ticks, SYMBOLS[:1])
    store = FeatureStore(root, hit_flush_seconds=0, lock_timeout=0.2)
    session = Session(root / "manifest.duckdb")
    try:
        data = ticks_for(ticks, "AAPL")
        with pytest.warns(CacheWriteWarning, match="busy") as caught:
            for _ in range(10):
                result = store.fetch("AAPL", data, {"freq": "5m"}, bar_count, name="bars")
                assert result.hit and result.value.equals(cached[result.key])
        assert len(caught) == 1
    finally:
        session.close()
    store.close()
    assert store.stats().hits == 10


# -- a half-created or half-rebuilt manifest -------------------------------------------

OPEN = """
import sys
sys.path.insert(0, {tests!r})
from jules_cache import FeatureStore
FeatureStore({root!r})
"""


def run_killed(args: list[str], stage: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JULES_CACHE_CRASH_AT": stage}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "stage"),
    [
        ("store-recovering", "rebuild-started"),
        ("store-recovering", "rebuild-registered"),
        # no ("store-recovering", "rebuild-moved-aside"): the manifest was deleted, nothing to move
        ("cli-rebuild", "rebuild-started"),
        ("cli-rebuild", "rebuild-registered"),
        ("cli-rebuild", "rebuild-moved-aside"),
    ],
)
def test_a_rebuild_killed_at_any_stage_leaves_a_root_the_next_store_opens(
    root, ticks, how, stage, jules_cache_command
):
    cached = fill(root, ticks)
    if how == "store-recovering":  # FeatureStore() rebuilding a deleted manifest
        (root / "manifest.duckdb").unlink()
        args = [sys.executable, "-c", OPEN.format(tests=str(TESTS), root=str(root))]
    else:
        args = [jules_cache_command, "--root", str(root), "check", "--rebuild"]
    done = run_killed(args, stage)
    assert done.returncode == -9, done.stderr
    assert_every_result_hits(root, ticks, cached)
    leftovers = {p.name for p in root.iterdir()} - {
        "objects",
        "tmp",
        "locks",
        "views",
        "manifest.duckdb",
        "manifest.lock",
        "catalog.duckdb",
        "catalog.lock",
    }
    assert all(name.startswith("manifest.duckdb.broken-") for name in leftovers), leftovers
    if how == "store-recovering":  # the recovery's own rebuild swept the killed one's temp
        assert not [p.name for p in (root / "tmp").iterdir() if p.name.startswith("manifest.")]


@pytest.mark.slow
def test_a_first_store_killed_while_creating_the_manifest_leaves_none(root):
    args = [sys.executable, "-c", OPEN.format(tests=str(TESTS), root=str(root))]
    done = run_killed(args, "manifest-creating")
    assert done.returncode == -9, done.stderr
    assert not (root / "manifest.duckdb").exists()  # never a partial one
    with FeatureStore(root) as store:
        assert store.stats().entries == 0


@pytest.mark.parametrize("size", [0, 4096])
def test_a_manifest_that_was_never_completely_written_is_rebuilt(root, ticks, size):
    cached = fill(root, ticks)
    (root / "manifest.duckdb").write_bytes(b"\0" * size)
    assert_every_result_hits(root, ticks, cached)
    (moved,) = root.glob("manifest.duckdb.broken-*")
    assert moved.stat().st_size == size  # kept for inspection, never deleted


@pytest.mark.slow
def test_a_full_disk_while_creating_the_manifest_leaves_no_empty_one(root):
    script = textwrap.dedent(
        f"""
        import resource, signal
        from jules_cache import FeatureStore
        from jules_cache.errors import JulesCacheError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            FeatureStore({str(root)!r})
        except (JulesCacheError, OSError) as exc:
            print("failed:", exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "failed:" in done.stdout, done.stdout + done.stderr
    assert not (root / "manifest.duckdb").exists()
    with FeatureStore(root) as store:  # the disk is free again
        assert store.stats().entries == 0 and (root / "manifest.duckdb").stat().st_size > 4096


# -- a view that cannot be built ------------------------------------------------------


def bars_v2(ticks, config):
    """bar_count with one more column: a new result schema for the same feature."""
    import polars as pl

    return bar_count(ticks, config).with_columns(pl.col("n").alias("n_v2"))


@pytest.mark.slow
@pytest.mark.leaves_damage  # a truncated result file, on purpose
def test_a_view_that_cannot_be_built_is_reported_once_per_feature_and_cause(root, aapl, caplog):
    """Item 13. The cause here is a damaged file: logged (as a quarantine is), never warned,
    and once; the old code emitted a CatalogWarning on each of these publishes (5 times)."""
    store = FeatureStore(root, catalog_refresh_seconds=0)
    first = store.fetch("AAPL", aapl, {"freq": "1h"}, bar_count, name="broken")
    data = first.path.read_bytes()
    first.path.write_bytes(data[: len(data) // 2])  # its link (same inode) now reads garbage
    with caplog.at_level(logging.WARNING, logger="jules_cache"):
        # A new schema makes the view read every footer; then publishes of other features.
        store.get_or_compute("MSFT", aapl, {"freq": "1h"}, bars_v2, name="broken")
        for i in range(4):
            store.get_or_compute("AAPL", aapl, {"freq": "1h"}, bar_count, name=f"other{i}")
        store.flush()
        other = FeatureStore(root, catalog_refresh_seconds=0)  # another process: no repeat
        other.get_or_compute("AAPL", aapl, {"freq": "1h"}, bar_count, name="other9")
        other.flush()
    reports = [r for r in caplog.records if "no SQL view for broken" in r.getMessage()]
    assert len(reports) == 1 and "damaged or unreadable" in reports[0].getMessage()
    session = Session(root / "catalog.duckdb")
    try:  # the other features' views are there
        assert session.query("SELECT count(*) FROM other9") == [[7]]
        assert session.query("SELECT count(*) FROM feature_views WHERE view_name = 'broken'") == [
            [0]
        ]
    finally:
        session.close()
