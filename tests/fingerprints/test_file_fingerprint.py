"""File fingerprints: exact byte hash, Parquet footer digest, stat memo key."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash

from jules_cache.errors import InvalidInput
from jules_cache.fingerprints.files import hash_file_bytes, parquet_footer_digest, stat_signature


def test_hash_file_bytes_matches_one_shot_hash_across_blocks(tmp_path):
    path = tmp_path / "blob"
    data = os.urandom((8 << 20) + 12345)  # crosses a block boundary
    path.write_bytes(data)
    assert hash_file_bytes(path) == f"xxh3_128:{xxhash.xxh3_128(data).hexdigest()}"
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert hash_file_bytes(path) != f"xxh3_128:{xxhash.xxh3_128(data).hexdigest()}"
    (tmp_path / "empty").write_bytes(b"")
    assert hash_file_bytes(tmp_path / "empty") == f"xxh3_128:{xxhash.xxh3_128(b'').hexdigest()}"


def test_parquet_footer_digest(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), path)
    first = parquet_footer_digest(path)
    assert first == parquet_footer_digest(path)
    pq.write_table(pa.table({"y": [1, 2, 3]}), path)
    assert parquet_footer_digest(path) != first
    (tmp_path / "not.parquet").write_bytes(b"hello world, not parquet")
    with pytest.raises(InvalidInput):
        parquet_footer_digest(tmp_path / "not.parquet")


def test_stat_signature_resolves_and_tracks_changes(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    monkeypatch.chdir(tmp_path)
    sig = stat_signature("f")
    assert sig[0] == str(path.resolve())
    assert sig == stat_signature(path)
    os.utime(path, ns=(1, 1))
    assert stat_signature(path) != sig
    with pytest.raises(FileNotFoundError):
        stat_signature(tmp_path / "missing")
