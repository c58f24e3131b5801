"""Text and binary columns are hashed as Arrow views: exact whatever the layout of the views.

A value of at most 12 bytes lives inside its view; a longer one is a (buffer, offset) reference
into a data buffer, and those two numbers depend on how the column was built. These tests build
the same values through every layout we can reach (offsets or views, one or many data buffers,
slices, Polars string operations) and check that only the values decide the digest.
"""

from __future__ import annotations

import itertools

import polars as pl
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from jules_cache.fingerprints.data import as_arrow, fingerprint_table

SETTINGS = settings(deadline=None, max_examples=60)
# Around the 12-byte inline limit, multi-byte characters, empty strings and nulls.
TEXT = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.sampled_from(["", "a" * 12, "a" * 13, "é" * 6, "é" * 7, "AAPL", "x" * 40]),
)


def digest(column: pa.Array | pa.ChunkedArray) -> str:
    return fingerprint_table(pa.table({"s": column}))


def layouts(values: list[str | None], cut: int) -> list[pa.Array | pa.ChunkedArray]:
    """The same values as string, large_string and string_view, whole, chunked and sliced."""
    cut = cut % (len(values) + 1)
    views = pa.array(values, pa.string_view())
    padded = pa.array(["y" * 30, *values, "z" * 30], pa.string_view())
    two_buffers = pa.concat_arrays(
        [pa.array(values[:cut], pa.string_view()), pa.array(values[cut:], pa.string_view())]
    )
    return [
        pa.array(values, pa.string()),
        pa.array(values, pa.large_string()),
        views,
        padded.slice(1, len(values)),  # offsets into a buffer that holds other values too
        two_buffers,  # the values after the cut point into a second data buffer
        pa.chunked_array([views.slice(0, cut), views.slice(cut)], pa.string_view()),
        pl.Series(values, dtype=pl.String).to_arrow(),
        pa.chunked_array(pl.Series(values, dtype=pl.String)),
    ]


@SETTINGS
@given(st.lists(TEXT, min_size=1, max_size=40), st.integers(0, 40))
def test_every_layout_of_the_same_strings_has_one_digest(values, cut):
    digests = {digest(column) for column in layouts(values, cut)}
    assert len(digests) == 1


@SETTINGS
@given(st.lists(TEXT, min_size=1, max_size=30), st.integers(0, 29), st.data())
def test_any_change_to_one_value_changes_the_digest(values, position, data):
    position %= len(values)
    new = data.draw(TEXT.filter(lambda v: v != values[position]))
    changed = [*values[:position], new, *values[position + 1 :]]
    assert digest(pa.array(changed, pa.string_view())) != digest(pa.array(values, pa.string()))


@SETTINGS
@given(st.lists(TEXT.filter(lambda v: v is not None), max_size=40))
def test_small_offset_arrays_without_nulls_digest_as_their_views(values):
    # Such arrays (a dictionary's distinct values) are laid out as views in Python rather than
    # by Arrow's cast; the layout must be the one Arrow writes, value for value.
    encoded = [v.encode() for v in values]
    for offsets, views, items in (
        (pa.string(), pa.string_view(), values),
        (pa.large_string(), pa.string_view(), values),
        (pa.binary(), pa.binary_view(), encoded),
        (pa.large_binary(), pa.binary_view(), encoded),
    ):
        assert digest(pa.array(items, offsets)) == digest(pa.array(items, views)), offsets


def test_long_values_differing_after_the_view_prefix_or_by_split_differ():
    pairs = [
        (["abcdefghijklmnop"], ["abcdefghijklmnoq"]),  # same 4-byte prefix in the view
        (["a" * 12], ["a" * 13]),  # the inline limit
        (["abcdefghijklmn", "op"], ["abcdefghijklm", "nop"]),  # bytes moved between rows
        (["a" * 13 + "b" * 13, "c" * 13], ["a" * 13, "b" * 13 + "c" * 13]),  # two long rows
        (["x" * 20, "y" * 20], ["y" * 20, "x" * 20]),  # row order
        ([None], [""]),
        (["", "a" * 13], ["a" * 13, ""]),
    ]
    for left, right in pairs:
        assert digest(pa.array(left, pa.string_view())) != digest(pa.array(right, pa.string()))


def test_binary_views_and_offsets_agree_and_differ_from_text():
    values = [b"\x00" * 13, b"", None, b"abc", b"\xff" * 40]
    forms = [pa.array(values, t) for t in (pa.binary(), pa.large_binary(), pa.binary_view())]
    assert len({digest(column) for column in forms}) == 1
    text = [v.decode("latin-1") if v is not None else None for v in values]
    assert digest(pa.array(values, pa.binary())) != digest(pa.array(text, pa.string()))


def test_strings_made_by_polars_operations_digest_as_the_same_strings_built_fresh():
    # Polars writes views itself in these operations; a short value must come out zero-padded
    # (as the Arrow spec requires) or equal frames would get different keys.
    base = pl.Series(
        "s", ["abcdefghijklmnopq", "xy", None, "hello world!", "hello world!!", "", "日本語の長い"]
    )
    derived = [
        base.str.slice(0, 2),
        base.str.slice(1, 13),
        base.str.head(3),
        base.str.tail(3),
        (base + "   ").str.strip_chars(),
        base.str.replace("l", "L"),
        base.str.to_uppercase(),
        base + "z",
        base.str.split("l").list.first(),
        base.gather([6, 5, 4, 3, 1, 0, 2]),
        base.cast(pl.Categorical).cast(pl.String),
        base.str.zfill(14),
        base.str.strip_prefix("ab"),
        pl.concat([base.slice(3), base.slice(0, 3)], rechunk=False),
    ]
    for series in derived:
        fresh = pl.Series("s", series.to_list(), dtype=pl.String)
        assert fingerprint_table(as_arrow(series.to_frame())) == fingerprint_table(
            as_arrow(fresh.to_frame())
        ), series


def test_long_strings_across_leaves_and_threads():
    values = [f"{'instrument-' * (i % 3)}{i}" for i in range(3000)]
    frame = pl.DataFrame({"s": values})
    parts = [frame.slice(a, b - a) for a, b in itertools.pairwise([0, 7, 1500, 2999, 3000])]
    chunked = pl.concat(parts, rechunk=False)
    expected = fingerprint_table(pa.table({"s": pa.array(values, pa.large_string())}))
    assert fingerprint_table(as_arrow(frame)) == expected
    assert fingerprint_table(as_arrow(chunked), threads=1) == expected
    assert fingerprint_table(as_arrow(chunked), threads=2) == expected
