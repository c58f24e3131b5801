"""Memoise input files' content digests by what ``stat()`` says about them.

A large tick file is decoded and hashed once (streaming, bounded memory); afterwards any process
on the machine finds its digest in the manifest's ``file_fingerprints`` table, keyed by the
resolved path, size, mtime_ns, inode and ctime_ns. Any rewrite of the file changes at least one
of those, so the memo can only miss, never serve a stale digest.

An input of several files is one table (its digest is not a combination of per-file digests:
leaves sit at global row positions), so it is memoised as one row: under the first file's
path and stat, with a method naming the whole path list, and a value that starts with a hash of
every file's stat. A change to any file is a miss; a rewrite replaces the row instead of adding
one.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import xxhash

from jules_cache.errors import InvalidInput
from jules_cache.fingerprints.files import stat_signature
from jules_cache.storage.manifest import Manifest, utc_now

_ATTEMPTS = 3
Signature = tuple[str, int, int, int, int]  # resolved path, size, mtime_ns, inode, ctime_ns


class FileDigestMemo:
    """Digests of input files: an in-process dict in front of the manifest table."""

    def __init__(self, manifest: Manifest | None):
        """``manifest`` None: memoise in this process only (a shared cache's hosts each see
        their own files)."""
        self._manifest = manifest
        self._known: dict[tuple[tuple[Signature, ...], str], str] = {}
        self._lock = threading.Lock()

    def get_or_compute(
        self, paths: Sequence[Path], method: str, hasher: Callable[[Sequence[Path]], str]
    ) -> str:
        """Return the digest of the files ``paths`` (in order) by ``method``, hashing only if
        no memo matches every file's stat. ``method`` names the hasher and its scheme."""
        signatures = tuple(stat_signature(path) for path in paths)
        with self._lock:
            known = self._known.get((signatures, method))
        if known is not None:
            return known
        found = self._stored(signatures, method)
        if found is None:
            digest, signatures = self._hash_stable(paths, signatures, hasher)
            self._store(signatures, method, digest)
        else:
            digest = found
        with self._lock:
            self._known[(signatures, method)] = digest
        return digest

    def _stored(self, signatures: tuple[Signature, ...], method: str) -> str | None:
        if self._manifest is None:
            return None
        with self._manifest.read() as con:
            row = self._manifest.execute(
                con, "entries.sql", "get_file_fingerprint", _params(signatures, method)
            ).fetchone()
        if row is None:
            return None
        stats, _, digest = str(row[0]).partition(" ")
        return digest if stats == _stats_hash(signatures) and digest else None

    def _store(self, signatures: tuple[Signature, ...], method: str, digest: str) -> None:
        # A read-only store, and one without a manifest, memoise in memory only.
        if self._manifest is None or self._manifest.read_only:
            return
        value = f"{_stats_hash(signatures)} {digest}"
        with self._manifest.write() as con:
            self._manifest.execute(
                con,
                "entries.sql",
                "put_file_fingerprint",
                {**_params(signatures, method), "digest": value, "computed_at": utc_now()},
            )

    @staticmethod
    def _hash_stable(
        paths: Sequence[Path],
        signatures: tuple[Signature, ...],
        hasher: Callable[[Sequence[Path]], str],
    ) -> tuple[str, tuple[Signature, ...]]:
        """Hash the files, retrying if one changed while being read (a torn read is no digest)."""
        for _ in range(_ATTEMPTS):
            digest = hasher(paths)
            after = tuple(stat_signature(path) for path in paths)
            if after == signatures:
                return digest, signatures
            signatures = after
        listed = ", ".join(str(p) for p in paths)
        raise InvalidInput(
            f"data file(s) {listed} keep changing while they are read; retry when they are complete"
        )


def _stats_hash(signatures: tuple[Signature, ...]) -> str:
    return xxhash.xxh3_128(json.dumps(signatures).encode()).hexdigest()


def _params(signatures: tuple[Signature, ...], method: str) -> dict[str, object]:
    resolved, size, mtime_ns, inode, ctime_ns = signatures[0]
    if len(signatures) > 1:  # one row per path list: a rewrite replaces it
        listed = json.dumps([s[0] for s in signatures]).encode()
        method = f"{method}:files={xxhash.xxh3_128(listed).hexdigest()}"
    return {
        "path": resolved,
        "method": method,
        "size": size,
        "mtime_ns": mtime_ns,
        "inode": inode,
        "ctime_ns": ctime_ns,
    }
