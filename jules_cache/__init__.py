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

from typing import TYPE_CHECKING

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
    ManifestDamaged,
    ManifestError,
    PartialRemoval,
    QueryError,
    ServiceUnavailable,
    StoreError,
    UnsafePath,
    WorkerMismatch,
)
from jules_cache.explain import Explanation
from jules_cache.models import (
    CacheResult,
    Entry,
    FeatureStats,
    GCReport,
    Overview,
    Stats,
    SymbolStats,
)
from jules_cache.options import StoreOptions
from jules_cache.store import FeatureStore
from jules_cache.version import __version__

if TYPE_CHECKING:  # what type checkers see of the names loaded on first use
    from jules_cache.fanout import JobFailure, JobOutcome, compute_many
    from jules_cache.maintenance.check import CheckReport
    from jules_cache.maintenance.verify import VerifyReport

# Loaded on first use, so ``import jules_cache`` costs what a hit needs: the fan-out (Dask
# client code) and the maintenance reports (DuckDB plans, pyarrow) come in when asked for.
_LAZY = {
    "compute_many": "jules_cache.fanout",
    "JobFailure": "jules_cache.fanout",
    "JobOutcome": "jules_cache.fanout",
    "CheckReport": "jules_cache.maintenance.check",
    "VerifyReport": "jules_cache.maintenance.verify",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jules_cache' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "ManifestDamaged",
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
