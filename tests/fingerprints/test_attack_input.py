"""Attacks with bad input: each must raise the library's own error naming the problem (or, for a
result that cannot be stored faithfully, return the computed value uncached with a
``CacheWriteWarning``), and leave the cache as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import time, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner
from helpers import local_backend
from polars.testing import assert_frame_equal

from jules_cache import (
    CacheWriteWarning,
    FeatureStore,
    FingerprintError,
    InvalidInput,
    StoreError,
)
from jules_cache.cli import cli
from jules_cache.fingerprints import config as config_fingerprint
from jules_cache.fingerprints.config import canonical_config
from jules_cache.query.views import entry_link
from jules_cache.storage import result_files

pytestmark = pytest.mark.attack

SMALL = pl.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]})


def identity(frame: pl.LazyFrame, config) -> pl.LazyFrame:
    return frame


def _files(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under the root with its bytes (``skip``: top-level names left out)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in skip
    }


@contextlib.contextmanager
def unchanged(store: FeatureStore, *, skip: tuple[str, ...] = ()):
    """Assert that the block leaves the root's files and the manifest rows as they were."""
    store.get_or_compute("SEED", SMALL, {"seed": True}, identity)  # a cache with something in it
    rows, files = store.entries(), _files(store.root, skip=skip)
    yield
    assert _files(store.root, skip=skip) == files
    assert store.entries() == rows


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Iterator[FeatureStore]:
    """One store for the bad inputs refused before anything is written: ``unchanged`` proves
    per test that the call changed no file and no row, so the tests can share it, and the
    check at the end proves the cache consistent. Its hits (the SEED call of each ``unchanged``)
    are never flushed mid-module (``hit_flush_seconds``), so no background write changes the
    manifest a test compares."""
    root = tmp_path_factory.mktemp("bad_input") / "cache"
    with FeatureStore(root, hit_flush_seconds=3600) as store:
        yield store
    assert store.check().consistent


# Results go through the miss path: it takes a per-key lock file and counts the failure in
# the manifest (``store_failures``), by design. Everything else must stay as it was.
RESULT_SKIP = ("locks", "manifest.duckdb")


def _no_temp_files(store: FeatureStore) -> None:
    assert not [p for p in (store.root / "tmp").rglob("*") if p.is_file()]


# ----------------------------------------------------------------------------- symbol


@pytest.mark.parametrize(
    ("symbol", "words"),
    [
        ("\ud800", "UTF-8"),
        ("AA\udcffPL", "UTF-8"),
        ("AA\x00PL", "NUL"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_a_symbol_that_is_not_storable_text_is_invalid_input(seeded, symbol, words):
    with unchanged(seeded), pytest.raises(InvalidInput, match=words) as caught:
        seeded.get_or_compute(symbol, SMALL, {}, identity)
    assert "symbol" in str(caught.value)


def test_a_feature_name_with_a_lone_surrogate_is_invalid_input(seeded):
    with unchanged(seeded), pytest.raises(InvalidInput, match=r"feature name.*UTF-8"):
        seeded.get_or_compute("AAPL", SMALL, {}, identity, name="bars\ud800")


def test_a_code_version_with_a_lone_surrogate_is_invalid_input(seeded):
    with unchanged(seeded), pytest.raises(InvalidInput, match=r"version.*UTF-8"):
        seeded.get_or_compute("AAPL", SMALL, {}, identity, version="v1\ud800")


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "number", [10**5000, -(10**5000), 1 << 10_000], ids=["1e5000", "-1e5000", "2**10000"]
)
def test_an_int_too_large_for_the_canonical_form_is_a_fingerprint_error(seeded, number):
    with unchanged(seeded), pytest.raises(FingerprintError, match=r"config\['x'\]\[1\].*bits"):
        seeded.get_or_compute("AAPL", SMALL, {"x": [0, number]}, identity)


def test_the_largest_int_fingerprints_the_same_whatever_the_interpreter_digit_limit():
    """``str(int)`` obeys ``sys.set_int_max_str_digits``: the key must not depend on it."""
    big = (1 << config_fingerprint.MAX_INT_BITS) - 1
    expected = canonical_config({"x": big})
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)  # the smallest limit Python allows
    try:
        assert canonical_config({"x": big}) == expected
    finally:
        sys.set_int_max_str_digits(old)


def _nested(depth: int, kind: str):
    value: object = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_a_config_nested_5000_deep_is_a_fingerprint_error(seeded, kind):
    with unchanged(seeded), pytest.raises(FingerprintError, match="nested deeper than") as caught:
        seeded.get_or_compute("AAPL", SMALL, {"x": _nested(5000, kind)}, identity)
    assert "config['x']" in str(caught.value)
    assert not isinstance(caught.value.__cause__, RecursionError)


def test_nesting_up_to_the_limit_works_and_one_more_level_does_not():
    limit = config_fingerprint.MAX_CONFIG_DEPTH
    assert canonical_config(_nested(limit, "dict")).digest
    with pytest.raises(FingerprintError, match="nested deeper than"):
        canonical_config(_nested(limit + 1, "dict"))


def test_a_config_containing_itself_is_a_fingerprint_error(seeded):
    loop: dict = {"a": [1]}
    loop["a"].append(loop)
    with unchanged(seeded), pytest.raises(FingerprintError, match=r"config\['a'\]\[1\]"):
        seeded.get_or_compute("AAPL", SMALL, loop, identity)


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"a": "x\ud800"}, r"config\['a'\]"),
        ({"k\udc80": 1}, r"config.keys\(\)"),
        ({"p": Path("/data/\udcff.parquet")}, r"config\['p'\]"),
    ],
)
def test_config_text_that_is_not_valid_unicode_is_a_fingerprint_error(seeded, config, path):
    with unchanged(seeded), pytest.raises(FingerprintError, match=path + ".*UTF-8"):
        seeded.get_or_compute("AAPL", SMALL, config, identity)


