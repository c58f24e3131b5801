"""Content fingerprints of in-memory tables: exact, chunking-free, the same from every library."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jules_cache.errors import FingerprintError
from jules_cache.fingerprints.data import as_arrow, fingerprint_table
from jules_cache.fingerprints.keys import DATA_SCHEME

SETTINGS = settings(deadline=None, max_examples=40)


def fp(data, **kw) -> str:
    return fingerprint_table(as_arrow(data), **kw)


def rechunk(table: pa.Table, cuts: list[int]) -> pa.Table:
    """Return ``table`` split into chunks at the given row positions."""
    bounds = sorted({0, table.num_rows, *(c % (table.num_rows + 1) for c in cuts)})
    parts = [table.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    return pa.concat_tables(parts) if parts else table


@st.composite
def tables(draw, min_rows=0, max_rows=60):
    n = draw(st.integers(min_rows, max_rows))
    ints = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))
    floats = st.one_of(st.none(), st.floats(allow_nan=True))
    texts = st.one_of(st.none(), st.text(max_size=5))
    bools = st.one_of(st.none(), st.booleans())
    columns = {
        "i": pa.array(draw(st.lists(ints, min_size=n, max_size=n)), pa.int64()),
        "f": pa.array(draw(st.lists(floats, min_size=n, max_size=n)), pa.float64()),
        "s": pa.array(draw(st.lists(texts, min_size=n, max_size=n)), pa.string()),
        "b": pa.array(draw(st.lists(bools, min_size=n, max_size=n)), pa.bool_()),
        "c": pa.array(
            draw(st.lists(texts, min_size=n, max_size=n)), pa.string()
        ).dictionary_encode(),
        "l": pa.array(
            draw(
                st.lists(st.one_of(st.none(), st.lists(ints, max_size=3)), min_size=n, max_size=n)
            ),
            pa.list_(pa.int64()),
        ),
    }
    return pa.table(columns)


# ----------------------------------------------------------------------------- invariance


@SETTINGS
@given(tables(), st.lists(st.integers(0, 100), max_size=6))
def test_digest_ignores_chunking(table, cuts):
    assert fingerprint_table(rechunk(table, cuts)) == fingerprint_table(table)
    assert fingerprint_table(table.combine_chunks()) == fingerprint_table(table)


@SETTINGS
@given(tables(min_rows=2), st.integers(0, 100), st.integers(0, 100))
def test_sliced_tables_hash_only_their_rows(table, a, b):
    start, stop = sorted((a % table.num_rows, b % table.num_rows))
    sliced = table.slice(start, stop - start)
    rebuilt = pa.Table.from_pylist(sliced.to_pylist(), schema=table.schema)
    assert fingerprint_table(sliced) == fingerprint_table(rebuilt)


@SETTINGS
@given(tables(), st.lists(st.integers(0, 100), max_size=4))
def test_per_chunk_dictionaries_and_threads_do_not_matter(table, cuts):
    base = fingerprint_table(table)
    chunked = rechunk(table, cuts)
    per_chunk = pa.chunked_array(
        [c.dictionary_decode().dictionary_encode() for c in chunked.column("c").chunks],
        table.schema.field("c").type,
    )
    variant = chunked.set_column(4, "c", per_chunk)
    assert fingerprint_table(variant, threads=1) == base
    assert fingerprint_table(variant, threads=4) == base


def test_unused_dictionary_entries_and_index_width_do_not_matter():
    plain = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int8()), pa.array(["a", "b"]))
    padded = pa.DictionaryArray.from_arrays(
        pa.array([3, 0, 3], pa.uint32()), pa.array(["b", "z", "q", "a"])
    )
    assert fp(pa.table({"c": plain})) == fp(pa.table({"c": padded}))


def test_ranks_gathered_through_a_byte_table_or_a_wide_table_agree():
    # <= 256 dictionary entries gather ranks with bytes.translate, more with np.take.
    values = ["b", "a", None, "c", "a", "b"] * 50
    narrow = pa.array(values).dictionary_encode()
    names = ["c", "b", "a", *(f"unused{i}" for i in range(297))]
    codes = pa.array([names.index(v) if v else None for v in values], pa.int16())
    wide = pa.DictionaryArray.from_arrays(codes, pa.array(names))
    assert fp(pa.table({"c": narrow})) == fp(pa.table({"c": wide}))
    changed = pa.DictionaryArray.from_arrays(
        pa.array([*codes.to_pylist()[:-1], names.index("a")], pa.int16()), pa.array(names)
    )
    assert fp(pa.table({"c": changed})) != fp(pa.table({"c": wide}))


@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.sampled_from(["b", "a", "AAPL", "a long symbol name", "é"]), min_size=1),
    st.randoms(use_true_random=False),
)
def test_a_fully_used_dictionary_digests_as_through_the_general_route(values, rnd):
    # Every entry used, no nulls: ranked once per dictionary and remembered. An unused entry
    # sends the same values through the general route; both must give one digest, and the
    # remembered ranks must never carry one table's rows into another's.
    names = sorted(set(values))
    rnd.shuffle(names)
    codes = pa.array([names.index(v) for v in values], pa.int32())
    used = pa.DictionaryArray.from_arrays(codes, pa.array(names))
    padded = pa.DictionaryArray.from_arrays(codes, pa.array([*names, "unused"]))
    first = fp(pa.table({"c": used}))
    assert fp(pa.table({"c": padded})) == first
    assert fp(pa.table({"c": used})) == first
    if len(names) > 1:
        other = pa.DictionaryArray.from_arrays(pa.array(codes.to_pylist()[::-1]), pa.array(names))
        reversed_values = pa.array(values[::-1]).dictionary_encode()
        assert fp(pa.table({"c": other})) == fp(pa.table({"c": reversed_values}))
        assert (fp(pa.table({"c": other})) == first) == (values == values[::-1])


def test_bytes_under_null_slots_do_not_matter():
    validity = pa.py_buffer(np.packbits([1, 0, 1], bitorder="little").tobytes())
    a = pa.Array.from_buffers(pa.int64(), 3, [validity, pa.py_buffer(np.array([1, 7, 3]))])
    b = pa.Array.from_buffers(pa.int64(), 3, [validity, pa.py_buffer(np.array([1, 9, 3]))])
    offs_a = pa.py_buffer(np.array([0, 1, 4, 5], np.int32))
    offs_b = pa.py_buffer(np.array([0, 1, 1, 2], np.int32))
    s_a = pa.Array.from_buffers(pa.string(), 3, [validity, offs_a, pa.py_buffer(b"xgarz")])
    s_b = pa.Array.from_buffers(pa.string(), 3, [validity, offs_b, pa.py_buffer(b"xz")])
    assert fp(pa.table({"v": a, "s": s_a})) == fp(pa.table({"v": b, "s": s_b}))


def test_boolean_bit_offsets():
    values = [True, False, True, True, None, False, True, False, True, True, False]
    whole = pa.array(values)
    for start in range(len(values)):
        piece = whole.slice(start)
        assert fp(pa.table({"b": piece})) == fp(pa.table({"b": pa.array(values[start:])}))


# ----------------------------------------------------------------------------- one digest for all


def test_polars_arrow_and_pandas_agree():
    df = pl.DataFrame(
        {
            "ts": pl.Series([1, 2, 3], dtype=pl.Int64).cast(pl.Datetime("ns")),
            "symbol": pl.Series(["AAPL", "MSFT", "AAPL"], dtype=pl.Categorical),
            "price": [1.5, None, -0.0],
            "size": [1, 2, 3],
            "venue": ["X", None, "Y"],
            "flag": [True, False, True],
        }
    )
    arrow = pa.table(
        {
            "ts": pa.array([1, 2, 3], pa.timestamp("ns")),
            "symbol": pa.array(["AAPL", "MSFT", "AAPL"]).dictionary_encode(),
            "price": [1.5, None, -0.0],
            "size": [1, 2, 3],
            "venue": pa.array(["X", None, "Y"], pa.string_view()),
            "flag": [True, False, True],
        }
    )
    pdf = pd.DataFrame(
        {
            "ts": pd.to_datetime([1, 2, 3], unit="ns"),
            "symbol": pd.Categorical(["AAPL", "MSFT", "AAPL"]),
            "price": [1.5, np.nan, -0.0],
            "size": [1, 2, 3],
            "venue": pd.Series(["X", None, "Y"], dtype=object),
            "flag": [True, False, True],
        }
    )
    pdf["ts"] = pdf["ts"].astype("datetime64[ns]")
    assert fp(df) == fp(arrow) == fp(pdf)
    assert fp(df).startswith(DATA_SCHEME + ":")


def test_pandas_index_is_kept_unless_default():
    base = pd.DataFrame({"x": [1.0, 2.0]})
    assert fp(base) == fp(pa.table({"x": [1.0, 2.0]}))
    shifted = base.set_axis([5, 6])
    assert fp(shifted) != fp(base)
    indexed = base.set_axis(pd.DatetimeIndex(["2024-01-01", "2024-01-02"], name="ts"))
    table = as_arrow(indexed)
    assert table.column_names == ["ts", "x"]
    assert fp(indexed) != fp(indexed.set_axis(indexed.index + pd.Timedelta("1s")))


def test_pandas_mixed_objects_and_bad_names_raise():
    with pytest.raises(FingerprintError, match="pandas"):
        as_arrow(pd.DataFrame({"o": pd.Series(["a", 1, object()], dtype=object)}))
    with pytest.raises(FingerprintError, match="str"):
        as_arrow(pd.DataFrame({0: [1]}))
    with pytest.raises(FingerprintError):
        as_arrow([1, 2, 3])


# ----------------------------------------------------------------------------- sensitivity


def _variants(table: pa.Table):
    rows = table.to_pylist()
    schema = table.schema
    yield "value", pa.Table.from_pylist([{**rows[0], "i": rows[0]["i"] + 1}, *rows[1:]], schema)
    yield "null", pa.Table.from_pylist([{**rows[0], "s": None}, *rows[1:]], schema)
    yield "order", pa.Table.from_pylist([rows[1], rows[0], *rows[2:]], schema)
    yield "duplicate", pa.Table.from_pylist([*rows, rows[-1]], schema)
    yield "name", table.rename_columns(["j", *table.column_names[1:]])
    yield "column order", table.select([table.column_names[1], table.column_names[0]])
    yield "type", table.set_column(0, "i", table.column("i").cast(pa.int32()))
    yield "categorical", table.set_column(1, "s", table.column("s").dictionary_encode())


@SETTINGS
@given(st.lists(st.integers(-1000, 1000), min_size=2, max_size=30, unique=True))
def test_every_kind_of_change_changes_the_digest(ints):
    table = pa.table({"i": ints, "s": [str(i) for i in ints]})
    digests = {"base": fingerprint_table(table)}
    for kind, variant in _variants(table):
        digests[kind] = fingerprint_table(variant)
    assert len(set(digests.values())) == len(digests), digests


def test_types_units_and_timezones_are_part_of_the_digest():
    values = [1, 2]
    types = [
        pa.int64(),
        pa.uint64(),
        pa.float64(),
        pa.timestamp("ns"),
        pa.timestamp("us"),
        pa.timestamp("ns", "UTC"),
        pa.timestamp("ns", "Europe/Paris"),
        pa.duration("ns"),
        pa.date64(),
        pa.time64("ns"),
    ]
    digests = {fp(pa.table({"x": pa.array(values).cast(t)})) for t in types}
    assert len(digests) == len(types)
    empty = {fp(pa.table({"x": pa.array([], t)})) for t in types}
    assert len(empty) == len(types)


def test_ordered_categories_are_part_of_the_digest():
    a = pl.DataFrame({"e": pl.Series(["x", "y"], dtype=pl.Enum(["x", "y"]))})
    b = pl.DataFrame({"e": pl.Series(["x", "y"], dtype=pl.Enum(["y", "x"]))})
    assert fp(a) != fp(b)
    ordered = pd.DataFrame({"e": pd.Categorical(["x", "y"], categories=["x", "y"], ordered=True)})
    assert fp(ordered) == fp(a)


def test_nested_and_special_types():
    table = pa.table(
        {
            "l": pa.array([[1], None, [2, None]], pa.large_list(pa.int32())),
            "f": pa.array([[1, 2], [3, 4], None], pa.list_(pa.int8(), 2)),
            "st": pa.array([{"a": 1, "b": "x"}, None, {"a": None, "b": "y"}]),
            "m": pa.array([[("k", 1)], [], None], pa.map_(pa.string(), pa.int64())),
            "d": pa.array([1, 2, None], pa.decimal128(10, 2)),
            "n": pa.nulls(3),
            "bin": pa.array([b"a", None, b""], pa.large_binary()),
        }
    )
    base = fingerprint_table(table)
    assert fingerprint_table(rechunk(table, [1, 2])) == base
    assert fingerprint_table(table.slice(1)) == fingerprint_table(
        pa.Table.from_pylist(table.slice(1).to_pylist(), schema=table.schema)
    )
    changed = table.set_column(2, "st", pa.array([{"a": 1, "b": "x"}, None, {"a": 0, "b": "y"}]))
    assert fingerprint_table(changed) != base
    moved = table.set_column(0, "l", pa.array([[1], None, [None, 2]], pa.large_list(pa.int32())))
    assert fingerprint_table(moved) != base


def test_unsupported_types_name_the_column():
    union = pa.UnionArray.from_sparse(
        pa.array([0, 1], pa.int8()), [pa.array([1, 2]), pa.array(["a", "b"])]
    )
    with pytest.raises(FingerprintError, match="'u'"):
        fingerprint_table(pa.table({"u": union}))


def test_large_frame_change_in_row_zero():
    values = np.random.default_rng(3).standard_normal(13_000_000)  # 104 MB
    before = fingerprint_table(pa.table({"x": values}))
    values[0] += 1e-9
    assert fingerprint_table(pa.table({"x": values})) != before


@pytest.mark.slow
def test_same_digest_in_other_processes_and_hash_seeds(tmp_path):
    script = textwrap.dedent(
        """
        import multiprocessing as mp, sys
        import polars as pl
        from jules_cache.fingerprints.data import as_arrow, fingerprint_table

        def frame():
            return pl.DataFrame({"s": ["ab", "c", None, "ab"], "x": [1.0, 2.0, 3.0, 4.0],
                                 "c": pl.Series(["u", "v", "u", "w"], dtype=pl.Categorical)})

        def work(_):
            return fingerprint_table(as_arrow(frame()))

        if __name__ == "__main__":
            with mp.get_context("spawn").Pool(1) as pool:
                print(work(0), pool.map(work, [0])[0])
        """
    )
    path = tmp_path / "cross_process.py"
    path.write_text(script)
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, str(path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        outputs.update(out.stdout.split())
    assert len(outputs) == 1, outputs


def test_chunks_crossing_leaf_boundaries():
    n = 2_300_000  # more than two leaves of 2**20 rows
    rng = np.random.default_rng(5)
    symbols = pa.array(["a", "bb", "ccc"])
    table = pa.table(
        {
            "x": rng.integers(0, 10, n),
            "c": pa.DictionaryArray.from_arrays(
                pa.array(rng.integers(0, 3, n), pa.int32()), symbols
            ),
            "s": pa.array(np.array(["p", "qq"])[rng.integers(0, 2, n)]),
        }
    )
    assert fingerprint_table(rechunk(table, [1, 1_048_577, 2_000_001])) == fingerprint_table(table)
