"""Dictionary columns hash per-row ranks in the narrowest width their distinct count allows.

The width is chosen from the count of distinct used values in a leaf (logical content), so the
same values under any dictionary layout, chunking or null placement keep one digest on both
sides of every width boundary, and a change of one row still changes it.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

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
