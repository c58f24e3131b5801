"""jules_cache side by side with joblib.Memory, diskcache memoize and no cache, in one run.

    pip install -e '.[bench]'
    python benchmarks/compare.py            # 5M ticks, 64 symbols (~3-5 min on 2 cores)
    python benchmarks/compare.py --quick    # 1M ticks
    python benchmarks/compare.py --large    # 50M ticks (needs ~16 GB RAM and a while)

One workload — synthetic ticks for many symbols, a Polars feature pipeline (1-minute bars,
rolling VWAP, returns, realised volatility, and a tick-level variant) — through each cache,
each used the way its documentation shows (see ``compare_peers``). Measured in the same run:

1. hit latency for a small result (~10k rows), a medium one (~1M rows) and a large input (all
   ticks), and the cold-miss overhead over plain compute (medians after a warm-up);
2. N spawned processes sharing one cache on the same keys: real computations per key
   (counted with marker files), errors, wrong results, wall time — once with every process
   walking the keys in the same order (trainers launched together), once rotated;
3. does each cache notice a change — in a helper the feature calls, in the feature's body, in
   one tick — or serve the stale result? Each code step runs in a fresh process against a
   generated module the benchmark rewrites;
4. disk used, and what each can tell you afterwards.

Writes benchmarks/results/compare.json and compare.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_peers as peers
import compare_report as report
from common import RESULTS, machine, write_json

from jules_cache.synthetic import make_ticks, symbol_names

HERE = Path(__file__).resolve().parent
PEERS = peers.KINDS  # ("jules_cache", "joblib", "diskcache")


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    feature: str
    symbols: tuple[str, ...]
    config: dict[str, Any]
    hits: int
    misses: int


# ---------------------------------------------------------------------------------- timing


def clock(func: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = func()
    return time.perf_counter() - started, value


def repeat_timed(func: Callable[[], Any], count: int, budget: float) -> list[float]:
    """Up to ``count`` timings, stopping early (after at least 3) once ``budget`` s are spent."""
    samples: list[float] = []
    spent = 0.0
    while len(samples) < count and (len(samples) < 3 or spent < budget):
        seconds, _ = clock(func)
        samples.append(seconds)
        spent += seconds
    return samples


def ms(seconds: float) -> float:
    return seconds * 1000


def median(values: list[float]) -> float:
    return statistics.median(values)


def dir_bytes(root: Path) -> int:
    """Bytes of the files under ``root``, each inode once (jules_cache's view folders hold
    hard links to its result files: counting them again would double its disk use)."""
    sizes: dict[tuple[int, int], int] = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            found = path.stat()
            sizes[(found.st_dev, found.st_ino)] = found.st_size
    return sum(sizes.values())


@contextlib.contextmanager
def markers_on(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[peers.MARKERS_ENV] = str(directory)
    try:
        yield directory
    finally:
        del os.environ[peers.MARKERS_ENV]


# ------------------------------------------------------------------------ 1. latency


def bench_latency(cases: list[Case], ticks: pl.DataFrame, features: Any, work: Path) -> dict:
    """Hit latency and cold-miss overhead for every case, every cache, interleaved."""
    caches = {kind: peers.open_cache(kind, work / "latency" / kind) for kind in PEERS}
    results: dict[str, Any] = {}
    for case in cases:
        data = ticks.filter(pl.col("symbol").is_in(case.symbols)) if case.symbols else ticks
        print(f"  {case.name}: {data.height:,} input rows", flush=True)
        with markers_on(work / "latency" / "markers" / case.name) as markers:
            func = getattr(features, case.feature)
            results[case.name] = latency_case(case, data, func, caches, markers)
    for cache in caches.values():
        cache.close()
    results["_entries_per_cache"] = sum(case.misses + 1 for case in cases)
    return results


def latency_case(
    case: Case, data: pl.DataFrame, func: Callable, caches: dict[str, Any], markers: Path
) -> dict[str, Any]:
    """One case: warm up, then cold misses interleaved with plain compute, then hits.

    Markers prove the hits were hits: a "hit" sample that ran the function is counted in
    ``hit_recomputed`` (it should be 0).
    """
    symbol = case.symbols[0] if len(case.symbols) == 1 else f"basket{len(case.symbols)}"
    configs = [{**case.config, "window": case.config["window"] + i} for i in range(case.misses)]

    def plain(config: dict) -> Any:
        return func(data, config)

    def cached(kind: str, config: dict) -> Any:
        return caches[kind].call(func, symbol, data, config)

    failed: dict[str, str] = {}

    def attempt(kind: str, step: Callable[[], Any]) -> Any:
        """Run one step for ``kind``; a cache that raises is reported, not measured further."""
        if kind in failed:
            return None
        try:
            return step()
        except Exception as exc:
            failed[kind] = f"{type(exc).__name__}: {exc}"[:300]
            print(f"    {peers.LABELS[kind]} failed: {failed[kind]}", flush=True)
            return None

    warm = {**case.config, "window": case.config["window"] + 1000}
    for kind in PEERS:  # first-call costs (imports, parsing, connections) are not measured here
        attempt(kind, lambda kind=kind: (cached(kind, warm), cached(kind, warm)))
    plain_s: list[float] = []
    miss_s: dict[str, list[float]] = {kind: [] for kind in PEERS}
    for config in configs:  # plain compute timed before and after the caches' misses
        plain_s.append(clock(lambda config=config: plain(config))[0])
        for kind in PEERS:
            seconds = attempt(
                kind, lambda kind=kind, config=config: clock(lambda: cached(kind, config))[0]
            )
            if seconds is not None:
                miss_s[kind].append(seconds)
        plain_s.append(clock(lambda config=config: plain(config))[0])
    value = plain(configs[0])
    reference = peers.frame_digest(value)
    hit_s: dict[str, list[float]] = {}
    correct: dict[str, bool] = {}
    recomputed: dict[str, int] = {}
    for kind in PEERS:
        before = len(list(markers.iterdir()))
        got = attempt(kind, lambda kind=kind: peers.frame_digest(cached(kind, configs[0])))
        correct[kind] = got == reference
        samples = attempt(
            kind, lambda kind=kind: repeat_timed(lambda: cached(kind, configs[0]), case.hits, 4.0)
        )
        if samples is not None:
            hit_s[kind] = samples
        recomputed[kind] = len(list(markers.iterdir())) - before
    raw_read = raw_read_beside_hit(caches, func, symbol, data, configs[0], case.hits, failed)
    compute = median(plain_s)
    jules_hit = median(hit_s["jules_cache"]) if "jules_cache" in hit_s else None
    caches_report: dict[str, Any] = {}
    for kind in PEERS:
        if kind in failed:
            caches_report[kind] = {"error": failed[kind]}
            continue
        hit, miss = median(hit_s[kind]), median(miss_s[kind])
        caches_report[kind] = {
            "hit_ms": ms(hit),
            "hit_samples": len(hit_s[kind]),
            "hit_correct": correct[kind],
            "hit_recomputed": recomputed[kind],
            "speedup_vs_compute": compute / hit,
            "hit_vs_jules_cache": hit / jules_hit if jules_hit else None,
            "miss_ms": ms(miss),
            "miss_samples_ms": [ms(s) for s in miss_s[kind]],
            "miss_overhead_ms": ms(miss - compute),
            "miss_ratio_vs_compute": miss / compute,
        }
    return {
        "description": case.description,
        "input_rows": data.height,
        "input_mb": data.estimated_size() / 1e6,
        "result_rows": value.height,
        "result_columns": value.width,
        "result_mb": value.estimated_size() / 1e6,
        "compute_ms": ms(compute),
        "compute_samples_ms": [ms(s) for s in plain_s],
        "raw_read": raw_read,
        "caches": caches_report,
    }


def raw_read_beside_hit(
    caches: dict[str, Any],
    func: Callable,
    symbol: str,
    data: pl.DataFrame,
    config: dict,
    rounds: int,
    failed: dict[str, str],
) -> dict[str, Any] | None:
    """The floor of a jules_cache hit: ``pl.read_parquet`` of the very file it serves.

    Interleaved rounds (hit, then raw read of the same file), so the ratio is of one minute of
    machine load. The hit verifies page checksums and the key; the raw read does neither.
    """
    if "jules_cache" in failed:
        return None
    store = caches["jules_cache"].store
    path = store.fetch(symbol, data, config, func).path
    hits: list[float] = []
    reads: list[float] = []
    for _ in range(max(rounds, 5)):
        hits.append(clock(lambda: store.get_or_compute(symbol, data, config, func))[0])
        reads.append(clock(lambda: pl.read_parquet(path))[0])
    return {
        "file_bytes": path.stat().st_size,
        "jules_hit_ms": ms(median(hits)),
        "read_parquet_ms": ms(median(reads)),
        "hit_vs_read_parquet": median(hits) / median(reads),
    }


# --------------------------------------------------------------------- 2. processes


def bench_processes(
    ticks_path: Path,
    features_dir: Path,
    features: Any,
    ticks: pl.DataFrame,
    symbols: list[str],
    processes: int,
    window: int,
    work: Path,
) -> dict[str, Any]:
    """N spawned processes fetch the same keys through each cache, in two key orders.

    The same N processes serve every run; barriers start every run together and end it when
    the slowest process is done, so wall time excludes spawning, imports and loading ticks.
    """
    config = {"window": window}
    reference = {
        s: peers.frame_digest(features.tick_features(ticks.filter(pl.col("symbol") == s), config))
        for s in symbols
    }
    plan = [(order, kind) for order in ("same", "rotated") for kind in ("none", *PEERS)]
    base = work / "processes"
    for order, kind in plan:
        (base / f"{order}-{kind}" / "markers").mkdir(parents=True)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    workers = [
        context.Process(
            target=peers.mp_worker,
            args=(
                plan,
                str(base),
                str(features_dir),
                str(ticks_path),
                symbols,
                window,
                index,
                processes,
                barrier,
            ),
        )
        for index in range(processes)
    ]
    for process in workers:
        process.start()
    results: dict[str, Any] = {}
    try:
        for order, kind in plan:
            barrier.wait(timeout=600)
            started = time.perf_counter()
            barrier.wait(timeout=1800)
            wall = time.perf_counter() - started
            results[f"{order}/{kind}"] = {"order": order, "cache": kind, "wall_s": wall}
    finally:
        for process in workers:
            process.join(timeout=120 if not barrier.broken else 5)
            if process.is_alive():
                process.terminate()
    for order, kind in plan:
        run = base / f"{order}-{kind}"
        reports = [
            json.loads(path.read_text())
            for path in (run / f"worker{index}.json" for index in range(processes))
            if path.exists()
        ]
        crashed = processes - len(reports)
        counts = peers.count_markers(run / "markers")
        per_key = [counts.get(f"tick_features~{s.replace('/', '_')}~{window}", 0) for s in symbols]
        errors = [e for r in reports for e in r["errors"]]
        wrong = sum(digest != reference[s] for r in reports for s, digest in r["digests"].items())
        entry = results.setdefault(f"{order}/{kind}", {"order": order, "cache": kind})
        entry.update(
            {
                "processes": processes,
                "keys": len(symbols),
                "calls": processes * len(symbols),
                "computations": sum(per_key),
                "computations_per_key": dict(zip(symbols, per_key)),
                "max_per_key": max(per_key),
                "errors": len(errors) + crashed,
                "error_samples": errors[:5],
                "crashed_processes": crashed,
                "wrong_results": wrong,
                "worker_seconds": [r["seconds"] for r in reports],
            }
        )
        print(
            f"  {order:7} {peers.LABELS[kind]:18} computations {sum(per_key):3}  "
            f"errors {len(errors) + crashed}  wrong {wrong}  wall {entry.get('wall_s', 0):.2f}s",
            flush=True,
        )
    for order in ("same", "rotated"):
        baseline = results[f"{order}/none"].get("wall_s")
        for kind in ("none", *PEERS):
            wall = results[f"{order}/{kind}"].get("wall_s")
            results[f"{order}/{kind}"]["wall_vs_no_cache"] = (
                wall / baseline if wall and baseline else None
            )
    return results


# ------------------------------------------------------------------------ 3. changes


CODE_STEPS = (
    ("code: first call", "v1", "v1", "compute"),
    ("code: same code, new process", "v1", "v1", "hit"),
    ("code: a helper the feature calls edited", "v2", "v1", "compute"),
    ("code: the feature's own body edited", "v2", "v2", "compute"),
    ("code: reverted to the original", "v1", "v1", "hit"),
)


def outcome(computed: int, correct: bool, error: str | None) -> str:
    if error:
        return "error"
    if not correct:
        return "STALE" if computed == 0 else "wrong"
    return "recomputed" if computed else "hit"


def bench_code_change(ticks_path: Path, basket: list[str], window: int, work: Path) -> dict:
    """Each step in one fresh process, against the generated module as rewritten for it."""
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in PEERS}
    module = work / "code" / "module"
    for label, helper, body, expected in CODE_STEPS:
        peers.write_features(module, helper=helper, body=body)
        arguments = {
            "kinds": list(PEERS),
            "base": str(work / "code"),
            "features_dir": str(module),
            "ticks_path": str(ticks_path),
            "symbols": basket,
            "window": window,
        }
        process = subprocess.run(
            [sys.executable, str(HERE / "compare_peers.py"), "code-step", json.dumps(arguments)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        if process.returncode == 0:
            reports = json.loads(process.stdout.strip().splitlines()[-1])
        else:
            failed = {"computed": 0, "correct": False, "error": process.stderr[-500:]}
            reports = {kind: failed for kind in PEERS}
        for kind in PEERS:
            step = reports[kind]
            got = outcome(step["computed"], step["correct"], step["error"])
            results[kind].append({"step": label, "expected": expected, "outcome": got, **step})
    for kind in PEERS:
        print(
            f"  {peers.LABELS[kind]:18} " + ", ".join(s["outcome"] for s in results[kind]),
            flush=True,
        )
    return results


def bench_data_change(basket_ticks: pl.DataFrame, features: Any, window: int, work: Path) -> dict:
    """Same content in a different memory layout; then one price moved by one cent."""
    config = {"every": "1m", "window": window}
    half = basket_ticks.height // 2
    rechunked = pl.concat([basket_ticks.slice(0, half), basket_ticks.slice(half)], rechunk=False)
    edited = basket_ticks.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.col("price") + 0.01)
        .otherwise(pl.col("price"))
        .alias("price")
    )
    cases = [
        ("data: first call", basket_ticks, "compute"),
        ("data: same ticks, different chunk layout", rechunked, "hit"),
        ("data: one price changed by one cent", edited, "compute"),
    ]
    expected_digests = [
        peers.frame_digest(features.minute_bars(data, config)) for _, data, _ in cases
    ]
    results: dict[str, Any] = {}
    for kind in PEERS:
        cache = peers.open_cache(kind, work / "data" / kind / "cache")
        steps = []
        with markers_on(work / "data" / kind / "markers") as markers:
            for (label, data, expected), digest in zip(cases, expected_digests):
                before = len(list(markers.iterdir()))
                value = cache.call(features.minute_bars, "basket", data, config)
                computed = len(list(markers.iterdir())) - before
                correct = peers.frame_digest(value) == digest
                steps.append(
                    {
                        "step": label,
                        "expected": expected,
                        "outcome": outcome(computed, correct, None),
                        "computed": computed,
                        "correct": correct,
                    }
                )
        cache.close()
        results[kind] = steps
        print(f"  {peers.LABELS[kind]:18} " + ", ".join(s["outcome"] for s in steps), flush=True)
    return results


# ------------------------------------------------------------ 5. big input, new process

BIG_INPUT_ROWS = 10_000_000


def rank_lookup_ms(ticks: pl.DataFrame) -> float:
    """The per-row work an exact digest of a categorical column adds to the raw-buffer floor:
    each row's rank among the sorted distinct values (NumPy ``take`` per 1M-row leaf)."""
    import numpy as np

    from jules_cache.fingerprints import data

    table = data.as_arrow(ticks.select(pl.col(pl.Categorical)))
    ranks = np.arange(1 << 16, dtype="<i4")
    leaves = [
        data._values_np(piece.indices)
        for column in table.columns
        for pieces in data._leaves(column)
        for piece in pieces
    ]

    def run() -> None:
        for raw in leaves:
            np.take(ranks, raw)

    run()
    return ms(median(repeat_timed(run, 9, 2.0)))


