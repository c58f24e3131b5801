"""Cache statistics in the Prometheus text exposition format (node-exporter textfile collector).

Names carry their unit and type suffix (``_bytes``, ``_seconds``, ``_total``). The ``_total``
series are Prometheus counters: read from the cumulative call counters, they never go down
(rm and GC leave them); per-symbol series are capped (``FeatureStore.stats(symbol_limit=)``).
The file is written to a temp name and renamed, so the collector never reads a half-written
file.
"""

from __future__ import annotations

from pathlib import Path

from jules_cache._atomic_write import write_atomically
from jules_cache.models import Stats


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(stats: Stats) -> str:
    """Render ``stats`` as Prometheus exposition text, one family per metric."""
    root = _escape(stats.root)
    families: list[tuple[str, str, str, list[tuple[str, float]]]] = [
        (
            "jules_cache_entries",
            "gauge",
            "Cached results.",
            [(f'feature="{_escape(f.feature)}"', f.entries) for f in stats.features],
        ),
        (
            "jules_cache_size_bytes",
            "gauge",
            "Bytes of cached result files.",
            [(f'feature="{_escape(f.feature)}"', f.bytes) for f in stats.features],
        ),
        (
            "jules_cache_hits_total",
            "counter",
            "Calls served from the cache, since the cache was created.",
            [(f'feature="{_escape(f.feature)}"', f.hits) for f in stats.features],
        ),
        (
            "jules_cache_misses_total",
            "counter",
            "Calls that computed (and stored) their result, since the cache was created.",
            [(f'feature="{_escape(f.feature)}"', f.misses) for f in stats.features],
        ),
        (
            "jules_cache_compute_seconds_saved_total",
            "counter",
            "Compute time hits did not spend (each hit x its entry's compute seconds).",
            [(f'feature="{_escape(f.feature)}"', f.seconds_saved) for f in stats.features],
        ),
        (
            "jules_cache_symbol_hits_total",
            "counter",
            "Calls served from the cache per symbol (symbols beyond the cap: __other__).",
            [(f'symbol="{_escape(s.symbol)}"', s.hits) for s in stats.symbols],
        ),
        (
            "jules_cache_symbol_misses_total",
            "counter",
            "Calls that computed per symbol (symbols beyond the cap: __other__).",
            [(f'symbol="{_escape(s.symbol)}"', s.misses) for s in stats.symbols],
        ),
        (
            "jules_cache_hit_ratio",
            "gauge",
            "Hits / (hits + misses) since the cache was created (0 before any call).",
            [("", stats.hit_rate)],
        ),
        (
            "jules_cache_store_failures_total",
            "counter",
            "Results computed but not stored (disk full, permissions).",
            [("", stats.store_failures)],
        ),
    ]
    lines = []
    for name, kind, help_text, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = f'root="{root}"' + (f",{labels}" if labels else "")
            lines.append(f"{name}{{{label_text}}} {_number(value)}")
    return "\n".join(lines) + "\n"


def write_prometheus(stats: Stats, path: Path) -> None:
    """Write the exposition text to ``path`` atomically (temp file + rename).

    Raises ``InvalidInput`` if ``path``'s folder is missing or not writable.
    """
    text = prometheus_text(stats)
    write_atomically(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
