"""Cache statistics in the Prometheus text exposition format (node-exporter textfile collector).

Names carry their unit and type suffix (``_bytes``, ``_seconds``, ``_total``). The file is
written to a temp name and renamed, so the collector never reads a half-written file.
"""

from __future__ import annotations

import os
from pathlib import Path

from .models import Stats


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
            "Calls served from the cache.",
            [(f'feature="{_escape(f.feature)}"', f.hits) for f in stats.features],
        ),
        (
            "jules_cache_compute_seconds_saved_total",
            "counter",
            "Compute time hits did not spend (hits x compute seconds).",
            [(f'feature="{_escape(f.feature)}"', f.seconds_saved) for f in stats.features],
        ),
        (
            "jules_cache_misses_total",
            "counter",
            "Results computed and stored.",
            [("", stats.misses)],
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
    """Write the exposition text to ``path`` atomically (temp file + rename)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(prometheus_text(stats), encoding="utf-8")
    os.replace(temp, path)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