class _Exploding:
    def __jules_fingerprint__(self):
        raise RuntimeError("boom")


class _BadRepr:
    def __repr__(self):
        raise RuntimeError("no repr")

    def __hash__(self):
        return 1


@dataclass
class _Unset:
    window: int

    def __post_init__(self):
        del self.window  # a field that was never set: getattr raises AttributeError


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"w": [_Exploding()]}, r"config\['w'\]\[0\]"),
        ({"w": _Unset(3)}, r"config\['w'\]"),
        ({"s": {_BadRepr()}}, r"config\['s'\]"),
    ],
)
def test_any_error_while_canonicalising_names_the_path(seeded, config, path):
    with unchanged(seeded), pytest.raises(FingerprintError, match=path):
        seeded.get_or_compute("AAPL", SMALL, config, identity)


# ----------------------------------------------------------------------------- data


def _union(kind: str) -> pa.Array:
    children = [pa.array([1, 0]), pa.array(["x", "y"])]
    types = pa.array([0, 1], pa.int8())
    if kind == "dense":
        return pa.UnionArray.from_dense(types, pa.array([0, 1], pa.int32()), children)
    return pa.UnionArray.from_sparse(types, children)


@pytest.mark.parametrize(
    "column",
    [
        _union("dense"),
        _union("sparse"),
        pa.StructArray.from_arrays([_union("sparse")], ["inner"]),
        pa.array([[1], [2]], pa.list_view(pa.int64())),
        pa.RunEndEncodedArray.from_arrays([1, 2], [5, 6]),
    ],
    ids=["dense_union", "sparse_union", "union_in_struct", "list_view", "run_end_encoded"],
)
def test_an_arrow_column_of_an_unsupported_type_is_a_fingerprint_error(seeded, column):
    table = pa.table({"ok": [1, 2], "bad": column})
    with unchanged(seeded), pytest.raises(FingerprintError, match="column 'bad'"):
        seeded.get_or_compute("AAPL", table, {}, identity)


@pytest.mark.parametrize(
    "column",
    [
        pa.array([1, 2], pa.decimal256(50, 2)),
        pa.array([pa.MonthDayNano([1, 2, 3])] * 2, pa.month_day_nano_interval()),
    ],
    ids=["decimal256", "month_day_nano_interval"],
)
def test_an_arrow_column_polars_cannot_hold_is_a_fingerprint_error(seeded, column):
    """Fingerprintable, but the compute function gets Polars data: Polars must take it."""
    table = pa.table({"ok": [1, 2], "bad": column})
    with unchanged(seeded), pytest.raises(FingerprintError, match=r"column 'bad'.*Polars"):
        seeded.get_or_compute("AAPL", table, {}, identity)


def test_an_arrow_table_with_duplicate_column_names_is_invalid_input(seeded):
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["x", "x"])
    with unchanged(seeded), pytest.raises(InvalidInput, match=r"duplicate column names \['x'\]"):
        seeded.get_or_compute("AAPL", table, {}, identity)


@pytest.mark.parametrize(
    "column",
    [
        pl.Series("bad", [object(), object()], dtype=pl.Object),
        pl.Series("bad", [1, 2], dtype=pl.Int128),
    ],
    ids=["object", "int128"],
)
def test_a_polars_column_without_a_faithful_arrow_form_is_a_fingerprint_error(seeded, column):
    """pl.Object exports as the objects' 8-byte addresses: hashing those could match another
    process's different objects (a false hit). Int128 does not export at all."""
    frame = pl.DataFrame({"ok": [1, 2]}).with_columns(column)
    with unchanged(seeded), pytest.raises(FingerprintError, match="column 'bad'"):
        seeded.get_or_compute("AAPL", frame, {}, identity)