def raw_buffer_hash_ms(ticks: pl.DataFrame) -> float:
    """The floor for any exact content hash: xxh3_128 over the columns' raw buffers only."""
    buffers = [ticks[name].to_physical().to_numpy() for name in ticks.columns]

    def run() -> None:
        for buffer in buffers:
            xxhash.xxh3_128(buffer).digest()

    run()
    return ms(median(repeat_timed(run, 9, 2.0)))


def bench_big_input(features: Any, work: Path, rows: int, rounds: int) -> dict[str, Any]:
    """Hit on a cheap feature of a 10M-row Polars frame, beside recomputing it ("no cache").

    Interleaved rounds: one recompute, then one hit per cache (each cache warmed up first with
    its miss and one hit). The cheap feature is what makes the input's cost visible: a cache
    that takes longer to key the input than the feature takes to compute is worse than none.
    """
    from jules_cache.fingerprints.data import as_arrow, fingerprint_table

    ticks = make_ticks(symbol_names(64), rows)
    print(f"  {ticks.height:,} rows, {ticks.estimated_size() / 1e6:.0f} MB", flush=True)
    func = features.symbol_summary
    config = {"window": 0}
    caches = {kind: peers.open_cache(kind, work / "big" / kind) for kind in PEERS}
    reference = peers.frame_digest(func(ticks, config))
    failed: dict[str, str] = {}
    with markers_on(work / "big" / "markers") as markers:
        for kind, cache in caches.items():
            try:
                cache.call(func, "all", ticks, config)
                cache.call(func, "all", ticks, config)
            except Exception as exc:
                failed[kind] = f"{type(exc).__name__}: {exc}"[:300]
        before = len(list(markers.iterdir()))
        plain_s: list[float] = []
        hit_s: dict[str, list[float]] = {kind: [] for kind in PEERS if kind not in failed}
        correct = {kind: True for kind in hit_s}
        for _ in range(rounds):
            plain_s.append(clock(lambda: func(ticks, config))[0])
            for kind in hit_s:
                seconds, value = clock(
                    lambda kind=kind: caches[kind].call(func, "all", ticks, config)
                )
                hit_s[kind].append(seconds)
                correct[kind] &= peers.frame_digest(value) == reference
        recomputed = len(list(markers.iterdir())) - before - rounds
    fingerprint_s = repeat_timed(lambda: fingerprint_table(as_arrow(ticks)), 9, 3.0)
    for cache in caches.values():
        cache.close()
    compute = median(plain_s)
    result: dict[str, Any] = {
        "description": "hit, cheap feature (last/volume/trades per symbol), "
        f"{rows:,}-row Polars input (ts, symbol, price, size)",
        "input_rows": ticks.height,
        "input_mb": ticks.estimated_size() / 1e6,
        "rounds": rounds,
        "no_cache_ms": ms(compute),
        "no_cache_samples_ms": [ms(x) for x in plain_s],
        "jules_fingerprint_ms": ms(median(fingerprint_s)),
        "raw_buffer_xxh3_ms": raw_buffer_hash_ms(ticks),
        "categorical_rank_lookup_ms": rank_lookup_ms(ticks),
        "recomputed_during_hits": recomputed,
        "caches": {kind: {"error": error} for kind, error in failed.items()},
    }
    for kind, samples in hit_s.items():
        result["caches"][kind] = {
            "hit_ms": ms(median(samples)),
            "hit_samples_ms": [ms(x) for x in samples],
            "hit_correct": correct[kind],
            "hit_vs_no_cache": median(samples) / compute,
        }
    return result


