"""GC: the plan by reason, the safety rules, gc_runs, the CLI, overview and the cron script."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from features import bar_count
from helpers import frame, local_backend

from jules_cache import FeatureStore, LockTimeout
from jules_cache.errors import GCError, InvalidInput
from jules_cache.maintenance.gc import parse_duration, parse_size
from jules_cache.storage.catalog import GC_LOCK
from jules_cache.storage.locks import file_lock
from jules_cache.storage.manifest import utc_now

TESTS = Path(__file__).resolve().parents[1]  # helpers.py, features.py


def _fill(store: FeatureStore, count: int, symbol: str = "AAPL") -> list[str]:
    """Publish ``count`` entries; return their keys."""
    keys = []
    for i in range(count):
        result = store.fetch(symbol, frame(i), {"freq": "1m", "i": i}, bar_count, name="bars")
        keys.append(result.key)
    return keys


def _age(store: FeatureStore, keys, *, accessed_days: float, created_days: float = 0) -> None:
    """Move entries' last access (and creation) into the past."""
    now = utc_now()
    with local_backend(store).manifest.write() as con:
        for key in keys:
            con.execute(
                "UPDATE entries SET last_accessed_at = ?, created_at = ? WHERE key = ?",
                [now - timedelta(days=accessed_days), now - timedelta(days=created_days), key],
            )


def _orphan(store: FeatureStore, key: str = "ab" * 16) -> Path:
    """A result file without a row, written an hour ago (a younger one may be a publish whose
    row is on its way: GC spares it)."""
    path = local_backend(store).layout.result_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame(0).write_parquet(path)
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))
    return path


def _live_files(store: FeatureStore) -> set[str]:
    return {
        e.key for e in store.entries() if local_backend(store).layout.result_path(e.key).exists()
    }


def _assert_no_dangling_rows(root: Path) -> None:
    store = FeatureStore(root)
    missing = [
        e.key
        for e in store.entries()
        if not local_backend(store).layout.result_path(e.key).exists()
    ]
    assert missing == [], f"rows pointing at nothing: {missing}"


def _gc_runs(store: FeatureStore) -> list[tuple]:
    with local_backend(store).manifest.read() as con:
        return con.execute(
            "SELECT id, dry_run, status, error, orphan_files, expired_entries FROM gc_runs "
            "ORDER BY id"
        ).fetchall()


# -- the plan, reason by reason ------------------------------------------------------------------


def test_each_reason_is_found_and_deleted(store):
    keys = _fill(store, 6)
    orphan = _orphan(store)
    orphan_bytes = orphan.stat().st_size
    _age(store, keys[:2], accessed_days=40)  # expired
    local_backend(store).layout.result_path(keys[2]).unlink()  # dangling row
    tmp_old = local_backend(store).layout.tmp / f"{'cd' * 16}.1.2.abc.parquet.tmp"
    tmp_new = local_backend(store).layout.tmp / f"{'ce' * 16}.1.2.abc.parquet.tmp"
    lock_old = local_backend(store).layout.locks / f"{'ef' * 16}.lock"
    for path in (tmp_old, tmp_new, lock_old):
        path.write_text("x")
    old = time.time() - 7 * 3600
    os.utime(tmp_old, (old, old))
    os.utime(lock_old, (old, old))

    report = store.gc()

    assert report.ok and report.dry_run is False
    counts = {t.reason: t.count for t in report.totals}
    assert counts == {
        "orphan": 1,
        "dangling": 1,
        "expired": 2,
        "over_budget": 0,
        "stale_tmp": 1,
        "stale_lock": 1,
    }
    assert report.total("orphan").bytes == orphan_bytes > 0
    assert not orphan.exists() and not tmp_old.exists() and not lock_old.exists()
    assert tmp_new.exists()  # inside the grace period
    assert _live_files(store) == set(keys[3:])
    assert {e.key for e in store.entries()} == set(keys[3:])
    assert report.max_lock_hold_ms > 0 and report.lock_holds >= 2


