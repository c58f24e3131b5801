"""View work under the exclusive manifest lock when a feature or a result schema is added.

    python benchmarks/bench_views.py [--entries 100000] [--rounds 5]

Builds a cache of N entries of one feature over 1000 symbols cheaply (as ``bench_gc``: one tiny
Parquet file written N times, a bulk INSERT of the manifest rows, ``refresh_views()`` links each
file into its symbol's folder and builds ``catalog.duckdb``). Then, in rounds, real
``get_or_compute`` misses publish:

- *same feature, same schema*: a result of the big feature (the common publish);
- *new feature*: the first result of a feature the cache has never seen (a view name is given);
- *new result schema*: a result of the big feature with one more column.

Every manifest lock hold is recorded by wrapping the lock, and so is the view upkeep inside the
publish (``view_published``), and the catalog rebuild each publish is followed by
(``store.flush()``: outside the exclusive lock; its table copy holds the SHARED lock, which
also keeps writers out). Target: no view work under the exclusive manifest lock
longer than 100 ms at 100k results. Writes benchmarks/results/views.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gc import build_cache
from common import print_table, write_json

import jules_cache.store as store_module
from jules_cache import FeatureStore
from jules_cache.storage import manifest as manifest_module

FEATURE = "bench.feature"  # the feature bench_gc's rows belong to
TARGET_MS = 100.0


def _frame(i: int) -> pl.DataFrame:
    return pl.DataFrame({"x": [i, i + 1, i + 2], "y": [0.5, 1.5, 2.5]})


def same_schema(data: pl.LazyFrame, config: dict) -> pl.LazyFrame:
    return data  # {"x": Int64, "y": Float64}, as the N rows of the big feature


def new_schema(data: pl.LazyFrame, config: dict) -> pl.LazyFrame:
    return data.with_columns(pl.lit(config["round"]).alias(f"z{config['round']}"))


class Recorder:
    """Every manifest lock hold of this process, and the time spent in view upkeep."""

    def __init__(self) -> None:
        self.holds: list[tuple[bool, float]] = []  # (shared, seconds)
        self.upkeep: list[float] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[Recorder]:
        lock, upkeep = manifest_module.file_lock, store_module.view_published

        @contextlib.contextmanager
        def timed_lock(path: Path, timeout: float, **kwargs: Any) -> Iterator[Any]:
            with lock(path, timeout, **kwargs) as held:
                started = time.perf_counter()
                try:
                    yield held
                finally:
                    self.holds.append((kwargs.get("shared", False), time.perf_counter() - started))

        def timed_upkeep(*args: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            try:
                upkeep(*args, **kwargs)
            finally:
                self.upkeep.append(time.perf_counter() - started)

        manifest_module.file_lock = timed_lock
        store_module.view_published = timed_upkeep
        try:
            yield self
        finally:
            manifest_module.file_lock = lock
            store_module.view_published = upkeep

    def mark(self) -> tuple[int, int]:
        return len(self.holds), len(self.upkeep)

    def since(self, mark: tuple[int, int]) -> dict[str, float]:
        holds, upkeep = self.holds[mark[0] :], self.upkeep[mark[1] :]
        exclusive = [s for shared, s in holds if not shared]
        shared = [s for is_shared, s in holds if is_shared]
        return {
            "exclusive_max_ms": max(exclusive, default=0.0) * 1000,
            "shared_max_ms": max(shared, default=0.0) * 1000,
            "view_upkeep_ms": sum(upkeep) * 1000,
        }


def measure(store: FeatureStore, recorder: Recorder, kind: str, round_: int) -> dict[str, float]:
    """One publish of ``kind`` and the catalog rebuild after it."""
    data = _frame(10_000_000 + round_)
    calls: dict[str, Callable[[], Any]] = {
        "same feature, same schema": lambda: store.get_or_compute(
            f"S{round_ % 1000:04d}", data, {"round": round_}, same_schema, name=FEATURE
        ),
        "new feature": lambda: store.get_or_compute(
            "S0001", data, {"round": round_}, same_schema, name=f"bench.new_feature_{round_}"
        ),
        "new result schema": lambda: store.get_or_compute(
            "S0002", data, {"round": round_}, new_schema, name=FEATURE
        ),
    }
    mark = recorder.mark()
    started = time.perf_counter()
    calls[kind]()
    publish = time.perf_counter() - started
    row = {"publish_ms": publish * 1000, **recorder.since(mark)}
    mark = recorder.mark()
    started = time.perf_counter()
    store.flush()  # the catalog rebuild the publish makes due (outside the exclusive lock)
    row["catalog_rebuild_ms"] = (time.perf_counter() - started) * 1000
    row["catalog_shared_hold_ms"] = recorder.since(mark)["shared_max_ms"]
    row["catalog_exclusive_hold_ms"] = recorder.since(mark)["exclusive_max_ms"]
    return row


KINDS = ("same feature, same schema", "new feature", "new result schema")


def run(work: Path, entries: int, rounds: int) -> dict[str, Any]:
    """Build the cache in ``work`` and measure every kind of publish ``rounds`` times."""
    started = time.perf_counter()
    build_seconds = build_cache(work / "cache", entries)  # links and catalog included
    store = FeatureStore(work / "cache", catalog_refresh_seconds=3600)
    recorder = Recorder()
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    with recorder.installed():
        store.get_or_compute("S0000", _frame(-1), {"round": -1}, same_schema, name=FEATURE)
        store.flush()  # warm-up: imports, first attach
        for round_ in range(rounds):
            for kind in KINDS:
                samples[kind].append(measure(store, recorder, kind, round_))
    linked = sum(1 for _ in (store._backend.layout.views).rglob("*.parquet"))
    store.close()
    result: dict[str, Any] = {
        "entries": entries,
        "links": linked,
        "rounds": rounds,
        "build_seconds": build_seconds,
        "total_seconds": time.perf_counter() - started,
        "load_average": os.getloadavg(),
        "kinds": {},
    }
    for kind, rows in samples.items():
        result["kinds"][kind] = {
            name: {
                "median": statistics.median(row[name] for row in rows),
                "max": max(row[name] for row in rows),
            }
            for name in rows[0]
        }
    worst_upkeep = max(k["view_upkeep_ms"]["max"] for k in result["kinds"].values())
    result["worst_view_upkeep_under_lock_ms"] = worst_upkeep
    result["target_met"] = worst_upkeep <= TARGET_MS
    return result


def print_report(result: dict[str, Any]) -> None:
    columns = [
        "publish_ms",
        "exclusive_max_ms",
        "view_upkeep_ms",
        "catalog_rebuild_ms",
        "catalog_shared_hold_ms",
    ]
    print_table(
        f"Publishing at {result['entries']:,} entries ({result['links']:,} links), "
        f"median / max of {result['rounds']} rounds, ms",
        ["publish", *columns],
        [
            [kind, *(f"{k[c]['median']:.1f} / {k[c]['max']:.1f}" for c in columns)]
            for kind, k in result["kinds"].items()
        ],
    )
    print(
        f"longest view upkeep under the exclusive lock: "
        f"{result['worst_view_upkeep_under_lock_ms']:.1f} ms (target <= {TARGET_MS:.0f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jules-views-") as tmp:
        result = run(Path(tmp), args.entries, args.rounds)
    print_report(result)
    write_json("views", result)


if __name__ == "__main__":
    main()
