"""Polars frames are fingerprinted from Polars' own buffers: same digest as the Arrow route."""

from __future__ import annotations

import itertools

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jules_cache.errors import FingerprintError
from jules_cache.fingerprints.data import as_arrow, fingerprint_table

SETTINGS = settings(deadline=None, max_examples=40)
TEXTS = st.one_of(st.none(), st.sampled_from(["", "a", "b", "AAPL", "MSFT", "é", "zz" * 9]))


def fast(df: pl.DataFrame, **kw) -> str:
    return fingerprint_table(as_arrow(df), **kw)


def via_arrow(df: pl.DataFrame) -> str:
    """The digest as computed before: the whole frame through DataFrame.to_arrow()."""
    return fingerprint_table(df.to_arrow())


def chunked(df: pl.DataFrame, cuts: list[int]) -> pl.DataFrame:
    bounds = sorted({0, df.height, *(c % (df.height + 1) for c in cuts)})
    parts = [df.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    return pl.concat(parts, rechunk=False) if len(parts) > 1 else df


@SETTINGS
@given(
    st.lists(TEXTS, min_size=1, max_size=50),
    st.lists(st.integers(0, 60), max_size=4),
    st.lists(st.text(max_size=4), max_size=20),
)
def test_categorical_and_string_columns_digest_as_via_arrow(values, cuts, noise):
    # Other categoricals in the process occupy codes: the column's codes are then sparse.
    pl.Series(noise, dtype=pl.Categorical)
    df = pl.DataFrame(
        {
            "c": pl.Series(values, dtype=pl.Categorical),
            "s": pl.Series(values, dtype=pl.String),
            "b": pl.Series([v.encode() if v is not None else None for v in values]),
            "l": pl.Series([[v, v] for v in values], dtype=pl.List(pl.Categorical)),
            "x": pl.Series(range(len(values)), dtype=pl.Int32),
        }
    )
    expected = via_arrow(df)
    assert fast(df) == expected
    assert fast(chunked(df, cuts)) == expected
    assert fast(chunked(df, cuts), threads=1) == expected
    table = pa.table(
        {
            "c": pa.array(values, pa.string()).dictionary_encode(),
            "s": pa.array(values, pa.string()),
            "b": df["b"].to_arrow(),
            "l": df["l"].to_arrow(),
            "x": pa.array(range(len(values)), pa.int32()),
        }
    )
    assert fingerprint_table(table) == expected


@SETTINGS
@given(st.lists(st.sampled_from(["lo", "mid", "hi", None]), min_size=1, max_size=40))
def test_enums_and_narrow_categoricals_digest_as_via_arrow(values):
    small = pl.Categorical(pl.Categories.random(physical=pl.UInt8))
    df = pl.DataFrame(
        {
            "e": pl.Series(values, dtype=pl.Enum(["hi", "lo", "mid", "unused"])),
            "u8": pl.Series(values, dtype=small),
        }
    )
    assert fast(df) == via_arrow(df)
    assert fast(chunked(df, [1, 7])) == via_arrow(df)


def test_a_categorical_column_sliced_from_a_larger_one():
    base = pl.Series(["x", "y", None, "z", "y"] * 1000, dtype=pl.Categorical)
    df = pl.DataFrame({"c": base}).slice(1234, 2000)
    rebuilt = pl.DataFrame({"c": pl.Series(df["c"].to_list(), dtype=pl.Categorical)})
    assert fast(df) == via_arrow(df) == via_arrow(rebuilt)


def test_large_categorical_crossing_leaves_with_sparse_codes():
    pl.Series([f"other{i}" for i in range(300)], dtype=pl.Categorical)
    n = 2_200_000  # three leaves of 2**20 rows
    symbols = pl.Series(["b", "a", None, "c"] * (n // 4), dtype=pl.Categorical)
    df = chunked(pl.DataFrame({"s": symbols}), [5, 1_048_580])
    assert fast(df) == via_arrow(df)


def test_unsupported_polars_columns_are_still_refused_by_name():
    with pytest.raises(FingerprintError, match="'big'"):
        fast(pl.DataFrame({"ok": [1], "big": pl.Series([1], dtype=pl.Int128)}))
