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

from .errors import (
    CacheWriteWarning,
    CorruptEntry,
    FingerprintError,
    GCError,
    InvalidInput,
    JulesCacheError,
    LockTimeout,
    ManifestError,
    PartialRemoval,
    QueryError,
    StoreError,
    UnsafePath,
)
from .explain import Explanation
from .models import CacheResult, Entry, FeatureStats, Stats
from .store import FeatureStore
from .verify import VerifyReport
from .version import __version__

if TYPE_CHECKING:
    from .check import CheckReport
    from .gc import GCReport

# Reports of maintenance commands load their modules (DuckDB, views) only when asked for:
# ``import jules_cache`` is what every process serving hits pays.
_LAZY = {"CheckReport": "check", "GCReport": "gc"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jules_cache' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "CacheResult",
    "CacheWriteWarning",
    "CheckReport",
    "CorruptEntry",
    "Entry",
    "Explanation",
    "FeatureStats",
    "FeatureStore",
    "FingerprintError",
    "GCError",
    "GCReport",
    "InvalidInput",
    "JulesCacheError",
    "LockTimeout",
    "ManifestError",
    "PartialRemoval",
    "QueryError",
    "Stats",
    "StoreError",
    "UnsafePath",
    "VerifyReport",
    "__version__",
]
