"""Fingerprints of files on disk: decoded content, raw bytes, Parquet footer, and a stat memo key.

* :func:`hash_parquet_content` is the default mode: the Parquet files are decoded by Polars (the
  reader ``pl.read_parquet``/``pl.scan_parquet`` use) in its streaming batches and fed to a
  :class:`~jules_cache.fingerprints.data.TableDigest`, so a path keys exactly as the same table
  passed as a frame does: a path, ``read_parquet`` and ``scan_parquet`` are one key.
  Memory stays bounded by a few batches and leaves, whatever the file size.
* :func:`hash_file_bytes`: xxh3_128 over the raw bytes, streamed through one reused 8 MiB
  buffer (``readinto``; bounded memory, never decodes); ~5 GB/s from page cache
  (docs/benchmarks.md, "Fingerprints").
* :func:`parquet_footer_digest` is the opt-in, weaker ``footer`` mode: the footer bytes plus the
  file size. A one-cent change to one price can leave a Parquet footer byte-identical
  (measured: docs/guide/keys.md), so this is NOT proof of identity — use it only where the
  caller accepts that.
* :func:`stat_signature` is the key of the ``stat → content hash`` memo: if path, size, mtime,
  inode and ctime are all unchanged, the content hash is reused: a path resolution and one
  ``stat()`` (tens of µs) instead of re-reading the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import xxhash

from jules_cache.errors import InvalidInput
from jules_cache.fingerprints.keys import FILE_BYTES_SCHEME, FOOTER_SCHEME

if TYPE_CHECKING:
    from jules_cache.fingerprints.data import TableDigest

BLOCK_SIZE = 8 << 20
PARQUET_MAGIC = b"PAR1"  # the first and last 4 bytes of every Parquet file


def hash_file_bytes(path: str | os.PathLike[str]) -> str:
    """Return ``'xxh3_128:<32 hex>'`` of the file's raw bytes. Raises OSError if unreadable."""
    h = xxhash.xxh3_128()
    buf = bytearray(BLOCK_SIZE)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            h.update(view[:n])
    return f"{FILE_BYTES_SCHEME}:{h.hexdigest()}"


def parquet_footer_digest(path: str | os.PathLike[str]) -> str:
    """Return ``'parquet-footer:xxh3_128:<32 hex>'`` of the footer bytes and the file size.

    Raises InvalidInput if the file is not Parquet (missing ``PAR1`` magic or a bad footer
    length), OSError if it cannot be read.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 12:
            raise InvalidInput(f"{path} is not a Parquet file ({size} bytes)")
        f.seek(size - 8)
        tail = f.read(8)
        footer_len = int.from_bytes(tail[:4], "little")
        if tail[4:] != PARQUET_MAGIC or footer_len > size - 12:
            raise InvalidInput(f"{path} is not a Parquet file (bad footer)")
        f.seek(size - 8 - footer_len)
        footer = f.read(footer_len)
    h = xxhash.xxh3_128()
    h.update(size.to_bytes(8, "little"))
    h.update(footer)
    h.update(tail)
    return f"{FOOTER_SCHEME}:{h.hexdigest()}"


def stat_signature(path: str | os.PathLike[str]) -> tuple[str, int, int, int, int]:
    """Return ``(resolved path, size, mtime_ns, inode, ctime_ns)`` of ``path`` (follows links).

    Raises OSError (e.g. FileNotFoundError) if the file does not exist.
    """
    resolved = Path(path).resolve()
    st = os.stat(resolved)
    return (str(resolved), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


@dataclass(frozen=True)
class ContentDigests:
    """The content digest of a list of Parquet files read as one table, and of each file."""

    digest: str  # equal to fingerprint_table(as_arrow(pl.read_parquet(paths)))
    files: tuple[str, ...]  # one per path, in order

    def to_text(self) -> str:
        return json.dumps([self.digest, list(self.files)])

    @classmethod
    def from_text(cls, text: str) -> ContentDigests:
        digest, files = json.loads(text)
        return cls(str(digest), tuple(str(f) for f in files))


def scan_parquet_files(paths: Sequence[str | os.PathLike[str]]) -> pl.LazyFrame:
    """Scan exactly ``paths``, in order: the one way Parquet inputs are opened, for keying and
    for computing alike.

    ``glob=False``: Polars otherwise expands ``*``, ``?`` and ``[...]`` in a path, so a file
    named ``ticks_?.parquet`` would also read ``ticks_1.parquet``, which the stat memo never
    watches (an edit to it would then be a stale hit).
    """
    return pl.scan_parquet([Path(p) for p in paths], glob=False)


def hash_parquet_content(
    paths: Sequence[str | os.PathLike[str]], *, threads: int | None = None
) -> ContentDigests:
    """Return the content digests of ``paths`` decoded in order, as one table and per file.

    Decoded with ``pl.scan_parquet(path).collect_batches()``: the reader and types of
    ``pl.read_parquet``, one row group's worth of rows at a time, decoding on Polars' threads
    while earlier leaves hash on ours (``threads`` as in ``fingerprint_table``). Raises
    InvalidInput naming the file if Polars cannot decode it, FingerprintError for a column type
    without an exact fingerprint or files whose columns differ.
    """
    from jules_cache.fingerprints.data import TableDigest, as_arrow

    whole: TableDigest | None = None
    per_file = []
    for path in paths:
        try:
            scan = scan_parquet_files([path])
            schema = as_arrow(pl.DataFrame(schema=scan.collect_schema())).schema
            whole = whole or TableDigest(schema, threads=threads)
            alone = TableDigest(schema, threads=threads) if len(paths) > 1 else None
            for batch in scan.collect_batches():
                table = as_arrow(batch)
                whole.update(table)
                if alone is not None:
                    alone.update(table)
        # A Rust panic on a damaged file surfaces as PanicException (a BaseException).
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError) as exc:
            raise InvalidInput(
                f"data file {path} cannot be decoded as Parquet ({type(exc).__name__}: {exc}); "
                "pass a complete, readable Parquet file"
            ) from exc
        per_file.append(alone.hexdigest() if alone is not None else "")
    if whole is None:
        raise InvalidInput("data is an empty list of paths; pass at least one Parquet file")
    digest = whole.hexdigest()
    return ContentDigests(digest, tuple(f or digest for f in per_file))
