"""`store.check()` / `jules-cache check`: every kind of problem found, reported and repaired."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest
from click.testing import CliRunner
from features import bar_count, flip_bit
from helpers import local_backend

from jules_cache import (
    CacheWriteWarning,
    FeatureStore,
    InvalidInput,
    ManifestDamaged,
    ManifestError,
)
from jules_cache.cli import cli
from jules_cache.maintenance.check import KINDS, LEFTOVER_KINDS
from jules_cache.storage.locks import file_lock

CONFIG = {"freq": "1m"}


def put(store, data, symbol="AAPL"):
    """A miss whose row is written (listing an entry writes the rows this store published)."""
    result = store.fetch(symbol, data, CONFIG, bar_count, name="bars")
    assert store.entry(result.key) is not None
    return result


def damage_only(report):
    return {p.kind for p in report.problems if p.kind not in LEFTOVER_KINDS}


def test_a_healthy_cache_is_consistent(store, aapl):
    put(store, aapl)
    put(store, aapl, "MSFT")
    report = store.check(deep=True)
    assert report.consistent and damage_only(report) == set()
    assert (report.entries, report.files) == (2, 2)
    assert set(report.counts) == set(KINDS)
    document = report.to_dict()
    assert document["consistent"] is True and document["counts"]["missing_file"] == 0


def test_missing_file_is_reported_and_its_row_dropped(store, aapl):
    result = put(store, aapl)
    result.path.unlink()
    report = store.check()
    assert not report.consistent
    (problem,) = report.of_kind("missing_file")
    assert problem.key == result.key and problem.action is None
    fixed = store.check(fix=True)
    assert fixed.consistent and fixed.of_kind("missing_file")[0].action == "dropped row"
    assert store.entry(result.key) is None
    assert store.check().consistent
    again = put(store, aapl)
    assert not again.hit and again.value.equals(result.value)


def test_view_links_that_disagree_with_the_manifest_are_found_and_relinked(store, aapl):
    from jules_cache.query.views import entry_link, link_folder

    kept, lost = put(store, aapl), put(store, aapl, "MSFT")
    folder = link_folder(local_backend(store).layout, "bars")
    kept_link = entry_link(local_backend(store).layout, store.entry(kept.key))
    lost_link = entry_link(local_backend(store).layout, store.entry(lost.key))
    lost_link.unlink()  # the stored view would miss MSFT
    kept_link.unlink()
    kept_link.write_bytes(b"another file")  # ... and read garbage
    (kept_link.parent / f"{'ab' * 16}.parquet").write_bytes(b"stray")
    report = store.check()
    assert not report.consistent
    assert sorted(p.detail for p in report.of_kind("view_link")) == [
        "links another file than the entry's",
        "no entry of this feature has this key in this folder",
        "the entry's file is not linked",
    ]
    fixed = store.check(fix=True)
    assert fixed.consistent and {p.action for p in fixed.of_kind("view_link")} == {"relinked"}
    assert {p.relative_to(folder) for p in folder.rglob("*.parquet")} == {
        kept_link.relative_to(folder),
        lost_link.relative_to(folder),
    }
    assert kept_link.samefile(kept.path) and lost_link.samefile(lost.path)
    assert store.check().problems == ()


def test_orphan_file_is_registered_again_from_its_own_metadata(store, aapl):
    result = put(store, aapl)
    before = store.entry(result.key)
    with local_backend(store).manifest.write() as con:
        con.execute("DELETE FROM entries WHERE key = ?", [result.key])
    (problem,) = store.check().of_kind("orphan_file")
    assert problem.key == result.key and "valid" in problem.detail
    assert store.check(fix=True).of_kind("orphan_file")[0].action == "registered"
    after = store.entry(result.key)
    for field in ("feature", "symbol", "config_json", "data_fingerprint", "rows", "bytes"):
        assert getattr(after, field) == getattr(before, field)
    assert after.min_time == before.min_time and after.max_time == before.max_time
    assert store.check().consistent and put(store, aapl).hit


def test_unusable_orphan_and_stray_names_are_quarantined(store, aapl):
    put(store, aapl)
    stray = local_backend(store).layout.objects / "zz" / "notes.txt"
    stray.parent.mkdir()
    stray.write_text("not a result")
    fake = local_backend(store).layout.objects / "ab" / ("ab" + "0" * 30 + ".parquet")
    fake.parent.mkdir()
    fake.write_bytes(b"garbage" * 10)
    report = store.check()
    assert {p.path for p in report.of_kind("orphan_file")} == {
        "objects/zz/notes.txt",
        f"objects/ab/{fake.name}",
    }
    fixed = store.check(fix=True)
    assert {p.action for p in fixed.of_kind("orphan_file")} == {"quarantined"}
    assert not stray.exists() and not fake.exists() and fixed.quarantined == 2
    assert store.check().consistent


def test_size_mismatch_is_quarantined(store, aapl):
    result = put(store, aapl)
    with result.path.open("ab") as file:
        file.write(b"extra")
    (problem,) = store.check().of_kind("size_mismatch")
    assert "bytes on disk" in problem.detail
    store.check(fix=True)
    assert not result.path.exists() and store.entry(result.key) is None
    assert len(list((store.root / "quarantine").iterdir())) == 1
    assert store.check().consistent


def test_garbage_with_the_right_size_is_an_unreadable_footer(store, aapl):
    result = put(store, aapl)
    result.path.write_bytes(b"\x00" * result.path.stat().st_size)
    (problem,) = store.check().of_kind("unreadable_footer")
    assert problem.key == result.key
    assert store.check(fix=True).of_kind("unreadable_footer")[0].action.startswith("quarantined")
    assert store.check().consistent


def test_a_flipped_bit_is_found_only_by_deep_check(store, aapl):
    result = put(store, aapl)
    flip_bit(result.path)
    assert store.check().consistent  # footer and size are intact
    (problem,) = store.check(deep=True).of_kind("checksum_failure")
    assert problem.key == result.key
    assert store.check(deep=True, fix=True).consistent
    assert not result.path.exists() and store.check(deep=True).consistent


def test_stale_temp_and_lock_files_are_leftovers_removed_by_fix(store, aapl):
    result = put(store, aapl)
    temp = local_backend(store).layout.tmp / f"{result.key}.1.2.abc.parquet.tmp"
    temp.write_bytes(b"half a file")
    assert store.check().in_flight == 1  # young: a put in progress, left alone
    report = store.check(grace_seconds=0)
    assert report.consistent  # leftovers are not inconsistencies
    assert [p.path for p in report.of_kind("stale_temp")] == [f"tmp/{temp.name}"]
    assert [p.key for p in report.of_kind("stale_lock")] == [result.key]
    store.check(fix=True, grace_seconds=0)
    assert not temp.exists() and not any(local_backend(store).layout.locks.iterdir())
    assert put(store, aapl).hit


def test_a_held_lock_is_never_reported_or_removed(store, aapl):
    result = put(store, aapl)
    lock = local_backend(store).layout.key_lock_path(result.key)
    with file_lock(lock, timeout=1):
        report = store.check(fix=True, grace_seconds=0)
        assert report.of_kind("stale_lock") == [] and lock.exists()


def test_negative_grace_is_refused(store):
    with pytest.raises(InvalidInput, match="grace_seconds"):
        store.check(grace_seconds=-1)


# -- the manifest lost or damaged ---------------------------------------------------------------


def test_a_damaged_manifest_names_the_file_and_the_fix(root, aapl):
    with FeatureStore(root) as store:
        put(store, aapl)
    manifest = root / "manifest.duckdb"
    manifest.write_bytes(os.urandom(manifest.stat().st_size))
    with pytest.warns(CacheWriteWarning, match="check --rebuild"):
        store = FeatureStore(root)  # opens: check(rebuild=True) needs an open store
    with pytest.raises(ManifestDamaged) as info:
        store.stats()
    assert str(manifest) in str(info.value) and "check --rebuild" in str(info.value)


def test_a_deleted_manifest_is_rebuilt_by_the_next_store_never_left_empty(root, aapl):
    store = FeatureStore(root)
    result = put(store, aapl)
    (root / "manifest.duckdb").unlink()
    with pytest.raises(ManifestError, match=r"missing .*check --rebuild"):
        store.stats()  # an open store: no silent empty manifest either
    assert not (root / "manifest.duckdb").exists()
    again = FeatureStore(root)  # recovers from the files on its own
    assert again.entry(result.key) is not None and put(again, aapl).hit


def test_rebuild_restores_every_entry_from_the_files(root, aapl):
    with FeatureStore(root) as store:
        keys = {put(store, aapl, symbol).key for symbol in ("AAPL", "MSFT", "日本/x")}
        before = {e.key: e for e in store.entries()}
    (root / "manifest.duckdb").write_bytes(b"not a database")
    result = CliRunner().invoke(cli, ["--root", str(root), "check", "--rebuild", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["consistent"] and document["counts"]["orphan_file"] == 3
    assert (root / document["rebuilt_from"]).read_bytes() == b"not a database"
    assert document["kept_counters"] is False  # nothing readable to keep
    with FeatureStore(root) as store:
        after = {e.key: e for e in store.entries()}
        assert set(after) == keys
        for key, entry in after.items():
            assert (entry.symbol, entry.config, entry.rows) == (
                before[key].symbol,
                before[key].config,
                before[key].rows,
            )
        assert put(store, aapl, "日本/x").hit
        assert store.check().consistent


def test_store_check_rebuild_works_after_the_manifest_was_deleted(store, aapl):
    result = put(store, aapl)
    local_backend(store).manifest.layout.manifest.unlink()
    report = store.check(rebuild=True)
    assert report.rebuilt_from is None and report.consistent
    assert store.entry(result.key) is not None


# -- the command ----------------------------------------------------------------------------------


def test_cli_check_exits_1_while_inconsistent_and_fix_repairs(root, aapl):
    with FeatureStore(root) as store:
        result = put(store, aapl)
    result.path.unlink()
    runner = CliRunner()
    found = runner.invoke(cli, ["--root", str(root), "check"])
    assert found.exit_code == 1
    assert "missing_file" in found.stdout and "check --fix" in found.stderr
    fixed = runner.invoke(cli, ["--root", str(root), "check", "--fix", "--deep"])
    assert fixed.exit_code == 0, fixed.output
    assert "dropped row" in fixed.stdout
    again = runner.invoke(cli, ["--root", str(root), "check", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["entries"] == 0


@pytest.mark.slow
def test_the_entry_point_rebuilds_a_deleted_manifest(root, aapl, jules_cache_command):
    with FeatureStore(root) as store:
        result = put(store, aapl)
    (root / "manifest.duckdb").unlink()
    recovered = subprocess.run(  # any command's store rebuilds a deleted manifest first
        [sys.executable, "-m", "jules_cache", "--root", str(root), "stats", "--json"],
        capture_output=True,
        text=True,
    )
    assert recovered.returncode == 0 and json.loads(recovered.stdout)["entries"] == 1
    (root / "manifest.duckdb").unlink()
    done = subprocess.run(
        [jules_cache_command, "--root", str(root), "check", "--rebuild"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "orphan_file" in done.stdout and "consistent" in done.stderr
    with FeatureStore(root) as store:
        assert store.entry(result.key).rows == result.value.height
        assert isinstance(put(store, aapl).value, pl.DataFrame)


def test_deep_fix_never_registers_a_damaged_orphan(store, aapl):
    """Found by the stateful test: an orphan with a flipped bit was registered by --deep --fix."""
    result = put(store, aapl)
    with local_backend(store).manifest.write() as con:
        con.execute("DELETE FROM entries WHERE key = ?", [result.key])
    flip_bit(result.path)
    (problem,) = store.check(deep=True, fix=True).of_kind("orphan_file")
    assert problem.action == "quarantined" and "checksum" in problem.detail.lower()
    assert damage_only(store.check(deep=True)) == set()
    assert store.entry(result.key) is None and not result.path.exists()


def test_rebuild_of_a_healthy_cache_keeps_counters_hits_and_view_names(root, aapl):
    """`check --rebuild` on a readable manifest reset hits and misses to 0 and
    renamed views (`make_bars` -> a qualified name), breaking saved queries."""
    with FeatureStore(root) as store:
        first = store.fetch("AAPL", aapl, CONFIG, bar_count, name="demo.make_bars")
        store.fetch("AAPL", aapl, CONFIG, bar_count, name="mine.make_bars")
        assert store.fetch("AAPL", aapl, CONFIG, bar_count, name="demo.make_bars").hit
        store.fetch("MSFT", aapl, CONFIG, bar_count, name="mine.make_bars")
        before = store.stats()
        named = store.sql("SELECT count(*) AS n FROM make_bars")["n"][0]
        entry = store.entry(first.key)
    assert (before.hits, before.misses) == (1, 3)
    rebuilt = CliRunner().invoke(cli, ["--root", str(root), "check", "--rebuild", "--json"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads(rebuilt.stdout)["kept_counters"] is True
    with FeatureStore(root) as store:
        after = store.stats()
        assert (after.hits, after.misses, after.entries) == (1, 3, 3)
        assert after.seconds_saved == pytest.approx(before.seconds_saved)
        assert store.sql("SELECT count(*) AS n FROM make_bars")["n"][0] == named
        kept = store.entry(first.key)
        assert (kept.hit_count, kept.compute_seconds) == (entry.hit_count, entry.compute_seconds)
        assert kept.last_accessed_at == entry.last_accessed_at
        assert store.check().consistent
