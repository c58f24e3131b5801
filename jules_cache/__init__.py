"""jules_cache: a DuckDB-backed cache that makes feature computation free the second time.

from jules_cache import FeatureStore
store = FeatureStore("data/feature_cache")
bars = store.get_or_compute("AAPL", ticks, {"freq": "1m"}, make_bars)
"""

from .errors import (
    CacheWriteWarning,
    CorruptEntry,
    FingerprintError,
    InvalidInput,
    JulesCacheError,
    LockTimeout,
    ManifestError,
    StoreError,
    UnsafePath,
)
from .models import CacheResult, Entry, FeatureStats, Stats
from .store import FeatureStore
from .version import __version__

__all__ = [
    "CacheResult",
    "CacheWriteWarning",
    "CorruptEntry",
    "Entry",
    "FeatureStats",
    "FeatureStore",
    "FingerprintError",
    "InvalidInput",
    "JulesCacheError",
    "LockTimeout",
    "ManifestError",
    "Stats",
    "StoreError",
    "UnsafePath",
    "__version__",
]
