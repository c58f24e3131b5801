"""Helpers shared by the benchmark scripts: timing, percentiles, a table and a JSON file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(round(q / 100 * (len(ordered) - 1)), len(ordered) - 1)
    return ordered[index]


def timed(func: Callable[[], Any], repeat: int, warmup: int = 3) -> list[float]:
    """Wall seconds of ``repeat`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        func()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        samples.append(time.perf_counter() - started)
    return samples


def summary_ms(samples: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(samples) * 1000,
        "p99_ms": percentile(samples, 99) * 1000,
        "n": len(samples),
    }


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> float:
    """Reset this process's peak RSS to its current RSS (Linux); return the current RSS in MB.

    ``ru_maxrss`` cannot be used for this: it never goes down, and a spawned child inherits
    its parent's value across exec.
    """
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak RSS since the process started or since ``reset_peak_rss()`` (Linux VmHWM), in MB."""
    return _status_mb("VmHWM")


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def print_table(title: str, headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def write_json(name: str, document: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **document}, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")
    return path
