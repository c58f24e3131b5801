"""Faults: damaged files on read, SIGKILL at every stage of a put, a full disk, a read-only root.

Crashes and resource limits run in real child processes (``python -c``), so the kill and the
limit hit a real interpreter in the middle of a real put.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from features import bar_count, flip_bit
from helpers import Counted, local_backend

from jules_cache import FeatureStore, InvalidInput, UnsafePath
from jules_cache.maintenance.check import LEFTOVER_KINDS

TESTS = Path(__file__).resolve().parents[1]
CONFIG = {"freq": "1m"}


def reference(aapl):
    return bar_count(aapl.lazy(), CONFIG).collect()


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path):
    flip_bit(path, column=1, mask=0x04)


def _garbage(path):
    path.write_bytes(os.urandom(path.stat().st_size))


def _empty(path):
    path.write_bytes(b"")


DAMAGE = {"truncated": _truncate, "flipped-bit": _flip, "garbage": _garbage, "empty": _empty}


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_file_is_quarantined_counted_and_recomputed(
    store, aapl, tmp_path, caplog, damage, lazy
):
    compute = Counted(tmp_path / "calls")
    first = store.fetch("AAPL", aapl, CONFIG, compute, name="bars", lazy=lazy)
    DAMAGE[damage](first.path)
    with caplog.at_level(logging.WARNING, logger="jules_cache"):
        again = store.fetch("AAPL", aapl, CONFIG, compute, name="bars", lazy=lazy)
    value = again.value.collect() if lazy else again.value
    assert value.equals(reference(aapl))
    assert not again.hit and again.stored and compute.calls == 2
    assert "is damaged" in caplog.text
    assert len(list((store.root / "quarantine").iterdir())) == 1
    with local_backend(store).manifest.read() as con:
        counters = dict(
            local_backend(store).manifest.execute(con, "entries.sql", "counters").fetchall()
        )
    assert counters["corrupt_files"] == 1
    assert store.fetch("AAPL", aapl, CONFIG, compute, name="bars").hit
    assert store.check(deep=True).consistent


def test_without_page_checksums_a_flipped_bit_would_be_served(aapl, tmp_path):
    """Why the files carry CRCs: Polars reads a flipped bit as different values, no error."""
    frame = reference(aapl)
    path = tmp_path / "plain.parquet"
    frame.write_parquet(path, compression="lz4")
    _flip(path)
    try:
        damaged = pl.read_parquet(path)
    except pl.exceptions.PolarsError:
        pytest.skip("this Polars version detects the flip itself")
    assert not damaged.equals(frame)


@pytest.mark.parametrize("how", ["deleted-file", "row-pointing-nowhere"])
def test_a_missing_file_is_a_miss_and_the_row_is_replaced(store, aapl, tmp_path, how):
    compute = Counted(tmp_path / "calls")
    first = store.fetch("AAPL", aapl, CONFIG, compute, name="bars")
    if how == "deleted-file":
        first.path.unlink()
    else:
        with local_backend(store).manifest.write() as con:
            con.execute("UPDATE entries SET path = 'objects/00/nowhere.parquet'")
        first.path.unlink()
    again = store.fetch("AAPL", aapl, CONFIG, compute, name="bars")
    assert not again.hit and again.value.equals(reference(aapl)) and compute.calls == 2
    assert store.entry(first.key).path == f"objects/{first.key[:2]}/{first.key}.parquet"
    assert store.check().consistent


# -- SIGKILL at every stage of a put ------------------------------------------------------------

PUT = """
import sys, json
sys.path.insert(0, {tests!r})
import polars as pl
from features import bar_count
from jules_cache import FeatureStore
from jules_cache.synthetic import make_ticks, symbol_names, ticks_for
ticks = ticks_for(make_ticks(symbol_names(3), 60_000, seed=11), "AAPL")
store = FeatureStore({root!r})
config = {config!r}
result = store.fetch("AAPL", ticks, config, bar_count, name="bars", lazy={lazy!r})
print(json.dumps({{"key": result.key, "hit": result.hit}}))
"""


def run_put(root, config, *, crash_at=None, lazy=False):
    script = PUT.format(tests=str(TESTS), root=str(root), config=config, lazy=lazy)
    env = {k: v for k, v in os.environ.items() if k != "JULES_CACHE_CRASH_AT"}
    if crash_at:
        env["JULES_CACHE_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )


STAGES = ["compute", "write", "fsynced", "renamed", "commit"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "lazy"),
    [(stage, False) for stage in STAGES] + [("write", True), ("renamed", True)],
    ids=[*STAGES, "write-lazy", "renamed-lazy"],
)
def test_sigkill_at_any_stage_of_a_put_loses_nothing_and_serves_nothing_torn(
    root, aapl, stage, lazy
):
    with FeatureStore(root) as store:  # committed before the crash: must survive it
        store.fetch("AAPL", aapl, {"freq": "5m"}, bar_count, name="bars")
    killed = run_put(root, CONFIG, crash_at=stage, lazy=lazy)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    temps = list((root / "tmp").iterdir())
    if stage == "write":  # the injection point is real: a temp file without its footer
        (temp,) = temps
        with pytest.raises(Exception, match=r"(?i)parquet|magic|size"):
            pq.read_metadata(temp)
    with FeatureStore(root) as store:
        leftover = store.check(grace_seconds=0)
        kinds = {p.kind for p in leftover.problems}
        assert kinds <= LEFTOVER_KINDS | {"orphan_file", "view_link"}, leftover.problems
        # A killed put either never published or published a complete, fsynced file.
        orphans = leftover.of_kind("orphan_file")
        assert bool(orphans) == (stage in ("renamed", "commit"))
        assert all("valid" in p.detail for p in orphans)
        # Killed just before COMMIT, the orphan is already linked for the stored SQL views;
        # their join to `entries` hides it until `check --fix` registers it (or GC removes it).
        links = leftover.of_kind("view_link")
        assert [p.path.rsplit("/", 1)[-1] for p in links] == (
            [o.path.rsplit("/", 1)[-1] for o in orphans] if stage == "commit" else []
        )
        assert store.fetch("AAPL", aapl, {"freq": "5m"}, bar_count, name="bars").hit
        again = store.fetch("AAPL", aapl, CONFIG, bar_count, name="bars")
        assert again.value.equals(reference(aapl))
        assert again.hit == (stage in ("renamed", "commit"))
        assert store.check(fix=True, grace_seconds=0).consistent
        final = store.check(deep=True, grace_seconds=0)
        assert final.problems == () and final.entries == final.files == 2


# -- a full disk, a read-only root ---------------------------------------------------------------

LIMITED = """
import sys, json, resource, signal, warnings
sys.path.insert(0, {tests!r})
from features import bar_count
from jules_cache import FeatureStore, StoreError, CacheWriteWarning
from jules_cache.synthetic import make_ticks, symbol_names, ticks_for
ticks = ticks_for(make_ticks(symbol_names(3), 60_000, seed=11), "AAPL")
store = FeatureStore({root!r}, strict={strict!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
expected = bar_count(ticks.lazy(), {{"freq": "1s"}}).collect()
try:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = store.fetch("AAPL", ticks, {{"freq": "1s"}}, bar_count, name="bars")
    print(json.dumps({{"stored": result.stored, "equal": result.value.equals(expected),
                      "warnings": [str(w.message) for w in caught]}}))
except StoreError as exc:
    print(json.dumps({{"error": str(exc)}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("strict", [False, True], ids=["best-effort", "strict"])
def test_file_too_large_returns_the_result_or_raises_when_strict(root, strict):
    FeatureStore(root).close()
    script = LIMITED.format(tests=str(TESTS), root=str(root), strict=strict)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    if strict:
        assert "could not store" in outcome["error"] and "Free disk space" in outcome["error"]
    else:
        assert outcome["stored"] is False and outcome["equal"] is True
        assert any("could not store" in w for w in outcome["warnings"])
    assert list((root / "tmp").iterdir()) == []  # nothing half-written remains
    assert not list((root / "objects").rglob("*.parquet"))
    with FeatureStore(root) as store:
        report = store.check(grace_seconds=0)
        assert report.consistent and {p.kind for p in report.problems} <= LEFTOVER_KINDS


READ_ONLY = """
import sys, json, warnings
sys.path.insert(0, {tests!r})
from features import bar_count
from jules_cache import FeatureStore, StoreError, JulesCacheError
from jules_cache.synthetic import make_ticks, symbol_names, ticks_for
ticks = ticks_for(make_ticks(symbol_names(3), 60_000, seed=11), "AAPL")
out = {{}}
try:
    store = FeatureStore({root!r}, strict={strict!r})
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        hit = store.fetch("AAPL", ticks, {{"freq": "5m"}}, bar_count, name="bars")
        miss = store.fetch("AAPL", ticks, {{"freq": "1m"}}, bar_count, name="bars")
    out = {{"hit": hit.hit, "stored": miss.stored, "rows": miss.value.height}}
except JulesCacheError as exc:
    out = {{"error": type(exc).__name__ + ": " + str(exc)}}
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("strict", [False, True], ids=["best-effort", "strict"])
def test_a_read_only_root(root, aapl, tmp_path, strict):
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare(1) and mount(8) for a private read-only bind mount")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create a mount namespace here (unprivileged): no read-only mount")
    with FeatureStore(root) as store:
        store.fetch("AAPL", aapl, {"freq": "5m"}, bar_count, name="bars")
    before = sorted(str(p) for p in root.rglob("*"))
    ro = tmp_path / "ro"
    ro.mkdir()
    script = READ_ONLY.format(tests=str(TESTS), root=str(ro), strict=strict)
    shell = (
        f"mount --bind {root} {ro} && mount -o remount,bind,ro {ro} && "
        f"exec {sys.executable} -c {_quote(script)}"
    )
    done = subprocess.run(["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    # Locks live in the root, so a read-only root is refused up front with a clear error
    # (InvalidInput) rather than failing half-way through a call.
    assert outcome["error"].startswith("InvalidInput"), outcome
    assert "read-only" in outcome["error"] and str(ro) in outcome["error"]
    assert sorted(str(p) for p in root.rglob("*")) == before  # nothing written anywhere


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@pytest.mark.slow
def test_crash_hook_is_inert_without_the_variable_or_with_an_unknown_stage(root):
    assert run_put(root, CONFIG, crash_at="no-such-stage").returncode == 0
    done = run_put(root, CONFIG)
    assert done.returncode == 0 and json.loads(done.stdout)["hit"] is True


# -- bad input not covered by test_store.py ------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"lock_timeout": "10"}, "lock_timeout must be a number, not str"),
        ({"lock_timeout": True}, "lock_timeout must be a number, not bool"),
        ({"lock_timeout": float("nan")}, "lock_timeout must be >= 0"),
        ({"hit_flush_seconds": None}, "hit_flush_seconds must be a number"),
        ({"tick_data_threshold_mb": float("inf")}, "tick_data_threshold_mb must be below"),
        ({"strict": "yes"}, "strict must be True or False"),
    ],
)
def test_absurd_settings_are_refused_and_create_nothing(tmp_path, setting, message):
    with pytest.raises(InvalidInput, match=message):
        FeatureStore(tmp_path / "cache", **setting)
    assert not (tmp_path / "cache").exists()


def test_a_root_whose_folders_are_files_is_refused(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    (root / "objects").write_text("a file where a folder belongs")
    with pytest.raises(UnsafePath, match="objects is not a directory"):
        FeatureStore(root)
    assert (root / "objects").read_text() == "a file where a folder belongs"
