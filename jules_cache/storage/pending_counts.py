"""Hits, misses and published rows held in memory, written to the catalog in batches.

Counting in memory keeps two statements out of every hit and publish (a publish that bumped the
miss counter and flushed hits each time cost ~4 ms more). A local root's publish also leaves its
entry row here when it follows another write closely (``PendingRow``): the result file is
already in place and carries the row in its footer, so the row only makes it visible to
listings, stats, SQL and GC, and one transaction can carry the rows of a whole burst of misses
(one manifest transaction costs ~15 ms, more than many small features take to compute). A
backend takes everything inside one of its write transactions and puts it back if that
transaction fails, so nothing is lost.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jules_cache.fingerprints.keys import KeyParts


@dataclass(frozen=True)
class PendingRow:
    """A published result whose entry row is not written yet: the row, what it was keyed from,
    and the file's identity when published (a row is written only for that very file)."""

    row: dict[str, Any]
    input_method: str
    input_files: Any  # the request's input files (``fingerprints.files``), or None
    inode: int
    size: int


@dataclass
class Counts:
    """One batch: rows to insert, hits per key (count, last access), misses, and per-key call
    counters."""

    hits: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    misses: int = 0
    # key -> [feature, symbol, hits, misses]: the cumulative per-feature/symbol counters.
    calls: dict[str, list[object]] = field(default_factory=dict)
    rows: dict[str, PendingRow] = field(default_factory=dict)  # key -> its newest publish

    def __bool__(self) -> bool:
        return bool(self.hits or self.misses or self.calls or self.rows)

    def add(self, other: Counts) -> None:
        """Add ``other``'s counts to these (a row already here is the newer publish)."""
        for key, (count, when) in other.hits.items():
            old_count, old_when = self.hits.get(key, (0, when))
            self.hits[key] = (old_count + count, max(when, old_when))
        self.misses += other.misses
        for key, pending in other.rows.items():
            self.rows.setdefault(key, pending)
        for key, (feature, symbol, hits, misses) in other.calls.items():
            row = self.calls.setdefault(key, [feature, symbol, 0, 0])
            row[2] += hits  # type: ignore[operator]
            row[3] += misses  # type: ignore[operator]


class PendingCounts:
    """The counts one store holds in memory, safe to use from many threads."""

    def __init__(self, flush_seconds: float):
        self.flush_seconds = flush_seconds
        self._counts = Counts()
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()

    def hit(self, key: str, parts: KeyParts, when: datetime) -> None:
        with self._lock:
            count, _ = self._counts.hits.get(key, (0, when))
            self._counts.hits[key] = (count + 1, when)
            self._call(key, parts, hit=True)

    def miss(self, key: str, parts: KeyParts) -> None:
        with self._lock:
            self._counts.misses += 1
            self._call(key, parts, hit=False)

    def published(self, key: str, row: PendingRow) -> None:
        with self._lock:
            self._counts.rows[key] = row

    def rows_waiting(self) -> int:
        with self._lock:
            return len(self._counts.rows)

    def _call(self, key: str, parts: KeyParts, *, hit: bool) -> None:
        calls = self._counts.calls.setdefault(key, [parts.feature, parts.symbol, 0, 0])
        calls[2 if hit else 3] += 1  # type: ignore[operator]

    def due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.flush_seconds

    def postpone(self) -> None:
        """Try again one flush interval from now (after a failed flush), not on every hit."""
        self._last_flush = time.monotonic()

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._counts)

    def take(self) -> Counts:
        """Everything counted so far; the caller writes it, or ``put_back`` if that failed."""
        with self._lock:
            taken, self._counts = self._counts, Counts()
            self._last_flush = time.monotonic()
        return taken

    def put_back(self, counts: Counts) -> None:
        with self._lock:
            self._counts.add(counts)
