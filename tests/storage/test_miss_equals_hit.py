"""A miss returns, and records, exactly what its file holds, without reading the file back."""

from __future__ import annotations

import math
import uuid
from datetime import datetime

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from jules_cache.storage.result_files import describe_result, read_result

SETTINGS = settings(
    deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
INPUT = pl.DataFrame({"x": [1]})
FLOATS = st.one_of(st.none(), st.floats(allow_nan=True), st.sampled_from([0.0, -0.0, math.inf]))
TEXTS = st.one_of(st.none(), st.text(max_size=6))


def build(frame: pl.LazyFrame, config) -> pl.DataFrame | pl.LazyFrame:
    rows = config["rows"]
    built = pl.DataFrame(
        {
            "ts": pl.Series([datetime(2024, 1, 1, 9, i % 60) for i in range(len(rows))]).cast(
                pl.Datetime("ns", "America/New_York")
            ),
            "f": pl.Series([r[0] for r in rows], dtype=pl.Float64),
            "s": pl.Series([r[1] for r in rows], dtype=pl.String),
            "c": pl.Series([r[1] for r in rows], dtype=pl.Categorical),
            "l": pl.Series(
                values=[[r[0], None] if r[1] else None for r in rows], dtype=pl.List(pl.Float32)
            ),
            "st": pl.Series([{"a": r[1], "b": r[0]} for r in rows]),
            "b": pl.Series([None if r[0] is None else r[0] > 0 for r in rows], dtype=pl.Boolean),
        }
    )
    return built.lazy() if config["lazy"] else built


def assert_same_bits(a: pl.DataFrame, b: pl.DataFrame) -> None:
    """Equal schema, order and values, -0.0 vs 0.0 and NaN included (compare the raw bits)."""
    assert a.schema == b.schema
    assert_frame_equal(a, b, check_exact=True)
    bits = pl.col("f").cast(pl.Float64).to_physical().reinterpret(signed=True)
    assert a.select(bits).equals(b.select(bits))


@pytest.mark.parametrize("lazy_result", [False, True])
@SETTINGS
@given(st.lists(st.tuples(FLOATS, TEXTS), min_size=1, max_size=40))
def test_the_frame_a_miss_returns_is_the_frame_every_hit_returns(store, lazy_result, rows):
    # One store, a new key per example; a LazyFrame result is streamed into its file.
    config = {"rows": rows, "lazy": lazy_result, "example": uuid.uuid4().hex}
    miss = store.fetch("AAPL", INPUT, config, build)
    hit = store.fetch("AAPL", INPUT, config, build)
    assert not miss.hit and miss.stored and hit.hit
    assert_same_bits(miss.value, hit.value)
    assert_same_bits(miss.value, read_result(miss.path, miss.key))


@pytest.mark.parametrize("lazy_result", [False, True])
def test_the_manifest_row_is_what_describing_the_file_gives(store, lazy_result):
    def big(frame: pl.LazyFrame, config) -> pl.DataFrame | pl.LazyFrame:
        n = 1_100_000  # more than one row group
        out = pl.DataFrame(
            {
                "bar_time": pl.datetime_range(
                    datetime(2024, 1, 1), datetime(2024, 1, 31), "1s", eager=True
                )
                .head(n)
                .reverse()
                .dt.replace_time_zone("UTC"),
                "v": pl.int_range(n, eager=True),
                "s": pl.Series(["a", None, "b", "cc"] * (n // 4)),
            }
        )
        return out.lazy() if config["lazy"] else out

    got = store.fetch("AAPL", INPUT, {"lazy": lazy_result}, big)
    entry = store.entry(got.key)
    described = describe_result(got.path, None)
    assert entry is not None
    assert (entry.rows, entry.result_schema, entry.time_column) == (
        described.rows,
        described.schema_json,
        described.time_column,
    )
    assert (entry.min_time, entry.max_time) == (described.min_time, described.max_time)
    assert_frame_equal(got.value, read_result(got.path, got.key))