def test_gc_removes_the_view_links_of_what_it_deletes(store):
    from jules_cache.query.views import entry_link, link_folder

    keys = _fill(store, 4)
    folder = link_folder(local_backend(store).layout, "bars")
    _age(store, keys[:1], accessed_days=40)  # expired
    local_backend(store).layout.result_path(
        keys[1]
    ).unlink()  # dangling: the link still holds its data
    orphan = _orphan(store)  # a put killed just before COMMIT leaves its link too
    os.link(
        orphan, entry_link(local_backend(store).layout, store.entry(keys[3])).parent / orphan.name
    )
    report = store.gc()
    assert report.ok
    # nothing else kept alive
    assert {path.stem for path in folder.rglob("*.parquet")} == set(keys[2:])


def test_gc_of_every_entry_of_a_feature_drops_its_view_and_links(store):
    from jules_cache.query.views import link_folder

    keys = _fill(store, 2)
    _age(store, keys, accessed_days=40)
    assert store.gc().ok and store.entries() == []
    assert not link_folder(local_backend(store).layout, "bars").exists()
    with local_backend(store).manifest.read() as con:
        assert con.execute(
            "SELECT count(*) FROM duckdb_views() WHERE view_name = 'bars'"
        ).fetchall() == [(0,)]


def test_retention_counts_last_access_never_creation(store):
    keys = _fill(store, 3)
    _age(store, keys[:1], accessed_days=1, created_days=400)  # old, but read yesterday
    _age(store, keys[1:2], accessed_days=30, created_days=30)
    report = store.gc(retention_weeks=2)
    assert report.total("expired").count == 1
    assert {e.key for e in store.entries()} == {keys[0], keys[2]}


def test_a_hit_refreshes_last_access_so_the_entry_survives(store):
    (key,) = _fill(store, 1)
    _age(store, [key], accessed_days=60)
    assert store.fetch("AAPL", frame(0), {"freq": "1m", "i": 0}, bar_count, name="bars").hit
    store.flush()
    assert store.gc(retention_weeks=4).total("expired").count == 0
    assert store.entry(key) is not None


def test_over_budget_evicts_least_recently_used_by_window_sum(store):
    keys = _fill(store, 5)
    for days, key in enumerate(keys):  # keys[0] most recent ... keys[4] least recent
        _age(store, [key], accessed_days=days)
    sizes = {k: local_backend(store).layout.result_path(k).stat().st_size for k in keys}
    cap = sizes[keys[0]] + sizes[keys[1]] + 1
    report = store.gc(max_size=cap)
    assert report.total("over_budget").count == 3
    assert report.total("over_budget").bytes == sum(sizes[k] for k in keys[2:])
    assert {e.key for e in store.entries()} == set(keys[:2])


def test_dry_run_reports_exactly_what_the_real_run_then_deletes(store):
    keys = _fill(store, 4)
    _orphan(store)
    _age(store, keys[:2], accessed_days=100)
    dry = store.gc(dry_run=True)
    assert len(store.entries()) == 4 and local_backend(store).layout.result_path("ab" * 16).exists()
    real = store.gc()
    assert dry.totals == real.totals and dry.files == 3
    assert sorted(i.path for i in dry.items) == sorted(i.path for i in real.items)
    assert [(r[1], r[2]) for r in _gc_runs(store)] == [(True, "success"), (False, "success")]


# -- safety --------------------------------------------------------------------------------------


def _spellings(tmp_path: Path, root: Path) -> dict[str, str]:
    link = tmp_path / "link"
    link.symlink_to(root, target_is_directory=True)
    (tmp_path / "sub").mkdir(exist_ok=True)
    return {
        "relative": os.path.relpath(root),
        "trailing-slash": str(root) + "/",
        "symlink": str(link),
        "dotdot": str(tmp_path / "sub" / ".." / root.name),
    }


