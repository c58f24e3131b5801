"""Storage errors become the package's own at one boundary, the storage seam: above it (the
façade, the CLI) only ``JulesCacheError`` is caught, and a compute error is never taken for a
storage one."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import polars as pl
import pytest
from features import bar_count
from helpers import local_backend

from jules_cache import FeatureStore, StoreError
from jules_cache.engine.backend import _TRANSLATED, Backend
from jules_cache.engine.local import LocalBackend

PACKAGE = Path(__file__).resolve().parents[2] / "jules_cache"
FOREIGN = ("OSError", "duckdb", "polars", "pl.exceptions", "pyarrow", "psycopg", "botocore")


def _caught_names(path: Path) -> list[str]:
    """The source text of every ``except`` clause's type in ``path``."""
    tree = ast.parse(path.read_text())
    return [
        ast.unparse(node.type)
        for node in ast.walk(tree)
        if isinstance(node, ast.ExceptHandler) and node.type is not None
    ]


def test_the_facade_catches_only_the_packages_errors():
    caught = _caught_names(PACKAGE / "store.py")
    assert caught, "store.py catches nothing?"
    foreign = [name for name in caught if any(f in name for f in FOREIGN)]
    assert foreign == []
    assert "store_errors" not in (PACKAGE / "store.py").read_text()
    assert not hasattr(Backend, "store_errors")


@pytest.mark.parametrize("backend_class", ["local", "shared"])
def test_every_seam_method_of_every_backend_translates_foreign_errors(backend_class):
    if backend_class == "shared":
        pytest.importorskip("psycopg")
        from jules_cache.engine.shared import SharedBackend as cls
    else:
        cls = LocalBackend
    for name in _TRANSLATED:
        method = getattr(cls, name)
        if method is Backend.__dict__.get(name):
            continue  # the base's own: it calls the backend's translated methods
        assert hasattr(method, "__wrapped__"), f"{cls.__name__}.{name} is not translated"


def test_a_file_system_error_in_a_miss_is_a_store_error_with_its_cause_and_fix(root, aapl):
    with FeatureStore(root, strict=True) as store:
        temp = local_backend(store).layout.tmp
        subprocess.run(["chattr", "+i", str(temp)], check=True)  # EPERM even for root
        try:
            with pytest.raises(StoreError, match="Free disk space or fix permissions") as info:
                store.fetch("AAPL", aapl, {"freq": "1m"}, bar_count)
        finally:
            subprocess.run(["chattr", "-i", str(temp)], check=True)
        translated = info.value.__cause__  # strict: the translated error is the cause
        assert isinstance(translated, StoreError)
        assert isinstance(translated.__cause__, PermissionError)
        assert "making a temp file: [Errno 1] Operation not permitted" in str(info.value)


def test_a_compute_error_under_the_key_lock_is_never_translated(root, aapl):
    def broken(frame: pl.LazyFrame, config: dict) -> pl.LazyFrame:
        raise FileNotFoundError("the feature's own missing file")  # an OSError, not storage

    with FeatureStore(root) as store, pytest.raises(FileNotFoundError, match="own missing"):
        store.fetch("AAPL", aapl, {"freq": "1m"}, broken)


def test_a_broken_lazy_plan_is_the_computes_error_not_a_store_error(root, aapl):
    def broken(frame: pl.LazyFrame, config: dict) -> pl.LazyFrame:
        return frame.select(pl.col("no_such_column"))  # fails when sunk, inside the write

    with FeatureStore(root, strict=True) as store:
        with pytest.raises(pl.exceptions.ColumnNotFoundError):
            store.fetch("AAPL", aapl, {"freq": "1m"}, broken)
        assert store.entries() == []
