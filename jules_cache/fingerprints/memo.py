"""Memoise input files' content digests by what ``stat()`` says about them.

A large tick file is hashed once (streaming, bounded memory); afterwards any process on the
machine finds its digest in the manifest's ``file_fingerprints`` table, keyed by the resolved
path, size, mtime_ns, inode and ctime_ns. Any rewrite of the file changes at least one of those,
so the memo can only miss, never serve a stale digest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from jules_cache.errors import InvalidInput
from jules_cache.fingerprints.files import stat_signature
from jules_cache.storage.manifest import Manifest, utc_now

_ATTEMPTS = 3


class FileDigestMemo:
    """Digests of input files: an in-process dict in front of the manifest table."""

    def __init__(self, manifest: Manifest | None):
        """``manifest`` None: memoise in this process only (a shared cache's hosts each see
        their own files)."""
        self._manifest = manifest
        self._known: dict[tuple[tuple[object, ...], str], str] = {}
        self._lock = threading.Lock()

    def get_or_compute(self, path: Path, method: str, hasher: Callable[[Path], str]) -> str:
        """Return the digest of ``path`` by ``method``, hashing only if no memo matches."""
        signature = tuple(stat_signature(path))
        with self._lock:
            known = self._known.get((signature, method))
        if known is not None:
            return known
        params = self._params(signature, method)
        row = None
        if self._manifest is not None:
            with self._manifest.read() as con:
                row = self._manifest.execute(
                    con, "entries.sql", "get_file_fingerprint", params
                ).fetchone()
        if row is not None:
            digest = str(row[0])
        else:
            digest, signature = self._hash_stable(path, signature, hasher)
            params = self._params(signature, method)
        # A read-only store, and one without a manifest, memoise in memory only.
        if row is None and self._manifest is not None and not self._manifest.read_only:
            with self._manifest.write() as con:
                self._manifest.execute(
                    con,
                    "entries.sql",
                    "put_file_fingerprint",
                    {**params, "digest": digest, "computed_at": utc_now()},
                )
        with self._lock:
            self._known[(signature, method)] = digest
        return digest

    @staticmethod
    def _hash_stable(
        path: Path, signature: tuple[object, ...], hasher: Callable[[Path], str]
    ) -> tuple[str, tuple[object, ...]]:
        """Hash the file, retrying if it changed while being read (a torn read is no digest)."""
        for _ in range(_ATTEMPTS):
            digest = hasher(path)
            after = tuple(stat_signature(path))
            if after == signature:
                return digest, signature
            signature = after
        raise InvalidInput(
            f"data file {path} keeps changing while it is read; retry when it is complete"
        )

    @staticmethod
    def _params(signature: tuple[object, ...], method: str) -> dict[str, object]:
        resolved, size, mtime_ns, inode, ctime_ns = signature
        return {
            "path": str(resolved),
            "method": method,
            "size": size,
            "mtime_ns": mtime_ns,
            "inode": inode,
            "ctime_ns": ctime_ns,
        }
