"""Hits and misses counted in memory, written to the catalog in batches by the backend.

Counting in memory keeps two statements out of every hit and publish (a publish that bumped the
miss counter and flushed hits each time cost ~4 ms more). A backend takes the counts inside one
of its write transactions and puts them back if that transaction fails, so none is lost.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from jules_cache.fingerprints.keys import KeyParts


@dataclass
class Counts:
    """One batch: hits per key (count, last access), misses, and per-key call counters."""

    hits: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    misses: int = 0
    # key -> [feature, symbol, hits, misses]: the cumulative per-feature/symbol counters.
    calls: dict[str, list[object]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.hits or self.misses or self.calls)


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
            kept = self._counts
            for key, (count, when) in counts.hits.items():
                old_count, _ = kept.hits.get(key, (0, when))
                kept.hits[key] = (old_count + count, when)
            kept.misses += counts.misses
            for key, (feature, symbol, hits, misses) in counts.calls.items():
                row = kept.calls.setdefault(key, [feature, symbol, 0, 0])
                row[2] += hits  # type: ignore[operator]
                row[3] += misses  # type: ignore[operator]
