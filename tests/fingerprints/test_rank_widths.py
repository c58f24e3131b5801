"""Dictionary columns hash per-row ranks in the narrowest width their distinct count allows.

The width is chosen from the count of distinct used values in a leaf (logical content), so the
same values under any dictionary layout, chunking or null placement keep one digest on both
sides of every width boundary, and a change of one row still changes it.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from jules_cache.errors import FingerprintError
from jules_cache.fingerprints.data import as_arrow, fingerprint_table


def layouts(values: list[str | None]) -> list[pa.Table]:
    plain = pa.array(values, pa.string())
    half = len(values) // 2
    per_chunk = pa.chunked_array(
        [plain.slice(0, half).dictionary_encode(), plain.slice(half).dictionary_encode()]
    )
    used = sorted({v for v in values if v is not None}, reverse=True)
    position = {v: i for i, v in enumerate(used)}
    shuffled_dictionary = pa.DictionaryArray.from_arrays(
        pa.array([None if v is None else position[v] for v in values], pa.int32()),
        pa.array(used, pa.string()),
    )
    return [
        pa.table({"c": plain.dictionary_encode()}),
        pa.table({"c": per_chunk}),
        pa.table({"c": shuffled_dictionary}),
        as_arrow(pl.DataFrame({"c": pl.Series(values, dtype=pl.Categorical)})),
    ]


@pytest.mark.parametrize("distinct", [1, 254, 255, 65534, 65535])
@pytest.mark.parametrize("with_nulls", [False, True])
def test_every_width_is_layout_free_and_sees_one_row(distinct, with_nulls):
    values: list[str | None] = [f"v{i % distinct:06d}" for i in range(max(distinct, 600))]
    if with_nulls:
        values[3] = None
    digests = {fingerprint_table(table) for table in layouts(values)}
    assert len(digests) == 1
    changed = list(values)
    changed[-1] = values[0] if values[-1] != values[0] else "other"
    assert fingerprint_table(layouts(changed)[0]) not in digests


@pytest.mark.parametrize("bad", [3, 256, 65536 + 1])
def test_an_out_of_range_dictionary_index_is_refused_not_narrowed_onto_a_value(bad):
    # The prefix scan sees every entry used, so only the rows past it hold the bad index; a
    # narrowing cast would turn 256 into 0 ("a") and match the valid table: a false hit.
    good = [i % 3 for i in range(70_000)] + [bad % 256 % 3]
    indices = pa.array([*good[:-1], bad], pa.int32())
    dictionary = pa.array(["a", "b", "c"])
    broken = pa.DictionaryArray.from_arrays(indices, dictionary, safe=False)
    with pytest.raises(FingerprintError, match="out of range"):
        fingerprint_table(pa.table({"c": broken}))


@pytest.mark.parametrize("bad", [-1, -3, 3])
def test_a_negative_or_past_the_end_index_is_refused_on_the_gather_path(bad):
    # An unsorted dictionary takes the rank gather; np.take would wrap -1 onto the last entry.
    indices = pa.array([0, 1, 2, 0, bad], pa.int8())
    broken = pa.DictionaryArray.from_arrays(indices, pa.array(["c", "b", "a"]), safe=False)
    with pytest.raises(FingerprintError, match="out of range"):
        fingerprint_table(pa.table({"c": broken}))
