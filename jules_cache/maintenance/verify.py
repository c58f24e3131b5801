"""Re-check entries keyed by Parquet footer (``fingerprint="footer"``) against their input files.

Footer mode keys a file by its footer and size only. That is fast but not proof of identity: a
one-cent price change can leave the footer byte-identical. Every footer-keyed entry records how
``stat()`` saw each input when it was keyed; an input whose size, mtime, inode or ctime has
changed while its footer digest has not was rewritten under an identical footer, so the entry may
hold features of data that no longer exists. ``verify`` lists those (stale) entries;
``store.verify(fix=True)`` removes them as ``store.remove`` does, so the next call recomputes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from jules_cache.fingerprints.files import parquet_footer_digest, stat_signature
from jules_cache.models import _ToDict


@dataclass(frozen=True)
class VerifyReport(_ToDict):
    """Footer-keyed entries checked, and those whose inputs changed under the same footer."""

    checked: int
    stale: tuple[str, ...]  # keys whose input was rewritten with an identical footer
    inputs_missing: tuple[str, ...]  # keys whose input file is gone (entry kept: still valid)
    removed: int

    @property
    def ok(self) -> bool:
        return not self.stale or self.removed == len(self.stale)


def judge_footer_inputs(rows: list[tuple[Any, ...]]) -> VerifyReport:
    """Compare each recorded input file (key, path, size, mtime_ns, inode, ctime_ns, footer
    digest) with the file as it is on this host now."""
    stale: set[str] = set()
    missing: set[str] = set()
    for key, path, size, mtime_ns, inode, ctime_ns, digest in rows:
        try:
            now = tuple(stat_signature(path))[1:]
        except FileNotFoundError:
            missing.add(key)
            continue
        if now == (size, mtime_ns, inode, ctime_ns):
            continue
        with contextlib.suppress(OSError, ValueError):
            if parquet_footer_digest(path) == digest:
                stale.add(key)
    return VerifyReport(
        checked=len({row[0] for row in rows}),
        stale=tuple(sorted(stale)),
        inputs_missing=tuple(sorted(missing - stale)),
        removed=0,
    )
