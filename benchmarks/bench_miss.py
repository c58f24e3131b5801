"""What a miss costs over its compute, on a small daily feature, beside joblib.Memory's miss.

    python benchmarks/bench_miss.py [--rounds 40] [--isolated 7]

The workload a research pass runs hundreds of times: one day of one symbol (200k ticks) into
390 one-minute bars with VWAP, rolling VWAP, returns and volatility (``synthetic.make_bars``),
about 7-10 ms of Polars. Measured in one run, medians after a
warm-up, every miss a new config (so a new key):

- ``compute``: the feature called directly (``make_bars(ticks.lazy(), config).collect()``);
- ``jules_cache miss, in a loop``: misses back to back, as a research pass makes them (rows of
  quick successive publishes are written in batches by the store's flush thread, see
  ``engine.local``);
- ``jules_cache miss, alone``: one miss after a quiet second (its row is written at once, in
  its own manifest transaction, by the flush thread: the call does not wait for it);
- ``joblib.Memory miss``: the same feature through ``Memory.cache`` (an eager frame in, as its
  docs show);
- ``publish``: the publish step alone (the ``publish`` DEBUG event of the ``jules_cache``
  logger), in the loop and alone;
- ``load_before``/``load_after``: the 1-minute load average around the run.

The loop's ratio is also given as the median of per-round ratios (each miss over the compute
timed just before it), which a drifting machine load moves less.

Writes benchmarks/results/miss.json.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_json

from jules_cache import FeatureStore
from jules_cache.synthetic import make_bars, make_ticks, symbol_names, ticks_for


def bars_eager(ticks: pl.DataFrame, config: dict[str, Any]) -> pl.DataFrame:
    return make_bars(ticks.lazy(), config).collect()


class PublishTimes(logging.Handler):
    """Collects the milliseconds of the ``publish`` DEBUG events."""

    PATTERN = re.compile(r"^publish .* ms=(?P<ms>[0-9.]+)$")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.ms: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = self.PATTERN.match(record.getMessage())
        if found:
            self.ms.append(float(found["ms"]))


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000


def run(work: Path, rounds: int, isolated: int) -> dict[str, Any]:
    from joblib import Memory

    symbol = symbol_names(1)[0]
    ticks = ticks_for(make_ticks([symbol], 200_000, seed=1), symbol)
    bars = bars_eager(ticks, {})
    publish = PublishTimes()
    logger = logging.getLogger("jules_cache")
    logger.addHandler(publish)
    logger.setLevel(logging.DEBUG)
    # The machine's 1-minute load: runs compare only at a like load (a busy 2-core machine
    # slows the miss's many small steps more than the compute).
    load_before = os.getloadavg()[0]
    store = FeatureStore(work / "jules")
    memory = Memory(work / "joblib", verbose=0)
    cached_bars = memory.cache(bars_eager)
    compute, loop, alone, joblib_miss = [], [], [], []
    try:
        for index in range(rounds + 5):  # the first five warm every path up
            config = {"freq": "1m", "round": index}
            started = time.perf_counter()
            bars_eager(ticks, config)
            compute.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert not store.fetch(symbol, ticks, config, make_bars).hit
            loop.append(time.perf_counter() - started)
            started = time.perf_counter()
            cached_bars(ticks, config)
            joblib_miss.append(time.perf_counter() - started)
        loop_publish = publish.ms[5:]
        publish.ms.clear()
        for index in range(isolated):
            time.sleep(2.5)  # quiet (no batch on its way): this publish writes its own row
            config = {"freq": "1m", "alone": index}
            started = time.perf_counter()
            assert not store.fetch(symbol, ticks, config, make_bars).hit
            alone.append(time.perf_counter() - started)
        alone_publish = list(publish.ms)
    finally:
        logger.removeHandler(publish)
        store.close()
    compute, loop, joblib_miss = compute[5:], loop[5:], joblib_miss[5:]
    result = {
        "ticks": ticks.height,
        "bars": bars.height,
        "compute_ms": median_ms(compute),
        "jules_cache_miss_loop_ms": median_ms(loop),
        "jules_cache_miss_alone_ms": median_ms(alone),
        "joblib_miss_ms": median_ms(joblib_miss),
        "publish_loop_p50_ms": statistics.median(loop_publish),
        "publish_alone_p50_ms": statistics.median(alone_publish),
        "rounds": rounds,
        "isolated": isolated,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    result["miss_loop_over_compute"] = result["jules_cache_miss_loop_ms"] / result["compute_ms"]
    # The same ratio round by round (a miss over the compute timed just before it): a machine
    # whose load drifts during the run moves both alike.
    result["miss_loop_over_compute_paired"] = statistics.median(
        miss / plain for miss, plain in zip(loop, compute, strict=True)
    )
    result["miss_alone_over_compute"] = result["jules_cache_miss_alone_ms"] / result["compute_ms"]
    result["joblib_over_compute"] = result["joblib_miss_ms"] / result["compute_ms"]
    return result


def show(result: dict[str, Any]) -> None:
    compute = result["compute_ms"]
    print_table(
        f"A miss on {result['ticks']:,} ticks -> {result['bars']} bars (medians, one run)",
        ["what", "ms", "x compute"],
        [
            ["compute (no cache)", compute, 1.0],
            [
                "jules_cache miss, in a loop",
                result["jules_cache_miss_loop_ms"],
                result["miss_loop_over_compute"],
            ],
            ["  same, median of per-round ratios", "", result["miss_loop_over_compute_paired"]],
            [
                "jules_cache miss, alone",
                result["jules_cache_miss_alone_ms"],
                result["miss_alone_over_compute"],
            ],
            ["joblib.Memory miss", result["joblib_miss_ms"], result["joblib_over_compute"]],
            ["publish, in a loop (p50)", result["publish_loop_p50_ms"], ""],
            ["publish, alone (p50)", result["publish_alone_p50_ms"], ""],
        ],
    )
    loads = f"{result['load_before']:.1f} before, {result['load_after']:.1f} after"
    print(f"load average (1 min): {loads}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40, help="misses in the loop (40)")
    parser.add_argument("--isolated", type=int, default=7, help="misses after a pause (7)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jules-miss-") as tmp:
        result = run(Path(tmp), args.rounds, args.isolated)
    show(result)
    write_json("miss", {"command": "python benchmarks/bench_miss.py", **result})


if __name__ == "__main__":
    main()
