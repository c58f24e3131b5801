"""jules_cache: a DuckDB-backed cache that makes feature computation free the second time.

from jules_cache import FeatureStore
store = FeatureStore("data/feature_cache")
bars = store.get_or_compute("AAPL", ticks, {"freq": "1m"}, make_bars)

Supported platforms: Linux and macOS (POSIX ``flock`` and atomic ``rename``).
"""

try:  # before anything else: every lock of the cache is a POSIX flock
    import fcntl as _fcntl  # noqa: F401
except ImportError as _exc:
    raise ImportError(
        "jules_cache supports Linux and macOS only: it needs POSIX file locks (the fcntl "
        "module), which Windows does not have. On Windows, run it under WSL2."
    ) from _exc

from jules_cache.decorator import Feature
from jules_cache.errors import (
    CacheWriteWarning,
    CorruptEntry,
    FanoutError,
    FingerprintError,
    ForkedProcess,
    GCError,
    InvalidInput,
    JulesCacheError,
    LockTimeout,
    ManifestBusy,
    ManifestError,
    PartialRemoval,
    QueryError,
    ServiceUnavailable,
    StoreError,
    UnsafePath,
    WorkerMismatch,
)
from jules_cache.explain import Explanation
from jules_cache.fanout import JobFailure, JobOutcome, compute_many
from jules_cache.maintenance.check import CheckReport
from jules_cache.maintenance.gc import GCReport
from jules_cache.maintenance.verify import VerifyReport
from jules_cache.models import CacheResult, Entry, FeatureStats, Overview, Stats, SymbolStats
from jules_cache.options import StoreOptions
from jules_cache.store import FeatureStore
from jules_cache.version import __version__

__all__ = [
    "CacheResult",
    "CacheWriteWarning",
    "CheckReport",
    "CorruptEntry",
    "Entry",
    "Explanation",
    "FanoutError",
    "Feature",
    "FeatureStats",
    "FeatureStore",
    "FingerprintError",
    "ForkedProcess",
    "GCError",
    "GCReport",
    "InvalidInput",
    "JobFailure",
    "JobOutcome",
    "JulesCacheError",
    "LockTimeout",
    "ManifestBusy",
    "ManifestError",
    "Overview",
    "PartialRemoval",
    "QueryError",
    "ServiceUnavailable",
    "Stats",
    "StoreError",
    "StoreOptions",
    "SymbolStats",
    "UnsafePath",
    "VerifyReport",
    "WorkerMismatch",
    "__version__",
    "compute_many",
]
