"""The frozen dataclasses the store returns: entries, call results and statistics."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import polars as pl


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


class _ToDict:
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO strings) for ``--json`` output."""
        result = _plain(self)
        assert isinstance(result, dict)
        return result


@dataclass(frozen=True)
class Entry(_ToDict):
    """One cached result as the manifest records it."""

    key: str
    feature: str
    symbol: str
    path: str
    key_schema: int
    data_fingerprint: str
    data_method: str
    config_fingerprint: str
    config_json: str
    code_fingerprint: str
    code_version: str | None
    result_schema: str
    rows: int
    bytes: int
    time_column: str | None
    min_time: datetime | None
    max_time: datetime | None
    compute_seconds: float
    created_at: datetime
    last_accessed_at: datetime
    hit_count: int
    library_versions: str
    code_functions: str | None = None  # JSON {qualified name: digest}
    expires_at: datetime | None = None  # written with expire=: a miss from then on; None: never

    @property
    def config(self) -> Any:
        return json.loads(self.config_json)

    @classmethod
    def from_row(cls, columns: list[str], row: tuple[Any, ...]) -> Entry:
        return cls(**dict(zip(columns, row)))


# The value's type: ``fetch(..., lazy=False)`` gives a DataFrame, ``lazy=True`` a LazyFrame.
FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)


@dataclass(frozen=True)
class CacheResult(Generic[FrameT]):
    """What one ``fetch`` did: the value, whether it was a hit, and which entry it used.

    Generic in the value's type, so ``store.fetch(...).value.height`` type-checks:
    ``CacheResult[pl.DataFrame]`` (the default, ``lazy=False``) or
    ``CacheResult[pl.LazyFrame]`` (``lazy=True``).
    """

    value: FrameT
    hit: bool
    key: str
    path: Path
    feature: str
    symbol: str
    seconds: float  # wall time of the whole call
    stored: bool  # False when a miss could not be written to the cache (best effort)


@dataclass(frozen=True)
class FeatureStats(_ToDict):
    """One feature: its live entries and bytes, and its calls since the cache was created.

    ``hits``, ``misses`` and ``seconds_saved`` only grow: removing or collecting entries
    leaves them as they were.
    """

    feature: str
    entries: int
    bytes: int
    hits: int
    compute_seconds: float
    seconds_saved: float
    misses: int = 0


@dataclass(frozen=True)
class SymbolStats(_ToDict):
    """Calls for one symbol since the cache was created (or ``__other__``: every symbol
    beyond the label cap, see ``FeatureStore.stats``)."""

    symbol: str
    hits: int
    misses: int
    seconds_saved: float


@dataclass(frozen=True)
class Stats(_ToDict):
    """Cache-wide statistics; hits include those still waiting in memory to be flushed.

    ``entries`` and ``bytes`` describe what is stored now; ``hits``, ``misses``,
    ``seconds_saved`` and ``hit_rate`` are cumulative and never go down (rm and GC leave them).
    """

    root: str
    entries: int
    bytes: int
    hits: int
    misses: int
    store_failures: int
    seconds_saved: float
    features: tuple[FeatureStats, ...]
    symbols: tuple[SymbolStats, ...] = ()

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@dataclass(frozen=True)
class GroupOverview(_ToDict):
    """The entries of one feature and symbol."""

    feature: str
    symbol: str
    entries: int
    bytes: int
    oldest: datetime | None
    newest: datetime | None
    last_access: datetime | None


@dataclass(frozen=True)
class Overview(_ToDict):
    """What the cache holds, and the last GC run (None if GC never ran)."""

    root: str
    entries: int
    bytes: int
    oldest_created: datetime | None
    newest_created: datetime | None
    least_recent_access: datetime | None
    most_recent_access: datetime | None
    groups: tuple[GroupOverview, ...]
    last_gc: dict[str, Any] | None

    @classmethod
    def from_rows(
        cls,
        root: str,
        totals: tuple[Any, ...],
        groups: list[tuple[Any, ...]],
        last_gc: dict[str, Any] | None,
    ) -> Overview:
        """Build it from a catalog's ``overview.sql`` rows and its last ``gc_runs`` row."""
        entries, size, oldest, newest, least_recent, most_recent = totals
        return cls(
            root=root,
            entries=entries,
            bytes=size,
            oldest_created=oldest,
            newest_created=newest,
            least_recent_access=least_recent,
            most_recent_access=most_recent,
            groups=tuple(GroupOverview(*row) for row in groups),
            last_gc=last_gc,
        )


@dataclass(frozen=True)
class GCItem(_ToDict):
    """One thing GC deleted (or, in a dry run, would delete)."""

    reason: str
    path: str  # relative to the root, '/'-separated
    bytes: int
    key: str | None = None


@dataclass(frozen=True)
class ReasonTotal(_ToDict):
    reason: str
    count: int
    bytes: int


@dataclass(frozen=True)
class GCReport(_ToDict):
    """What a GC run did: per-reason totals, timings, lock holds and its ``gc_runs`` id.

    In a dry run ``totals`` and ``items`` are what a real run would delete now (a real run
    re-checks each candidate under the lock, so it can only delete the same or less).
    """

    run_id: int | None
    root: str
    dry_run: bool
    status: str  # 'success' | 'failed'
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    plan_seconds: float
    retention_weeks: float
    max_size: int | None
    grace_seconds: float
    totals: tuple[ReasonTotal, ...]
    skipped: int  # planned, but changed since the plan (hit, re-published, already gone)
    lock_holds: int
    max_lock_hold_ms: float
    errors: tuple[str, ...] = ()
    items: tuple[GCItem, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "success"

    @property
    def files(self) -> int:
        """Files and rows deleted (or to delete), all reasons together."""
        return sum(t.count for t in self.totals)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.totals)

    def total(self, reason: str) -> ReasonTotal:
        return next(t for t in self.totals if t.reason == reason)
