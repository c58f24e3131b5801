"""Fingerprints of files on disk: exact content hash, Parquet footer digest, and a stat memo key.

* :func:`hash_file_bytes` is the exact mode: xxh3_128 over the raw bytes, streamed through one
  reused 8 MiB buffer (``readinto``; bounded memory, never decodes). From page cache it runs at
  memory speed: ~5 GB/s measured for compressed Parquet (docs/benchmarks.md, "Fingerprints").
* :func:`parquet_footer_digest` is the opt-in, weaker ``footer`` mode: the footer bytes plus the
  file size. A one-cent change to one price can leave a Parquet footer byte-identical
  (measured: docs/guide/keys.md), so this is NOT proof of identity — use it only where the
  caller accepts that.
* :func:`stat_signature` is the key of the ``stat → content hash`` memo: if path, size, mtime,
  inode and ctime are all unchanged, the content hash is reused: a path resolution and one
  ``stat()`` (tens of µs) instead of re-reading the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import xxhash

from jules_cache.errors import InvalidInput
from jules_cache.fingerprints.keys import FILE_BYTES_SCHEME, FOOTER_SCHEME

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