@pytest.mark.parametrize("spelling", ["relative", "trailing-slash", "symlink", "dotdot"])
def test_no_root_spelling_deletes_a_live_file(tmp_path, root, spelling, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with FeatureStore(root) as writer:
        keys = _fill(writer, 3)
        orphan = _orphan(writer)
    spelled = _spellings(tmp_path, root)[spelling]

    report = FeatureStore(spelled).gc(retention_weeks=52)
    assert report.files == 1 and report.total("orphan").count == 1
    assert not orphan.exists()

    orphan = _orphan(FeatureStore(root), "ac" * 16)
    cli_run = CliRunner().invoke(cli_main(), ["gc", "--root", spelled, "--json"])
    assert cli_run.exit_code == 0, cli_run.output
    assert json.loads(cli_run.stdout)["files"] == 1 and not orphan.exists()

    store = FeatureStore(root)
    assert _live_files(store) == set(keys)
    again = store.fetch("AAPL", frame(1), {"freq": "1m", "i": 1}, bar_count, name="bars")
    assert again.hit


def cli_main():
    from jules_cache.cli import cli

    return cli


@pytest.mark.leaves_damage  # the path column is rewritten on purpose
def test_orphans_are_matched_by_key_not_by_the_path_column(store):
    keys = _fill(store, 2)
    with local_backend(store).manifest.write() as con:  # an old-style absolute, oddly spelled path
        con.execute(
            "UPDATE entries SET path = ? WHERE key = ?",
            [str(store.root) + "//objects/./x/../" + keys[0][:2] + "/" + keys[0], keys[0]],
        )
    report = store.gc()
    assert report.files == 0 and _live_files(store) == set(keys)


@pytest.mark.leaves_damage  # stray or missing files on purpose
def test_only_files_of_the_cache_scheme_are_candidates(store):
    keys = _fill(store, 2)
    _age(store, keys, accessed_days=1000)
    strangers = [
        local_backend(store).layout.objects / "ab" / "notes.parquet",
        local_backend(store).layout.objects
        / "zz"
        / f"{'ab' * 16}.parquet",  # wrong folder for the key
        local_backend(store).layout.objects / f"{'ab' * 16}.parquet",  # not in a key folder
        local_backend(store).layout.objects
        / "ab"
        / f"{'AB' * 16}.parquet",  # upper case: not our scheme
        local_backend(store).layout.tmp / "user-file.tmp",
        local_backend(store).layout.locks / "gc-cron.lock",
        store.root / "other.parquet",
    ]
    for path in strangers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        os.utime(path, (0, 0))
    report = store.gc(retention_weeks=0, grace=0)
    assert report.total("expired").count == 2
    # the entries' own single-flight locks (unheld, older than grace=0) go too; nothing else
    stale_locks = {i.path for i in report.items if i.reason == "stale_lock"}
    assert stale_locks == {f"locks/{key}.lock" for key in keys}
    assert report.files == 4
    for path in [
        *strangers,
        local_backend(store).layout.manifest,
        local_backend(store).layout.manifest_lock,
    ]:
        assert path.exists(), path


def test_a_held_lock_file_is_never_deleted(store):
    held = local_backend(store).layout.locks / f"{'12' * 16}.lock"
    free = local_backend(store).layout.locks / f"{'34' * 16}.lock"
    free.write_text("")
    with file_lock(held, 0):
        for path in (held, free):
            os.utime(path, (0, 0))
        report = store.gc(grace="1h")
        assert held.exists()
    assert not free.exists()
    assert report.total("stale_lock").count == 1 and report.skipped == 1


def test_a_reader_that_loses_the_race_recomputes(store):
    first = store.fetch("AAPL", frame(3), {"n": 3}, bar_count, name="bars")
    store.gc(retention_weeks=0)
    assert store.entry(first.key) is None and not first.path.exists()
    again = store.fetch("AAPL", frame(3), {"n": 3}, bar_count, name="bars")
    assert not again.hit and again.value.equals(first.value)
    assert store.entry(first.key) is not None


def test_a_republished_key_is_not_deleted_by_a_plan_made_before(store):
    """Race: the plan saw an orphan; a trainer publishes that key before the delete."""
    (key,) = _fill(store, 1)
    with local_backend(store).manifest.write() as con:  # make the file an orphan (row lost)
        con.execute("DELETE FROM entries WHERE key = ?", [key])
    hour_ago = time.time() - 3600  # an old orphan (a young one may be a publish in flight)
    os.utime(local_backend(store).layout.result_path(key), (hour_ago, hour_ago))
    from jules_cache.maintenance.gc import GCOptions, LocalRun

    run = LocalRun(
        local_backend(store).manifest, local_backend(store).layout, GCOptions.build(), None
    )
    planned = run._plan()
    assert [i.reason for i in planned] == ["orphan"]
    local_backend(store).layout.result_path(
        key
    ).unlink()  # a trainer misses, recomputes and publishes
    _fill(store, 1)
    run._delete(planned)
    assert local_backend(store).layout.result_path(key).exists() and store.entry(key) is not None
    assert run.skipped == 1 and run.deleted == []


def _gc_forever(root: str, started) -> None:
    store = FeatureStore(root)
    started.set()
    while True:
        store.gc(retention_weeks=0)


@pytest.mark.slow
def test_killed_midway_gc_leaves_orphans_never_rows_without_files(tmp_path):
    root = tmp_path / "cache"
    store = FeatureStore(root)
    keys = _fill(store, 40)
    store.flush()  # every row listed before the GCs start (quick misses land in batches)
    context = multiprocessing.get_context("spawn")
    for delay in (0.05, 0.15, 0.3):
        _fill(store, 40)
        store.flush()
        started = context.Event()
        process = context.Process(target=_gc_forever, args=(str(root), started))
        process.start()
        started.wait(30)
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        _assert_no_dangling_rows(root)
    store.flush()
    assert FeatureStore(root).gc(retention_weeks=0).ok
    assert not any(local_backend(store).layout.result_path(k).exists() for k in keys)


def fetch_until(root: str, worker: int, seconds: float) -> tuple[int, int, list[str]]:
    """A trainer: fetch eight keys in turn until the time is up; return what failed."""
    store = FeatureStore(root, hit_flush_seconds=0.05)
    calls, errors = 0, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        i = calls % 8
        try:
            bars = store.get_or_compute("AAPL", frame(i), {"i": i}, bar_count, name="bars")
            assert bars["n"].sum() == 200
        except Exception as exc:
            errors.append(repr(exc))
        calls += 1
    store.close()
    return worker, calls, errors


def gc_until(root: str, seconds: float) -> tuple[int, float]:
    """GC with retention 0 again and again until the time is up; return runs, longest hold."""
    store = FeatureStore(root)
    runs, longest = 0, 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        report = store.gc(retention_weeks=0)
        runs += 1
        longest = max(longest, report.max_lock_hold_ms)
    return runs, longest


def _race(tmp_path: Path, trainers: int, seconds: float) -> None:
    root = tmp_path / "cache"
    FeatureStore(root)
    context = multiprocessing.get_context("spawn")
    with context.Pool(trainers + 1) as pool:
        gc_result = pool.apply_async(gc_until, (str(root), seconds))
        results = pool.starmap(fetch_until, [(str(root), w, seconds) for w in range(trainers)])
        runs, _ = gc_result.get(120)
    assert runs >= 2
    for _, calls, errors in results:
        assert errors == [] and calls > 0
    _assert_no_dangling_rows(root)


@pytest.mark.slow
def test_gc_with_retention_zero_under_live_trainers(tmp_path):
    _race(tmp_path, trainers=2, seconds=4)


@pytest.mark.stress
def test_gc_under_live_trainers_stress(tmp_path):
    _race(tmp_path, trainers=6, seconds=30)


# -- gc_runs, failure and busy --------------------------------------------------------------------


@pytest.fixture
def immutable_orphan(store):
    path = _orphan(store)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode:
        pytest.skip("needs chattr +i (root on ext4) to make a file undeletable")
    yield path
    subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.leaves_damage  # stray or missing files on purpose
def test_a_failed_step_records_failed_and_raises(store, immutable_orphan):
    keys = _fill(store, 2)
    _age(store, keys, accessed_days=100)
    with pytest.raises(GCError, match="cannot delete") as caught:
        store.gc()
    report = caught.value.report
    assert report.status == "failed" and report.total("expired").count == 2
    (run,) = _gc_runs(store)
    assert run[2] == "failed" and "cannot delete" in run[3]


@pytest.mark.leaves_damage  # stray or missing files on purpose
def test_cli_exit_1_and_one_json_document_on_failure(root, store, immutable_orphan):
    result = CliRunner().invoke(cli_main(), ["gc", "--root", str(root), "--json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["status"] == "failed" and document["errors"]


def test_another_gc_running_exits_75(root, store):
    with file_lock(local_backend(store).layout.key_lock_path(GC_LOCK), 0):
        with pytest.raises(LockTimeout):
            store.gc()
        result = CliRunner().invoke(cli_main(), ["gc", "--root", str(root), "--json"])
    assert result.exit_code == 75
    assert json.loads(result.stdout)["status"] == "busy"
    assert _gc_runs(store) == []


def test_bad_settings_say_what_to_write():
    with pytest.raises(InvalidInput, match="50GB"):
        parse_size("fifty")
    with pytest.raises(InvalidInput, match="6h"):
        parse_duration("soon")
    assert parse_size("1.5KB") == 1536 and parse_size("50GB") == 50 * 1024**3
    assert parse_duration("90m") == 5400 and parse_duration(timedelta(hours=1)) == 3600


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_human_table_verbose_and_env_retention(root, store):
    keys = _fill(store, 3)
    _age(store, keys[:1], accessed_days=3)
    runner = CliRunner()
    dry = runner.invoke(cli_main(), ["gc", "--root", str(root), "--dry-run"])
    assert dry.exit_code == 0 and "would delete" in dry.stdout and "expired" in dry.stdout
    assert len(store.entries()) == 3
    result = runner.invoke(
        cli_main(),
        ["gc", "--root", str(root), "-v"],
        env={"FEATURE_STORE_GC_RETENTION_WEEKS": "0.1"},  # 0.7 days
    )
    assert result.exit_code == 0, result.output
    assert local_backend(store).layout.relative_result_path(keys[0]) in result.stdout
    assert "longest" in result.stdout and "status        success" in result.stdout
    assert {e.key for e in store.entries()} == set(keys[1:])


@pytest.mark.slow
def test_entry_point_subprocess_gc_and_overview(root, store, jules_cache_command):
    _fill(store, 2)
    size = _orphan(store).stat().st_size
    env = {**os.environ, "FEATURE_STORE_PATH": str(root)}
    gc = subprocess.run(
        [jules_cache_command, "gc", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert gc.returncode == 0, gc.stderr
    assert json.loads(gc.stdout)["totals"][0] == {"reason": "orphan", "count": 1, "bytes": size}
    shown = subprocess.run(
        [sys.executable, "-m", "jules_cache", "overview"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "bars" in shown.stdout and "AAPL" in shown.stdout and "success" in shown.stdout


def test_overview_on_an_empty_cache_exits_0(tmp_path):
    FeatureStore(tmp_path / "new").close()  # a root without a cache is an error (#14 item 6)
    result = CliRunner().invoke(cli_main(), ["overview", "--root", str(tmp_path / "new")])
    assert result.exit_code == 0 and "entries       0" in result.stdout
    assert "last gc       never" in result.stdout
    as_json = CliRunner().invoke(
        cli_main(), ["overview", "--root", str(tmp_path / "new"), "--json"]
    )
    assert json.loads(as_json.stdout)["entries"] == 0


def test_overview_groups_by_feature_and_symbol(root, store):
    _fill(store, 2, "AAPL")
    _fill(store, 1, "MSFT")
    store.gc(dry_run=True)
    result = CliRunner().invoke(cli_main(), ["overview", "--root", str(root), "--json"])
    document = json.loads(result.stdout)
    assert document["entries"] == 3
    groups = {(g["symbol"], g["entries"]) for g in document["groups"]}
    assert groups == {("AAPL", 2), ("MSFT", 1)}
    assert document["last_gc"]["dry_run"] is True


# -- auto_gc -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_gc_unless_asked_not_on_writes_close_or_exit(root):
    code = (
        "import sys; sys.path[:0] = sys.argv[2:]\n"
        "from test_gc import _fill\n"
        "from jules_cache import FeatureStore\n"
        "store = FeatureStore(sys.argv[1]); _fill(store, 2); store.close(); del store\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(root), str(Path(__file__).parent), str(TESTS)],
        check=True,
        timeout=60,
    )
    assert _gc_runs(FeatureStore(root)) == []


def test_auto_gc_runs_a_bounded_step_at_most_once_per_interval(root):
    with FeatureStore(root) as old:
        stale = _fill(old, 3)
        _age(old, stale, accessed_days=60)
    store = FeatureStore(root, auto_gc=3600, auto_gc_limit=2)
    store.fetch("MSFT", frame(9), {"new": 1}, bar_count, name="bars")  # a publish: GC step
    runs = _gc_runs(store)
    assert len(runs) == 1 and runs[0][5] == 2  # bounded: 2 of the 3 expired entries
    store.fetch("MSFT", frame(9), {"new": 2}, bar_count, name="bars")
    FeatureStore(root, auto_gc=3600).fetch("MSFT", frame(9), {"new": 3}, bar_count)
    assert len(_gc_runs(store)) == 1  # within the interval, also for another store


# -- scheduled GC: `jules-cache gc --cron` (replaces scripts/feature_store_gc.sh) ---------------


def _cron(
    command: str, root: Path, log_dir: Path, *args: str, **extra: str
) -> subprocess.CompletedProcess:
    """Run ``command gc --cron *args`` on ``root`` the way cron would, logging to ``log_dir``."""
    env = {
        **os.environ,
        "FEATURE_STORE_PATH": str(root),
        "FEATURE_STORE_LOG_DIR": str(log_dir),
        **extra,
    }
    return subprocess.run(
        [command, "gc", "--cron", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_cron_gc_runs_and_logs(tmp_path, root, store, jules_cache_command):
    keys = _fill(store, 3)
    _age(store, keys[:1], accessed_days=3)
    log_dir = tmp_path / "logs"
    dry = _cron(
        jules_cache_command, root, log_dir, "--dry-run", FEATURE_STORE_GC_RETENTION_WEEKS="0.1"
    )
    assert dry.returncode == 0 and dry.stdout == "", dry.stderr
    assert len(store.entries()) == 3
    real = _cron(jules_cache_command, root, log_dir, FEATURE_STORE_GC_RETENTION_WEEKS="0.1")
    assert real.returncode == 0 and real.stdout == "", real.stderr
    assert {e.key for e in store.entries()} == set(keys[1:])
    log = (log_dir / "gc.log").read_text()
    assert log.count("status success") == 2 and log.count("exit 0") == 2
    assert "would delete (dry run) 1 files/rows" in log and "deleted 1 files/rows" in log
    assert '"reason": "expired", "count": 1' in log


@pytest.mark.slow
def test_cron_gc_overlap_exits_75_and_bad_usage_2(tmp_path, root, store, jules_cache_command):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    with open(log_dir / "gc.log", "a") as handle:  # another cron run is writing its log
        fcntl.flock(handle, fcntl.LOCK_EX)
        busy = _cron(jules_cache_command, root, log_dir)
    assert busy.returncode == 75 and "try later" in busy.stderr
    bad = _cron(jules_cache_command, root, log_dir, FEATURE_STORE_GC_RETENTION_WEEKS="-1")
    assert bad.returncode == 2


@pytest.mark.slow
@pytest.mark.leaves_damage  # stray or missing files on purpose
def test_cron_gc_exits_1_when_a_step_fails(tmp_path, root, immutable_orphan, jules_cache_command):
    result = _cron(jules_cache_command, root, tmp_path / "logs")
    assert result.returncode == 1 and "cannot delete" in result.stderr
    log = (tmp_path / "logs" / "gc.log").read_text()
    assert "status failed" in log and "exit 1" in log
