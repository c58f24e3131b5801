"""Plain helpers of the tests: small synthetic frames, a filled root, a counted compute
function and a byte-exact snapshot of folders.

A module of its own (not conftest.py, of which tests/shared has another) so tests and the
processes they spawn import them by one name: ``from helpers import frame``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from features import bar_count

from jules_cache import FeatureStore

if TYPE_CHECKING:
    from jules_cache.engine.local import LocalBackend
    from jules_cache.engine.shared import SharedBackend


def local_backend(store: FeatureStore) -> LocalBackend:
    """What a local store keeps inside (its layout and manifest), for tests that look or reach
    past the API; the rows it published so far are written first, as any catalog read does."""
    from jules_cache.engine.local import LocalBackend

    store._write_rows()
    backend = store._backend
    assert isinstance(backend, LocalBackend), f"{store!r} is not on a local root"
    return backend


def shared_backend(store: FeatureStore) -> SharedBackend:
    """What a shared store keeps inside (its PostgreSQL catalog and S3 objects), for tests."""
    from jules_cache.engine.shared import SharedBackend

    backend = store._backend
    assert isinstance(backend, SharedBackend), f"{store!r} is not on a shared root"
    return backend


def fill_two_entries(root: Path, aapl: pl.DataFrame) -> list[str]:
    """Fill ``root`` with two entries of feature "bars" (AAPL, MSFT; AAPL's read once more,
    one hit); return their keys."""
    with FeatureStore(root) as store:
        first = store.fetch("AAPL", aapl, {"freq": "1m"}, bar_count, name="bars")
        store.fetch("AAPL", aapl, {"freq": "1m"}, bar_count, name="bars")
        second = store.fetch("MSFT", aapl, {"freq": "1m"}, bar_count, name="bars")
    return [first.key, second.key]


def frame(i: int, rows: int = 200) -> pl.DataFrame:
    """Frame number ``i`` of a family of small inputs (another ``i``, other data, another key):
    ``ts`` one second apart, ``price`` = i + row number, ``size`` = row number."""
    start = pl.datetime(2024, 1, 1)
    return pl.DataFrame(
        {
            "ts": pl.datetime_range(start, start + pl.duration(seconds=rows - 1), "1s", eager=True),
            "price": [float(i + j) for j in range(rows)],
            "size": list(range(rows)),
        }
    )


def snapshot(*folders: Path) -> dict[str, bytes | str]:
    """Everything under ``folders``, links not followed: a file's bytes, a link's target
    ("-> target"), "dir" for a folder; to compare before and after something that must not
    touch them.

    manifest.lock holds the pid of the last process that took it exclusively (a `jules-cache`
    subprocess opening the store does): compared as a pid, not as bytes.
    """
    found: dict[str, bytes | str] = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if path.is_symlink():
                    found[str(path)] = "-> " + os.readlink(path)
                elif path.is_dir():
                    found[str(path)] = "dir"
                else:
                    data = path.read_bytes()
                    pid = name == "manifest.lock" and data.isdigit()
                    found[str(path)] = b"pid" if pid else data
    return found


class Counted:
    """A compute function (``func``, bar_count by default) that leaves one marker file in
    ``log_dir`` per real computation, so a test can count them across stores."""

    def __init__(self, log_dir: Path, func: Callable = bar_count):
        log_dir.mkdir(exist_ok=True)
        self.log_dir = log_dir
        self.func = func

    def __call__(self, ticks, config):
        (self.log_dir / uuid.uuid4().hex).touch()
        return self.func(ticks, config)

    @property
    def calls(self) -> int:
        return len(list(self.log_dir.iterdir()))


@contextlib.contextmanager
def dask_client() -> Iterator[Any]:
    """A client of a real 2-worker LocalCluster: spawned worker processes (Polars can deadlock
    after a fork), one thread each, everything on 127.0.0.1 (the dashboard too)."""
    import dask
    import distributed

    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


def naive_utc_now() -> datetime:
    """Now, as catalogs keep times: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def catalog_key(i: int) -> str:
    """The ``i``-th of distinct, valid 32-hex-digit keys."""
    return f"{i:04x}" * 8


def catalog_row(key: str, *, feature: str = "bars", symbol: str = "AAPL", **changes) -> dict:
    """A catalog row as ``result_files.entry_row`` makes one (for catalog-level tests)."""
    now = naive_utc_now()
    row = {
        "key": key,
        "feature": feature,
        "symbol": symbol,
        "path": f"objects/{key[:2]}/{key}.parquet",
        "key_schema": 3,
        "data_fingerprint": "d" * 32,
        "data_method": "frame",
        "config_fingerprint": "c" * 32,
        "config_json": '{"window": 5}',
        "code_fingerprint": "f" * 32,
        "code_version": None,
        "result_schema": '{"ts": "Datetime", "x": "Float64"}',
        "rows": 10_000,
        "bytes": 123_456,
        "time_column": "ts",
        "min_time": datetime(2024, 1, 2, 9, 30),
        "max_time": datetime(2024, 1, 2, 16, 0),
        "compute_seconds": 2.5,
        "created_at": now,
        "last_accessed_at": now,
        "library_versions": '{"polars": "2.1.0"}',
        "code_functions": '{"m.f": "abc"}',
        "expires_at": None,  # the shape of result_files.entry_row's rows
    }
    row.update(changes)
    return row


def join_all(processes: list[Any], timeout: float) -> list[int | None]:
    """Wait for each process (up to ``timeout`` each); kill those still running; return the
    exit codes (None: it was still running)."""
    for process in processes:
        process.join(timeout)
    codes = [process.exitcode for process in processes]
    for process in processes:
        if process.is_alive():
            process.kill()
    return codes


@contextlib.contextmanager
def engine_over_manifest(rows: Path) -> Iterator[None]:
    """Within the block, every ``FeatureStore`` opened runs the shared engine
    (``SharedBackend``) over a DuckDB manifest catalog kept in ``rows`` and the objects of its
    root directory: the contract's proof that the engine needs nothing of PostgreSQL. No user
    option selects this pairing (its catalog is a local root's, its publish one manifest
    transaction per miss), so it is wired here, for tests and their worker processes."""
    from jules_cache.engine.manifest_catalog import ManifestCatalog
    from jules_cache.engine.shared import SharedBackend
    from jules_cache.storage.directory_objects import DirectoryObjects
    from jules_cache.storage.layout import Layout
    from jules_cache.storage.manifest import Manifest

    def open_backend(store: FeatureStore, root: Any) -> SharedBackend:
        manifest = Manifest(Layout.create(rows), store.lock_timeout)
        manifest.open()
        directory = root.path()
        return SharedBackend(
            directory,
            catalog=ManifestCatalog(manifest),
            objects=DirectoryObjects.claimed(directory, catalog=f"manifest {rows}"),
            lock_timeout=store.lock_timeout,
            pending=store._pending,
            read_only=store.read_only,
        )

    original = FeatureStore._open_backend
    FeatureStore._open_backend = open_backend  # type: ignore[method-assign]
    try:
        yield
    finally:
        FeatureStore._open_backend = original  # type: ignore[method-assign]
