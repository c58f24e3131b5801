"""The day-one Python API: a decorator, precise types, logging, and a read-only store.

Everything goes through the public API on real roots.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from features import bar_count

from jules_cache import FeatureStore, InvalidInput
from jules_cache.synthetic import make_ticks, ticks_for

REPO = Path(__file__).resolve().parents[2]
CONFIG = {"freq": "1m"}


def make_bars(ticks: pl.LazyFrame, config: dict) -> pl.LazyFrame:
    """Bars per minute."""
    return bar_count(ticks, config)


# -- 12. the decorator ------------------------------------------------------------------------


def test_decorator_has_the_semantics_of_get_or_compute(store, aapl):
    calls = []

    def bars(ticks: pl.LazyFrame, config: dict) -> pl.LazyFrame:
        """Minute bars."""
        calls.append(1)
        return bar_count(ticks, config)

    original = bars
    bars = store.feature(name="bars", version="1")(bars)
    assert bars.__name__ == "bars" and bars.__doc__ == "Minute bars."
    assert bars.__wrapped__ is original and bars.compute_func is original

    first = bars("AAPL", aapl, CONFIG)
    assert isinstance(first, pl.DataFrame)
    again = bars.fetch("AAPL", aapl, CONFIG)
    assert again.hit and len(calls) == 1
    assert again.value.equals(first)
    lazy = bars("AAPL", aapl, CONFIG, lazy=True)
    assert isinstance(lazy, pl.LazyFrame) and lazy.collect().equals(first)
    # the same entry as the plain call with the original function
    plain = store.fetch("AAPL", aapl, CONFIG, original, name="bars", version="1")
    assert plain.hit and plain.key == again.key and again.feature == "bars"
    assert bars.explain("AAPL", aapl, CONFIG).cached
    assert not bars.explain("AAPL", aapl, {"freq": "5m"}).cached
    assert len(calls) == 1


def test_bare_decorator_keys_by_the_original_function(store, aapl):
    decorated = store.feature(make_bars)
    assert decorated.__wrapped__ is make_bars
    result = decorated.fetch("AAPL", aapl, CONFIG)
    assert not result.hit and result.feature == f"{__name__}.make_bars"
    plain = store.fetch("AAPL", aapl, CONFIG, make_bars)
    assert plain.hit and plain.key == result.key


def test_decorator_rejects_bad_arguments(store):
    with pytest.raises(InvalidInput, match="callable"):
        store.feature(42)
    with pytest.raises(InvalidInput, match="name"):
        store.feature(name="")


_SCRIPT = """
import sys
import polars as pl
from jules_cache import FeatureStore
from jules_cache.synthetic import make_ticks, ticks_for

store = FeatureStore(sys.argv[1])

@store.feature
def base(ticks, config):
    return ticks.select(pl.col("price").sum().alias("s"))

@store.feature(name="uses_base")
def uses_base(ticks, config):
    # refers to the decorated object: its store (root, locks) must not enter the key
    assert base.compute_func is not None
    return ticks.select(pl.len().alias("n"))

ticks = ticks_for(make_ticks(["AAPL"], 1000, seed=3), "AAPL")
print(base.fetch("AAPL", ticks, {}).key, uses_base.fetch("AAPL", ticks, {}).key)
"""


@pytest.mark.slow
def test_decorated_keys_are_the_same_in_every_process(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(_SCRIPT)
    keys = [
        subprocess.run(
            [sys.executable, str(script), str(tmp_path / root)],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        ).stdout.split()
        for root in ("one", "two")
    ]
    assert len(keys[0]) == 2 and keys[0] == keys[1]


# -- 13. types --------------------------------------------------------------------------------

_REJECTED = """
from typing import Any
import polars as pl
from jules_cache import FeatureStore

def f(ticks: pl.LazyFrame, config: Any) -> pl.LazyFrame:
    return ticks

def usage(store: FeatureStore, ticks: pl.DataFrame) -> None:
    store.get_or_compute("A", ticks, {}, f, lazy=True).height  # line 10: a LazyFrame
    store.fetch("A", ticks, {}, f).value.collect()  # line 11: a DataFrame