def bench_first_hit(
    ticks_path: Path, features_dir: Path, basket: list[str], work: Path, rounds: int
) -> dict[str, Any]:
    """First hit in a new process, imports included, with real subprocesses for every cache.

    One subprocess per cache fills its cache (a miss); then ``rounds`` rounds start one fresh
    subprocess per cache, interleaved, each importing the library, opening the cache and
    fetching the same key (``compare_peers.first_hit``). Subprocess wall time is kept too.
    """
    base = work / "first-hit"
    # Bytecode, as an installed package has it (pip compiles on install; joblib and diskcache
    # were): an editable checkout run with PYTHONDONTWRITEBYTECODE=1 (set for the children, and
    # on this machine) would otherwise compile every jules_cache module in every new process.
    import compileall

    import jules_cache

    compileall.compile_dir(str(Path(jules_cache.__file__).parent), quiet=1)
    samples: dict[str, list[dict[str, Any]]] = {kind: [] for kind in PEERS}
    errors: dict[str, str] = {}

    def child(kind: str) -> dict[str, Any] | None:
        arguments = {
            "kind": kind,
            "root": str(base / kind / "cache"),
            "markers": str(base / kind / "markers"),
            "features_dir": str(features_dir),
            "ticks_path": str(ticks_path),
            "symbols": basket,
            "window": 20,
        }
        (base / kind / "markers").mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        process = subprocess.run(
            [sys.executable, str(HERE / "compare_peers.py"), "first-hit", json.dumps(arguments)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        wall = time.perf_counter() - started
        if process.returncode != 0:
            errors[kind] = process.stderr[-500:]
            return None
        return {**json.loads(process.stdout.strip().splitlines()[-1]), "process_wall_s": wall}

    for kind in PEERS:
        child(kind)  # the miss that fills the cache (and warms the page cache)
    for _ in range(rounds):
        for kind in PEERS:
            if kind not in errors and (report := child(kind)) is not None:
                samples[kind].append(report)
    result: dict[str, Any] = {"rounds": rounds, "caches": {}}
    for kind in PEERS:
        runs = samples[kind]
        if not runs:
            result["caches"][kind] = {"error": errors.get(kind, "no run")}
            continue
        result["caches"][kind] = {
            "first_hit_ms": ms(median([r["seconds"] for r in runs])),
            "import_ms": ms(median([r["import_seconds"] for r in runs])),
            "process_wall_ms": ms(median([r["process_wall_s"] for r in runs])),
            "samples_ms": [ms(r["seconds"]) for r in runs],
            "recomputed": sum(r["computed"] for r in runs),
            "digests_agree": len({r["digest"] for r in runs}) == 1,
        }
    jules = result["caches"]["jules_cache"].get("first_hit_ms")
    for kind in PEERS:
        entry = result["caches"][kind]
        if jules and "first_hit_ms" in entry:
            entry["vs_jules_cache"] = entry["first_hit_ms"] / jules
    return result


SQL_SYMBOLS, SQL_DAYS = 100, 10  # 1000 results of one feature, ~5k rows each


def bench_sql_symbol(work: Path, rounds: int) -> dict[str, Any]:
    """``WHERE symbol = …`` over 1000 results of one feature: a plain DuckDB client on
    ``catalog.duckdb`` beside ``store.sql``, interleaved, both on an open connection/store.

    The results are made by real ``get_or_compute`` calls (each publish links its file), and
    ``store.flush()`` brings the catalog up to date, as a process that stops writing does.
    """
    import duckdb
    from bench_sql import day_ticks, vwap_bars

    from jules_cache import FeatureStore

    store = FeatureStore(work / "sql" / "cache")
    started = time.perf_counter()
    for s in range(SQL_SYMBOLS):
        for d in range(SQL_DAYS):
            store.get_or_compute(f"S{s:03d}", day_ticks(s, d), {"window": 20}, vwap_bars)
    fill = time.perf_counter() - started
    store.flush()
    plain = duckdb.connect(str(store.root / "catalog.duckdb"), read_only=True)
    one = "SELECT count(*), avg(vwap) FROM vwap_bars WHERE symbol = 'S005'"
    every = "SELECT count(*), avg(vwap) FROM vwap_bars"
    cases = {
        "store.sql WHERE symbol": lambda: store.sql(one).row(0),
        "plain DuckDB WHERE symbol": lambda: plain.execute(one).fetchall()[0],
        "store.sql full aggregate": lambda: store.sql(every).row(0),
        "plain DuckDB full aggregate": lambda: plain.execute(every).fetchall()[0],
    }
    answers = {name: func() for name, func in cases.items()}  # warm-up, and the same answer
    for kind in ("WHERE symbol", "full aggregate"):
        mine, theirs = answers[f"store.sql {kind}"], answers[f"plain DuckDB {kind}"]
        assert mine[0] == theirs[0] and abs(mine[1] - theirs[1]) < 1e-9, (kind, mine, theirs)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(max(rounds, 5) * 3):
        for name, func in cases.items():
            samples[name].append(clock(func)[0])
    plain.close()
    store.close()
    medians = {name: ms(median(values)) for name, values in samples.items()}
    return {
        "description": f"WHERE symbol = one of {SQL_SYMBOLS} symbols, "
        f"{SQL_SYMBOLS * SQL_DAYS} results of one feature x 5,000 rows",
        "results": SQL_SYMBOLS * SQL_DAYS,
        "fill_seconds": fill,
        "medians_ms": medians,
        "samples_ms": {name: [ms(x) for x in values] for name, values in samples.items()},
        "plain_vs_store_sql": medians["plain DuckDB WHERE symbol"]
        / medians["store.sql WHERE symbol"],
        "full_plain_vs_store_sql": medians["plain DuckDB full aggregate"]
        / medians["store.sql full aggregate"],
    }


def print_medium(document: dict[str, Any]) -> None:
    """Print the medium case: hit, miss and compute per cache, and the raw-read floor."""
    case = document["latency"]["medium"]
    print(f"\n{case['description']}: {case['result_rows']:,} result rows")
    print(f"  compute (no cache)  {case['compute_ms']:8.1f} ms")
    for kind, entry in case["caches"].items():
        if "error" in entry:
            print(f"  {peers.LABELS[kind]:18}  error: {entry['error'][:100]}")
            continue
        print(
            f"  {peers.LABELS[kind]:18}  hit {entry['hit_ms']:7.1f} ms   "
            f"cold miss {entry['miss_ms']:7.1f} ms   "
            f"miss/compute {entry['miss_ratio_vs_compute']:.2f}"
        )
    raw = case.get("raw_read")
    if raw:
        print(
            f"  jules_cache hit {raw['jules_hit_ms']:.1f} ms vs pl.read_parquet of its file "
            f"{raw['read_parquet_ms']:.1f} ms: {raw['hit_vs_read_parquet']:.2f}x"
        )
    jc = case["caches"].get("jules_cache", {})
    jl = case["caches"].get("joblib", {})
    if "miss_ms" in jc and "miss_ms" in jl:
        print(f"  cold miss jules_cache / joblib: {jc['miss_ms'] / jl['miss_ms']:.2f}")


def print_new_rows(document: dict[str, Any]) -> None:
    """Print the big-input, new-process, SQL and view rows with their ratios."""
    big = document.get("big_input")
    if big:
        print(f"\n{big['description']}  ({big['input_mb']:.0f} MB, {big['rounds']} rounds)")
        print(f"  no cache (recompute)      {big['no_cache_ms']:9.1f} ms")
        print(f"  jules fingerprint alone   {big['jules_fingerprint_ms']:9.1f} ms")
        print(f"  raw-buffer xxh3 floor     {big['raw_buffer_xxh3_ms']:9.1f} ms")
        print(f"  + categorical rank lookup {big['categorical_rank_lookup_ms']:9.1f} ms")
        for kind, entry in big["caches"].items():
            if "error" in entry:
                print(f"  {peers.LABELS[kind]:24}  error: {entry['error'][:100]}")
                continue
            print(
                f"  {peers.LABELS[kind]:24}  {entry['hit_ms']:9.1f} ms  "
                f"hit/no-cache {entry['hit_vs_no_cache']:.2f}  correct {entry['hit_correct']}"
            )
    first = document.get("first_hit")
    if first:
        print(f"\nfirst hit in a new process, imports included ({first['rounds']} rounds)")
        for kind, entry in first["caches"].items():
            if "error" in entry:
                print(f"  {peers.LABELS[kind]:24}  error: {entry['error'][-200:]}")
                continue
            print(
                f"  {peers.LABELS[kind]:24}  {entry['first_hit_ms']:7.1f} ms  "
                f"(import {entry['import_ms']:.1f} ms, process wall "
                f"{entry['process_wall_ms']:.0f} ms)  ÷ jules_cache {entry['vs_jules_cache']:.2f}  "
                f"recomputed {entry['recomputed']}"
            )
    sql = document.get("sql_symbol")
    if sql:
        print(f"\nSQL: {sql['description']}")
        for name, value in sql["medians_ms"].items():
            print(f"  {name:28} {value:8.1f} ms")
        print(f"  plain DuckDB / store.sql, WHERE symbol: {sql['plain_vs_store_sql']:.2f}x")
    full = document.get("sql_full_aggregate")
    if full:
        from bench_sql import print_full_aggregate

        print_full_aggregate(full)
    views = document.get("views")
    if views:
        print(f"\nadding a feature / result schema at {views['entries']:,} results")
        for kind, row in views["kinds"].items():
            print(
                f"  {kind:26} view upkeep under the exclusive lock "
                f"{row['view_upkeep_ms']['max']:6.1f} ms max; exclusive hold "
                f"{row['exclusive_max_ms']['max']:6.1f} ms max; catalog rebuild "
                f"{row['catalog_rebuild_ms']['median']:7.0f} ms (shared hold "
                f"{row['catalog_shared_hold_ms']['max']:5.1f} ms max)"
            )


# --------------------------------------------------------------------------- 4. disk


def bench_disk(work: Path, latency: dict[str, Any]) -> dict[str, Any]:
    """Bytes each latency cache holds for the same entries, with the biggest part named."""
    result: dict[str, Any] = {}
    for kind in PEERS:
        root = work / "latency" / kind
        total = dir_bytes(root)
        detail: dict[str, int] = {}
        if kind == "diskcache":
            detail["sqlite_bytes"] = sum(
                p.stat().st_size for p in root.glob("cache.db*") if p.is_file()
            )
        if kind == "jules_cache":
            detail["manifest_bytes"] = sum(
                p.stat().st_size for p in root.glob("manifest.duckdb*") if p.is_file()
            )
        result[kind] = {"bytes": total, "entries": entries_present(kind, root), **detail}
    result["entries_per_cache"] = latency["_entries_per_cache"]
    return result


def entries_present(kind: str, root: Path) -> int:
    """How many results the cache still holds (diskcache evicts past its 1 GB default)."""
    if kind == "jules_cache":
        from jules_cache import FeatureStore

        return FeatureStore(root).stats().entries
    if kind == "joblib":
        import joblib

        return len(joblib.Memory(str(root), verbose=0).store_backend.get_items())
    import diskcache

    with diskcache.Cache(str(root)) as cache:
        return len(cache)


# --------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="1M ticks (about a minute)")
    size.add_argument("--large", action="store_true", help="50M ticks (needs ~16 GB RAM)")
    size.add_argument("--ticks", type=int, help="total ticks (default 5,000,000)")
    parser.add_argument("--symbols", type=int, default=64, help="symbols (default 64)")
    parser.add_argument("--processes", type=int, default=8, help="sharing processes (default 8)")
    parser.add_argument("--keys", type=int, default=8, help="keys in the process test (default 8)")
    parser.add_argument(
        "--misses", type=int, default=5, help="cold misses per case (default 5; large input: 3)"
    )
    parser.add_argument(
        "--only",
        choices=("new-rows", "first-hit", "medium", "sql", "views", "miss"),
        help="run only the new rows (10M-row cheap-feature hit, new-process first hit), "
        "only the first hit in a new process, "
        "only the medium case's latency (1M-row result at the default 5M ticks), only the "
        "SQL row (plain DuckDB vs store.sql), only the view row (publish at 100k results) or "
        "only the miss row (a small daily feature's miss over its compute, joblib beside it)",
    )
    parser.add_argument(
        "--view-entries", type=int, default=100_000, help="results of the view row (100k)"
    )
    parser.add_argument(
        "--big-rows", type=int, default=BIG_INPUT_ROWS, help="rows of the big-input row (10M)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the new rows (7)")
    parser.add_argument("--workdir", type=Path, help="keep the caches here (default: a temp dir)")
    parser.add_argument("--output", default="compare", help="results file stem (default compare)")
    args = parser.parse_args(argv)
    args.total_ticks = args.ticks or (
        1_000_000 if args.quick else 50_000_000 if args.large else 5_000_000
    )
    if args.symbols < 4 or args.keys > args.symbols:
        parser.error("need --symbols >= 4 and --keys <= --symbols")
    return args


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    started = time.perf_counter()
    names = symbol_names(args.symbols)
    load_start = os.getloadavg()
    print(f"generating {args.total_ticks:,} ticks for {len(names)} symbols…", flush=True)
    ticks_path = work / "ticks.parquet"
    make_ticks(names, args.total_ticks).write_parquet(ticks_path)
    # Every process (this one included) reads the ticks back from the same file, so the frames
    # the peers pickle to build their keys are laid out identically everywhere.
    ticks = pl.read_parquet(ticks_path)
    features_dir = work / "features"
    peers.write_features(features_dir)
    features = peers.import_features(features_dir)
    basket = names[len(names) // 2 :]  # the less-traded half: ~10k 1-minute bars
    cases = [
        Case(
            "small",
            "1-minute bars, the less-traded half of the symbols",
            "minute_bars",
            tuple(basket),
            {"every": "1m", "window": 20},
            hits=20,
            misses=args.misses,
        ),
        Case(
            "medium",
            "tick-level features, the most-traded symbol",
            "tick_features",
            (names[0],),
            {"window": 100},
            hits=10,
            misses=args.misses,
        ),
        Case(
            "large input",
            "1-minute bars, every symbol",
            "minute_bars",
            (),
            {"every": "1m", "window": 20},
            hits=5,
            misses=max(args.misses - 3, 2),
        ),
    ]
    sections: dict[str, float] = {"generate": time.perf_counter() - started}
    mark = time.perf_counter()
    if args.only == "medium":
        print("1. hit latency and cold misses (medium case only)", flush=True)
        latency = bench_latency([cases[1]], ticks, features, work)
        return {
            "environment": {
                **machine(),
                "command": "python " + shlex.join(["benchmarks/compare.py", *sys.argv[1:]]),
                "versions": report.versions(),
                "ticks": args.total_ticks,
                "load_average_start": load_start,
                "load_average_end": os.getloadavg(),
            },
            "latency": latency,
        }
    if args.only in ("sql", "views", "miss"):
        return {
            "environment": {
                **machine(),
                "command": "python " + shlex.join(["benchmarks/compare.py", *sys.argv[1:]]),
                "versions": report.versions(),
                "load_average_start": load_start,
                "load_average_end": os.getloadavg(),
            },
            **issue13_rows(args, work, only=args.only),
        }
    print("5. first hit in a new process; hit on a 10M-row input", flush=True)
    new_rows = {"first_hit": bench_first_hit(ticks_path, features_dir, basket, work, args.rounds)}
    if args.only != "first-hit":
        new_rows["big_input"] = bench_big_input(features, work, args.big_rows, args.rounds)
    sections["new_rows"], mark = time.perf_counter() - mark, time.perf_counter()
    if args.only:
        return {
            "environment": {
                **machine(),
                "command": "python " + shlex.join(["benchmarks/compare.py", *sys.argv[1:]]),
                "versions": report.versions(),
                "load_average_start": load_start,
                "load_average_end": os.getloadavg(),
                "section_seconds": sections,
            },
            **new_rows,
        }
    print("1. hit latency and cold misses", flush=True)
    latency = bench_latency(cases, ticks, features, work)
    sections["latency"], mark = time.perf_counter() - mark, time.perf_counter()
    print(f"2. {args.processes} processes sharing one cache", flush=True)
    processes = bench_processes(
        ticks_path,
        features_dir,
        features,
        ticks,
        names[: args.keys],
        args.processes,
        100,
        work,
    )
    for entry in processes.values():
        entry["key_symbols"] = f"the {args.keys} most-traded symbols"
    sections["processes"], mark = time.perf_counter() - mark, time.perf_counter()
    print("3. does each cache notice a change?", flush=True)
    code = bench_code_change(ticks_path, basket, 20, work)
    basket_ticks = peers.read_basket(str(ticks_path), basket)
    data = bench_data_change(basket_ticks, features, 20, work)
    sections["changes"] = time.perf_counter() - mark
    print("4. disk and capabilities", flush=True)
    disk = bench_disk(work, latency)
    mark = time.perf_counter()
    new_rows.update(issue13_rows(args, work))
    sections["sql_and_views"] = time.perf_counter() - mark
    document: dict[str, Any] = {
        "environment": {
            **machine(),
            "command": "python " + shlex.join(["benchmarks/compare.py", *sys.argv[1:]]),
            "cpu_model": report.cpu_model(),
            "memory_gb": report.memory_gb(),
            "versions": report.versions(),
            "ticks": args.total_ticks,
            "symbols": args.symbols,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
            "section_seconds": sections,
        },
        "latency": latency,
        "processes": processes,
        "code_change": code,
        "data_change": data,
        "disk": disk,
        **new_rows,
        "capabilities": {"jules_cache": report.jules_capabilities(), **report.CAPABILITIES},
    }
    document["peer_wins"] = report.peer_wins(document)
    document["environment"]["total_seconds"] = time.perf_counter() - started
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    document["environment"]["cpu_seconds"] = sum(u.ru_utime + u.ru_stime for u in usage)
    return document


def issue13_rows(args: argparse.Namespace, work: Path, only: str | None = None) -> dict:
    """6. plain DuckDB vs store.sql at 1000 results; 7. view work when a feature or a result
    schema is added at 100k results (``bench_views``)."""
    import bench_miss
    import bench_views

    rows: dict[str, Any] = {}
    if only in (None, "miss"):
        print("8. a miss on a small daily feature, over its compute, joblib beside it", flush=True)
        rows["miss"] = bench_miss.run(work / "miss", args.rounds * 6, 7)
        bench_miss.show(rows["miss"])
    if only in (None, "sql"):
        print("6. SQL: plain DuckDB on catalog.duckdb vs store.sql, WHERE symbol", flush=True)
        rows["sql_symbol"] = bench_sql_symbol(work, args.rounds)
        print("6b. SQL: full aggregate over 400 results, vs DuckDB's read_parquet", flush=True)
        from bench_sql import measure_full_aggregate

        rows["sql_full_aggregate"] = measure_full_aggregate(work / "sql-full", max(args.rounds, 9))
    if only in (None, "views"):
        print(f"7. adding a feature / result schema at {args.view_entries:,} results", flush=True)
        rows["views"] = bench_views.run(work / "views", args.view_entries, 3)
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=False)
        document = run(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="jules-compare-") as tmp:
            document = run(args, Path(tmp))
    if args.only == "medium":
        print_medium(document)
        write_json(f"{args.output}-{args.only}", document)
        return
    if args.only:
        print_new_rows(document)
        write_json(f"{args.output}-{args.only}", document)
        return
    report.print_summary(document)
    print_new_rows(document)
    write_json(args.output, document)
    path = RESULTS / f"{args.output}.md"
    path.write_text(report.markdown(document))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
