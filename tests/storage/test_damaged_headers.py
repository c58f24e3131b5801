"""Parquet's page checksum covers a page's body, not its header: a byte flipped in a header
must still fail a hit as damage (quarantined, recomputed), never crash the caller's call and
never give other values -- on an eager hit, and on a lazy one by the time it is returned."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from jules_cache.storage.result_files import READ_ERRORS, read_result, scan_result, write_result

KEY = "d" * 32
FRAME = pl.DataFrame(
    {
        "i": pl.int_range(60, eager=True),
        "f": pl.Series([None if i % 7 == 0 else i / 3 for i in range(60)]),
        "s": pl.Series(["ab", None, "cde", "ab"] * 15),  # dictionary-encoded
        "c": pl.Series(["x", "y", None] * 20, dtype=pl.Categorical),
        "l": pl.Series([[i, None] if i % 5 else None for i in range(60)], dtype=pl.List(pl.Int32)),
    }
)


def _damaged_copies(tmp_path: Path, codec: str) -> list[tuple[int, bytes]]:
    """The result file with one bit flipped (a low or a high one, alternately), for every
    byte of every column chunk."""
    path = tmp_path / "result.parquet"
    write_result(FRAME, path, {"key": KEY}, codec)
    data = path.read_bytes()
    meta = pq.read_metadata(io.BytesIO(data))
    copies = []
    for group in range(meta.num_row_groups):
        for column in range(meta.num_columns):
            chunk = meta.row_group(group).column(column)
            start = chunk.dictionary_page_offset or chunk.data_page_offset
            for position in range(start, start + chunk.total_compressed_size):
                damaged = bytearray(data)
                damaged[position] ^= 0x01 if position % 2 else 0x80
                copies.append((position, bytes(damaged)))
    return copies


@pytest.mark.parametrize("codec", ["lz4", "uncompressed"])
def test_an_eager_hit_on_a_damaged_file_is_a_read_error_or_the_right_values(tmp_path, codec):
    for position, damaged in _damaged_copies(tmp_path, codec):
        try:
            frame = read_result(io.BytesIO(damaged), KEY)
        except READ_ERRORS:
            continue
        except BaseException as exc:  # a Rust panic is no Exception: it must not escape
            pytest.fail(f"byte {position}: {type(exc).__name__} escaped: {exc}")
        assert_frame_equal(frame, FRAME)


@pytest.mark.parametrize("codec", ["lz4", "uncompressed"])
def test_a_lazy_hit_on_a_damaged_file_fails_before_it_is_returned(tmp_path, codec):
    for position, damaged in _damaged_copies(tmp_path, codec):
        path = tmp_path / f"{position}-{hash(damaged)}.parquet"  # a new file: verified anew
        path.write_bytes(damaged)
        try:
            lazy = scan_result(path, KEY)
        except READ_ERRORS:
            continue
        try:
            frame = lazy.collect()
        except BaseException as exc:
            pytest.fail(f"byte {position}: the caller's collect raised {type(exc).__name__}")
        assert_frame_equal(frame, FRAME)