@pytest.mark.parametrize(
    ("frame", "name"),
    [
        (pd.DataFrame({"a": [1, 2]}, index=pd.Index([5, 6], name="a")), "a"),
        (pd.DataFrame({"__index_level_0__": [1, 2]}, index=[5, 6]), "__index_level_0__"),
        (
            pd.DataFrame(
                {"v": [1, 2]},
                index=pd.MultiIndex.from_tuples([(1, 2), (3, 4)], names=["k", "k"]),
            ),
            "k",
        ),
    ],
    ids=["index_named_like_a_column", "unnamed_index_vs_pyarrow_name", "duplicate_levels"],
)
def test_a_pandas_index_named_like_a_column_is_a_fingerprint_error(seeded, frame, name):
    with unchanged(seeded), pytest.raises(FingerprintError, match=f"'{name}'.*reset_index"):
        seeded.get_or_compute("AAPL", frame, {}, identity)


# ----------------------------------------------------------------------------- results


def make_int128(frame: pl.LazyFrame, config) -> pl.LazyFrame:
    return frame.with_columns(pl.col("a").cast(pl.Int128).alias("wide"))


def make_object(frame: pl.LazyFrame, config) -> pl.DataFrame:
    values = [{"id": i} for i in range(3)]
    return frame.collect().with_columns(pl.Series("obj", values, dtype=pl.Object))


@pytest.mark.parametrize("compute", [make_int128, make_object], ids=["int128", "object"])
def test_a_result_parquet_cannot_hold_is_returned_uncached(store, compute):
    with unchanged(store, skip=RESULT_SKIP):
        for _ in range(2):  # never stored, so never a hit with another dtype
            with pytest.warns(CacheWriteWarning, match="cannot be stored"):
                result = store.fetch("AAPL", SMALL, {}, compute)
            assert not result.stored and not result.hit
            expected = compute(SMALL.lazy(), {})
            expected = expected.collect() if isinstance(expected, pl.LazyFrame) else expected
            assert result.value.schema == expected.schema
            assert result.value.select(pl.exclude(pl.Object)).equals(
                expected.select(pl.exclude(pl.Object))
            )
        _no_temp_files(store)
    assert store.stats().store_failures == 2


def test_a_result_parquet_cannot_hold_raises_store_error_when_strict(root):
    with FeatureStore(root, strict=True) as strict:
        with unchanged(strict, skip=RESULT_SKIP):
            with pytest.raises(StoreError, match=r"column 'wide'.*Int128"):
                strict.get_or_compute("AAPL", SMALL, {}, make_int128)
            _no_temp_files(strict)
        assert strict.check().consistent


def make_typed(frame: pl.LazyFrame, config) -> pl.DataFrame:
    return pl.Series("x", config["values"], dtype=config["dtype"]).to_frame()


class _Dtype:
    """A Polars dtype as a config value (the config fingerprint needs a canonical form)."""

    def __init__(self, dtype):
        self.dtype = dtype

    def __jules_fingerprint__(self):
        return repr(self.dtype)


DTYPE_CASES = {
    "decimal": (pl.Decimal(12, 3), [Decimal("1.250"), None]),
    "array": (pl.Array(pl.Int16, 2), [[1, 2], None]),
    "struct": (pl.Struct({"p": pl.Float64, "q": pl.String}), [{"p": 1.5, "q": "a"}, None]),
    "categorical": (pl.Categorical(), ["b", "a"]),
    "enum": (pl.Enum(["lo", "hi"]), ["hi", "lo"]),
    "time": (pl.Time(), [time(9, 30, 0, 123), None]),
    "duration_ms": (pl.Duration("ms"), [timedelta(milliseconds=5), None]),
    "duration_ns": (pl.Duration("ns"), [timedelta(microseconds=5), None]),
    "null": (pl.Null(), [None, None]),
    "nested_list": (pl.List(pl.List(pl.Int64)), [[[1], [2, 3]], None]),
    "float16": (pl.Float16(), [1.5, None]),
    "uint128": (pl.UInt128(), [1, 2]),
    "struct_of_int128": (pl.Struct({"w": pl.Int128}), [{"w": 1}, None]),
    "list_of_object": (pl.List(pl.Object), None),  # Polars cannot build one: the sweep only
}