"""


@pytest.mark.slow
def test_mypy_strict_accepts_typed_usage_and_rejects_misuse(tmp_path):
    rejected = tmp_path / "rejected.py"
    rejected.write_text(_REJECTED)
    usage = REPO / "tests" / "typing_usage.py"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--no-error-summary",
            "--cache-dir",
            str(REPO / ".mypy_cache"),
            str(usage),
            str(rejected),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert not [e for e in errors if "typing_usage.py" in e], run.stdout
    lines = sorted(int(e.split(":")[1]) for e in errors if "rejected.py" in e)
    assert lines == [10, 11], run.stdout + run.stderr
    assert '"LazyFrame" has no attribute "height"' in run.stdout
    assert '"DataFrame" has no attribute "collect"' in run.stdout


# -- 14. logging ------------------------------------------------------------------------------

_EVENT = re.compile(
    r"^(?P<event>hit|miss|compute|publish) feature=(?P<feature>\S+) symbol=(?P<symbol>\S+) "
    r"key=(?P<key>[0-9a-f]{8}) ms=(?P<ms>\d+\.\d)$"
)


def _events(caplog) -> list[tuple[str, str, str, str]]:
    found = []
    for record in caplog.records:
        if record.name == "jules_cache" and record.levelno == logging.DEBUG:
            match = _EVENT.match(record.getMessage())
            if match:
                found.append((match["event"], match["feature"], match["symbol"], match["key"]))
    return found


def test_debug_log_has_one_line_per_miss_compute_publish_and_hit(store, aapl, caplog):
    caplog.set_level(logging.DEBUG, logger="jules_cache")
    miss = store.fetch("AAPL", aapl, CONFIG, make_bars, name="bars")
    key = miss.key[:8]
    assert _events(caplog) == [
        ("miss", "bars", "AAPL", key),
        ("compute", "bars", "AAPL", key),
        ("publish", "bars", "AAPL", key),
    ]
    caplog.clear()
    assert store.fetch("AAPL", aapl, CONFIG, make_bars, name="bars").hit
    assert _events(caplog) == [("hit", "bars", "AAPL", key)]


def test_info_log_reports_long_computes_and_gc_summaries(root, aapl, caplog):
    caplog.set_level(logging.INFO, logger="jules_cache")
    with FeatureStore(root, log_compute_seconds=0.0) as store:
        store.fetch("AAPL", aapl, CONFIG, make_bars, name="bars")
        store.gc(retention_weeks=0)
    messages = [r.getMessage() for r in caplog.records if r.name == "jules_cache"]
    assert not [r for r in caplog.records if r.levelno < logging.INFO]  # DEBUG stays off
    assert any(
        re.match(r"^long compute feature=bars symbol=AAPL key=\w{8} s=", m) for m in messages
    )
    assert any(
        m.startswith("gc ") and "deleted 1 files and rows (expired 1)" in m for m in messages
    ), messages
    with pytest.raises(InvalidInput, match="log_compute_seconds"):
        FeatureStore(root, log_compute_seconds=-1)


# -- 15. a read-only store --------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(folder: Path):
    folder.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(folder)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {exc}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _sizes_and_mtimes(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of everything under ``folder``: a rewrite with the same bytes shows."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


def test_read_only_store_serves_a_read_only_mount_and_writes_nothing(tmp_path):
    ticks = ticks_for(make_ticks(["AAPL"], 5000, seed=5), "AAPL")
    with _tmpfs(tmp_path / "mnt") as mount:
        root = mount / "cache"
        with FeatureStore(root) as writer:
            stored = writer.fetch("AAPL", ticks, CONFIG, make_bars, name="bars")
            writer.fetch("AAPL", ticks, CONFIG, make_bars, name="bars")
            hits_before = writer.stats().hits
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        before = _sizes_and_mtimes(mount)

        store = FeatureStore(root, read_only=True)
        assert store.read_only
        hit = store.fetch("AAPL", ticks, CONFIG, make_bars, name="bars")
        assert hit.hit and hit.key == stored.key and hit.value.equals(stored.value)
        lazy = store.get_or_compute("AAPL", ticks, CONFIG, make_bars, name="bars", lazy=True)
        assert lazy.collect().equals(stored.value)
        assert [e.key for e in store.entries()] == [stored.key]
        assert store.check().consistent
        assert store.entry(stored.key[:8]).key == stored.key
        assert store.explain("AAPL", ticks, CONFIG, make_bars, name="bars").cached
        assert store.stats().hits == hits_before  # its own hits are never written
        rows = store.sql("SELECT count(*) AS n FROM bars")
        assert rows["n"][0] == stored.value.height
        # A miss computes and returns the value without storing it (and without a warning).
        miss = store.fetch("AAPL", ticks, {"freq": "5m"}, make_bars, name="bars")
        assert not miss.hit and not miss.stored and miss.value.height > 0
        assert not store.fetch("AAPL", ticks, {"freq": "5m"}, make_bars, name="bars").hit
        for change in (
            store.gc,
            lambda: store.check(fix=True),
            lambda: store.remove(all=True),
            store.refresh_views,
            lambda: store.verify(fix=True),
        ):
            with pytest.raises(InvalidInput, match="read-only"):
                change()
        store.flush()
        store.close()
        assert _sizes_and_mtimes(mount) == before


def test_read_only_store_on_a_writable_root_creates_no_file(root, aapl):
    with FeatureStore(root) as writer:
        stored = writer.fetch("AAPL", aapl, CONFIG, make_bars, name="bars")
        lock = root / "manifest.lock"
    for leftover in (root / "locks").iterdir():
        leftover.unlink()
    before = _sizes_and_mtimes(root)
    with FeatureStore(root, read_only=True) as store:
        assert store.fetch("AAPL", aapl, CONFIG, make_bars, name="bars").hit
        assert not store.fetch("AAPL", aapl, {"freq": "5m"}, make_bars, name="bars").stored
        store.stats()
    assert _sizes_and_mtimes(root) == before and lock.exists()
    with FeatureStore(root) as writer:  # the read-only hits were never flushed
        assert writer.entry(stored.key).hit_count == 0


def test_read_only_store_needs_an_existing_cache(tmp_path):
    missing = tmp_path / "typo"
    with pytest.raises(InvalidInput, match="no jules_cache at"):
        FeatureStore(missing, read_only=True)
    assert not missing.exists()
    with pytest.raises(InvalidInput, match="read_only"):
        FeatureStore(tmp_path, read_only="yes")


def test_read_only_store_refuses_a_manifest_it_would_have_to_migrate(root):
    import duckdb

    from jules_cache import ManifestError

    FeatureStore(root).close()
    con = duckdb.connect(str(root / "manifest.duckdb"))
    con.execute(
        "DELETE FROM schema_version WHERE version = (SELECT max(version) FROM schema_version)"
    )
    con.close()
    before = _sizes_and_mtimes(root)
    with pytest.raises(
        ManifestError, match=r"schema version .* open the root once with a writable"
    ):
        FeatureStore(root, read_only=True)
    assert _sizes_and_mtimes(root) == before
