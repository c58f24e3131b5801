"""Fan-out benchmark: one feature over 16 symbols, cold and warm, on a Dask cluster vs a loop.

    python benchmarks/bench_fanout.py [--quick] [--workers 2] [--repeat 3]

The feature is the standard bar pipeline (``jules_cache.synthetic.make_bars``) over one Parquet
tick file per symbol (Zipf-sized, as real symbols trade). Rows, wall seconds (median of
``--repeat`` runs, each cold run on a fresh root):

- serial, no cache: read + compute per symbol in this process (what the cache must beat);
- serial through the cache: ``get_or_compute`` per symbol in this process: cold on a new root
  (includes creating it), cold on an open root with new keys (a new ``vwap_window`` per run),
  then warm;
- fan-out on a LocalCluster already running (started and warmed once, outside the timing): the
  same three, warm also with ``collect=False``;
- fan-out with ``client=None``: a throwaway cluster started and closed inside the call (warm).

Cluster start is timed on its own. On one 2-core host, fan-out cannot beat a loop by much:
Polars already uses both cores. Its use is many hosts sharing one cache; this measures the
price of going through Dask.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dask
import distributed
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_json

from jules_cache import FeatureStore, compute_many
from jules_cache.synthetic import make_bars, make_ticks, symbol_names, ticks_for

CONFIG = {"freq": "1m", "vwap_window": 20}
SYMBOLS = 16


def write_ticks(folder: Path, total_rows: int) -> dict[str, str]:
    ticks = make_ticks(symbol_names(SYMBOLS), total_rows, seed=3)
    jobs = {}
    for symbol in symbol_names(SYMBOLS):
        path = folder / f"{symbol.replace('/', '_')}.parquet"
        ticks_for(ticks, symbol).write_parquet(path)
        jobs[symbol] = str(path)
    return jobs


def median_seconds(run, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


class Roots:
    """A fresh cache root per cold run."""

    def __init__(self, base: Path):
        self.base = base
        self.count = 0

    def fresh(self) -> Path:
        self.count += 1
        return self.base / f"cache{self.count}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1.6M ticks instead of 16M")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    total_rows = 1_600_000 if args.quick else 16_000_000
    repeat = args.repeat
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "ticks").mkdir()
        jobs = write_ticks(base / "ticks", total_rows)
        roots = Roots(base)
        rows: list[list] = []
        results: dict[str, float] = {}

        def record(label: str, seconds: float) -> None:
            results[label] = seconds
            rows.append([label, seconds, seconds / SYMBOLS * 1000])

        def serial_plain() -> None:
            for path in jobs.values():
                make_bars(pl.scan_parquet(path), CONFIG).collect()

        windows = iter(range(1000, 2000))  # a new config, so new keys, for each "new keys" run

        def serial_cache(root: Path, config: dict = CONFIG) -> None:
            with FeatureStore(root) as store:
                for symbol, path in jobs.items():
                    store.get_or_compute(symbol, path, config, make_bars)

        def new_keys() -> dict:
            return {**CONFIG, "vwap_window": next(windows)}

        serial_plain()  # page cache and Polars warm-up, untimed
        record("serial, no cache", median_seconds(serial_plain, repeat))
        record(
            "serial, cold, new root", median_seconds(lambda: serial_cache(roots.fresh()), repeat)
        )
        warm_root = roots.fresh()
        serial_cache(warm_root)
        record(
            "serial, cold, new keys",
            median_seconds(lambda: serial_cache(warm_root, new_keys()), repeat),
        )
        record("serial, warm", median_seconds(lambda: serial_cache(warm_root), repeat))

        started = time.perf_counter()
        with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
            cluster = distributed.LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
            )
        client = distributed.Client(cluster, set_as_default=False)
        cluster_start = time.perf_counter() - started
        try:

            def fan_out(root: Path, config: dict = CONFIG, **options) -> None:
                compute_many(root, make_bars, jobs, config=config, client=client, **options)

            first_started = time.perf_counter()
            fan_out(roots.fresh())  # imports and first store opens on the workers, untimed
            first_run = time.perf_counter() - first_started
            record(
                "fan-out, cold, new root", median_seconds(lambda: fan_out(roots.fresh()), repeat)
            )
            warm = roots.fresh()
            fan_out(warm)
            record(
                "fan-out, cold, new keys", median_seconds(lambda: fan_out(warm, new_keys()), repeat)
            )
            record("fan-out, warm", median_seconds(lambda: fan_out(warm), repeat))
            record(
                "fan-out, warm, collect=False",
                median_seconds(lambda: fan_out(warm, collect=False), repeat),
            )
        finally:
            client.close()
            cluster.close()

        def throwaway() -> None:
            compute_many(warm, make_bars, jobs, config=CONFIG, n_workers=args.workers)

        record("fan-out, warm, client=None", median_seconds(throwaway, repeat))

    headers = ["run (16 symbols)", "wall s", "ms per symbol"]
    title = (
        f"fan-out: make_bars over {total_rows:,} ticks in {SYMBOLS} Parquet files, "
        f"{args.workers} worker processes, median of {repeat}"
    )
    print_table(title, headers, rows)
    print(
        f"\nLocalCluster start ({args.workers} workers): {cluster_start:.2f} s; first fan-out on "
        f"it (worker imports, store opens; cold cache): {first_run:.2f} s"
    )
    write_json(
        "fanout",
        {
            "ticks": total_rows,
            "symbols": SYMBOLS,
            "workers": args.workers,
            "repeat": repeat,
            "seconds": results,
            "cluster_start_seconds": cluster_start,
            "first_fanout_seconds": first_run,
            "load_average_1min": {"start": load_before, "end": os.getloadavg()[0]},
        },
    )


if __name__ == "__main__":
    main()