@pytest.mark.parametrize("case", [case for case, (_, values) in DTYPE_CASES.items() if values])
def test_every_result_dtype_round_trips_or_is_returned_uncached(store, case):
    """Never a silently different dtype: either a hit equals the computed frame (schema and
    values) or the result is refused before anything is written."""
    dtype, values = DTYPE_CASES[case]
    config = {"dtype": _Dtype(dtype), "values": values}
    computed = make_typed(SMALL.lazy(), {"dtype": dtype, "values": values})
    with pytest.warns(CacheWriteWarning) if _refused(dtype) else contextlib.nullcontext():
        first = store.fetch("AAPL", SMALL, config, _make_typed_config)
    if first.stored:
        second = store.fetch("AAPL", SMALL, config, _make_typed_config)
        assert second.hit
        assert_frame_equal(second.value, computed)
        assert_frame_equal(first.value, computed)
    else:
        assert first.value.schema == computed.schema
        assert not store.entries()
        _no_temp_files(store)


def _refused(dtype) -> bool:
    return bool(result_files.unstorable_columns(pl.Schema({"x": dtype})))


def _make_typed_config(frame: pl.LazyFrame, config) -> pl.DataFrame:
    return make_typed(frame, {"dtype": config["dtype"].dtype, "values": config["values"]})


def test_the_dtype_sweep_refuses_only_what_parquet_cannot_hold():
    refused = {
        case
        for case, (dtype, _) in DTYPE_CASES.items()
        if result_files.unstorable_columns(pl.Schema({"x": dtype}))
    }
    assert refused == {"uint128", "struct_of_int128", "list_of_object"}


def union_result(frame: pl.LazyFrame, config) -> pa.Table:
    return pa.table({"ok": [1, 2], "u": _union("sparse")})


def test_a_pyarrow_result_polars_cannot_hold_is_invalid_input(store):
    with unchanged(store, skip=RESULT_SKIP), pytest.raises(InvalidInput, match="column 'u'"):
        store.get_or_compute("AAPL", SMALL, {}, union_result)
    _no_temp_files(store)


# ----------------------------------------------------------------------------- rm


@contextlib.contextmanager
def undeletable(path: Path, mechanism: str):
    """Make ``path`` impossible to delete, even for root (tests run as root in CI).

    ``chattr``: its folder made immutable (needs CAP_LINUX_IMMUTABLE, often dropped in
    containers: then skipped). ``directory``: a non-empty directory in its place, which
    ``unlink`` refuses (EISDIR) whoever runs it. Afterwards the path can be deleted again.
    """
    if mechanism == "chattr":
        if shutil.which("chattr") is None:
            pytest.skip("chattr is not available")
        done = subprocess.run(["chattr", "+i", str(path.parent)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not allowed here: {done.stderr.strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path.parent)], check=True)
    else:
        path.unlink()
        path.mkdir()
        (path / "keep").write_bytes(b"x")
        try:
            yield
        finally:
            shutil.rmtree(path)
            path.write_bytes(b"")  # a file again, for the test to delete by hand


def _put_two(store: FeatureStore) -> list:
    for symbol in ("AAPL", "MSFT"):
        store.get_or_compute(symbol, SMALL.with_columns(pl.lit(symbol).alias("s")), {}, identity)
    return store.entries()


def _rm(store: FeatureStore, *args: str) -> str:
    """Run ``jules-cache rm``; it must fail with exit 1 and one error line; return that line."""
    result = CliRunner().invoke(cli, ["--root", str(store.root), "rm", *args])
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, OSError), result.exception  # no traceback
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


MECHANISMS = ["chattr", "directory"]


def test_rm_of_a_file_it_cannot_delete_keeps_its_entry_and_says_so_in_one_line(store):
    """The file is deleted before its row, in one transaction: a file that stays keeps its
    entry, listed and served, never an orphan a hit would bring back."""
    entries = _put_two(store)
    target = store.root / entries[0].path
    with undeletable(target, "chattr"):
        error = _rm(store, "--feature", entries[0].feature)
        assert str(target) in error and "still listed and served" in error
        assert [entry.key for entry in store.entries()] == [entries[0].key]
        assert target.exists()
        assert not (store.root / entries[1].path).exists()
    # What the message says: once the file can be deleted, the same rm finishes.
    assert [entry.key for entry in store.remove(feature=entries[0].feature)] == [entries[0].key]
    assert not target.exists() and store.check().consistent


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_rm_when_a_view_link_cannot_be_deleted_gives_no_traceback(store, mechanism):
    """Removing one entry of a feature keeps the feature's link folder, so its link is
    unlinked one by one (the whole folder goes when the feature's last entry does)."""
    gone, kept = _put_two(store)
    link = entry_link(local_backend(store).layout, gone)
    with undeletable(link, mechanism):
        error = _rm(store, "--key", gone.key)
        assert str(link) in error
        assert [entry.key for entry in store.entries()] == [kept.key]
        assert not (store.root / gone.path).exists()  # the result itself went
        assert os.path.lexists(link)
    link.unlink()  # what the message says to do (or gc, once the link can be deleted)
    assert store.check().consistent
