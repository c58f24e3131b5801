"""Local root vs shared root (S3 objects + PostgreSQL catalog), side by side in one run.

    eval "$(scripts/services.sh start)"    # or let this script start throwaway services
    python benchmarks/bench_shared.py [--quick] [--gc-entries 100000]
    python benchmarks/bench_shared.py --only sql    # the SQL section alone (shared_sql.json)

Uses the services the environment names (as bench_shared_raw.py), else starts throwaway ones
(PostgreSQL + SeaweedFS on 127.0.0.1) and stops them at the end. Every variant of a section is
warmed up, then the variants run interleaved round by round, so load from other processes on
this shared machine hits them alike; medians and p90s. Sections (with their targets):

- hit latency of a 10k x 8 result (bench_store.py's: 100k-row input, fingerprinted each call)
  and a 1M x 8 result, local vs shared, next to the raw reads of the same bytes: boto3
  ``get_object`` of the object (target: shared hit <= 2x this) and ``pl.read_parquet`` of the
  local file; also the backend read alone (the hit without fingerprinting the input);
- publish (the time inside ``backend.publish``; target: shared <= 25 ms p50) and the whole miss;
- 8 spawned processes x 50 overlapping keys (bench_store.py's workload), local vs shared;
- the GC plan (``gc(dry_run=True)`` in a fresh spawned process) at ``--gc-entries`` catalog
  rows and objects/files, half of them expired, plus one SQL query's snapshot cost there;
- ``store.sql`` on one symbol of 16 (``WHERE symbol = ...``), a full aggregate and SELECT 1.

Writes benchmarks/results/shared.json (machine, versions, load averages, every sample summary).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.dataset as ds

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "shared"))
import shared_services  # noqa: E402
from bench_gc import build_cache, tiny_parquet  # noqa: E402
from bench_shared_raw import interleaved, result_frame  # noqa: E402
from bench_sql import day_ticks, vwap_bars  # noqa: E402
from bench_store import input_frame, ten_k_by_eight  # noqa: E402
from common import peak_rss_mb, percentile, print_table, write_json  # noqa: E402

from jules_cache import FeatureStore  # noqa: E402
from jules_cache.engine.shared import object_name  # noqa: E402

PROCESSES, PROCESS_KEYS = 8, 50
SQL_SYMBOLS = 16
Spec = dict[str, Any]  # how to open one store: FeatureStore(**spec)


def stats(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(samples) * 1000,
        "p90_ms": percentile(samples, 90) * 1000,
        "n": len(samples),
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def million_by_eight(ticks: pl.LazyFrame, config: dict) -> pl.LazyFrame:
    """A 1M-row x 8-column result from a 1M-row input."""
    return ticks.with_columns((pl.col("price") * k).alias(f"f{k}") for k in range(1, 6))


# -- hits ------------------------------------------------------------------------------------


def bench_hits(local: FeatureStore, shared: FeatureStore, rounds: dict[str, int]) -> dict:
    objects = shared._backend.objects  # type: ignore[attr-defined]
    cases = {
        "10k x 8": (input_frame(), ten_k_by_eight),
        "1M x 8": (result_frame(1_000_000).select("ts", "price", "size"), million_by_eight),
    }
    results: dict[str, Any] = {}
    for label, (data, feature) in cases.items():
        local_miss = local.fetch("AAPL", data, {"hit": 1}, feature)
        shared_miss = shared.fetch("AAPL", data, {"hit": 1}, feature)
        key = shared_miss.key
        assert key == local_miss.key, "local and shared keys differ for the same call"
        s3_key = objects.key_of(object_name(key))
        local_path = local_miss.path

        def raw_get(s3_key: str = s3_key) -> bytes:
            return objects.client.get_object(Bucket=objects.bucket, Key=s3_key)["Body"].read()

        def call(store: FeatureStore, data: Any = data, feature: Any = feature) -> Callable:
            def hit() -> None:
                assert store.fetch("AAPL", data, {"hit": 1}, feature).hit

            return hit

        variants = {
            "local hit (fetch)": call(local),
            "shared hit (fetch)": call(shared),
            "local backend.read": lambda key=key: local._backend.read(key, False),
            "shared backend.read": lambda key=key: shared._backend.read(key, False),
            "raw pl.read_parquet(local file)": lambda p=local_path: pl.read_parquet(p),
            "raw S3 GET (boto3 get_object bytes)": raw_get,
            "raw S3 GET + pl.read_parquet": lambda: pl.read_parquet(io.BytesIO(raw_get())),
        }
        samples = interleaved(variants, rounds[label])
        figures = {name: stats(values) for name, values in samples.items()}
        p50 = {name: f["p50_ms"] for name, f in figures.items()}
        results[label] = {
            "object_bytes": len(raw_get()),
            "rows": local_miss.value.height,
            "samples": figures,
            "ratios": {
                "shared hit / raw S3 GET": p50["shared hit (fetch)"]
                / p50["raw S3 GET (boto3 get_object bytes)"],
                "shared backend.read / raw S3 GET": p50["shared backend.read"]
                / p50["raw S3 GET (boto3 get_object bytes)"],
                "shared hit / local hit": p50["shared hit (fetch)"] / p50["local hit (fetch)"],
                "local hit / raw pl.read_parquet": p50["local hit (fetch)"]
                / p50["raw pl.read_parquet(local file)"],
            },
            "load_average": load(),
        }
    return results


# -- publish ---------------------------------------------------------------------------------


class Timer:
    """Wrap ``owner.name`` (an instance's method) to collect its wall times."""

    def __init__(self, owner: Any, name: str):
        self.owner, self.name, self.samples = owner, name, []
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.samples.append(time.perf_counter() - started)

        setattr(owner, name, timed)

    def restore(self) -> None:
        delattr(self.owner, self.name)


def bench_publish(local: FeatureStore, shared: FeatureStore, misses: int) -> dict:
    """New keys (a new config each), local and shared alternately; the first 3 are warm-up."""
    data = input_frame()
    timers = {
        "local publish": Timer(local._backend, "publish"),
        "shared publish": Timer(shared._backend, "publish"),
        "shared: of which S3 conditional PUT": Timer(shared._backend.objects, "put_if_absent"),
        "shared: of which catalog transaction": Timer(shared._backend.catalog, "publish"),
    }
    whole: dict[str, list[float]] = {"local whole miss": [], "shared whole miss": []}
    try:
        for i in range(misses + 3):
            for name, store in (("local whole miss", local), ("shared whole miss", shared)):
                started = time.perf_counter()
                assert not store.fetch("MSFT", data, {"publish": i}, ten_k_by_eight).hit
                if i >= 3:
                    whole[name].append(time.perf_counter() - started)
    finally:
        for timer in timers.values():
            timer.restore()
    figures = {name: stats(timer.samples[3:]) for name, timer in timers.items()}
    figures.update({name: stats(values) for name, values in whole.items()})
    return {"samples": figures, "load_average": load()}


# -- 8 processes -----------------------------------------------------------------------------


def _worker(spec: Spec, worker: int, keys: int) -> tuple[int, int, list[float]]:
    """bench_store.py's worker: ``keys`` overlapping keys in another order per process."""
    store = FeatureStore(**spec)
    data = input_frame()
    errors, hits, latencies = 0, 0, []
    for i in range(keys):
        key = (i + worker * 7) % keys
        started = time.perf_counter()
        try:
            hits += store.fetch(f"S{key % 10}", data, {"k": key}, ten_k_by_eight).hit
        except Exception:
            errors += 1
        latencies.append(time.perf_counter() - started)
    store.close()
    return errors, hits, latencies


def bench_processes(specs: Callable[[str], dict[str, Spec]], rounds: int) -> dict:
    """Each round: a fresh local root and a fresh shared prefix + schema, one after the other."""
    context = multiprocessing.get_context("spawn")
    runs: dict[str, list[dict]] = {}
    with context.Pool(PROCESSES) as pool:
        for spec in specs("warm").values():  # imports, boto3 models, connections
            pool.starmap(_worker, [(spec, w, 2) for w in range(PROCESSES)])
        for round_ in range(rounds):
            for name, spec in specs(f"run{round_}").items():
                jobs = [(spec, w, PROCESS_KEYS) for w in range(PROCESSES)]
                started = time.perf_counter()
                results = pool.starmap(_worker, jobs)
                wall = time.perf_counter() - started
                with contextlib.closing(FeatureStore(**spec)) as store:
                    entries = len(store.entries())
                calls = PROCESSES * PROCESS_KEYS
                hits = sum(r[1] for r in results)
                runs.setdefault(name, []).append(
                    {
                        "wall_s": wall,
                        "calls": calls,
                        "calls_per_s": calls / wall,
                        "errors": sum(r[0] for r in results),
                        "computes": calls - hits,
                        "entries": entries,
                        "latency": stats([x for r in results for x in r[2]]),
                    }
                )
    summary = {}
    for name, found in runs.items():
        walls = [run["wall_s"] for run in found]
        middle = sorted(found, key=lambda run: run["wall_s"])[len(found) // 2]
        summary[name] = {**middle, "wall_s_all": walls, "rounds": len(found)}
    return {"runs": summary, "load_average": load()}


# -- GC plan ---------------------------------------------------------------------------------


def fill_shared(
    shared: FeatureStore, entries: int, threads: int = 16, *, objects_too: bool = True
) -> dict[str, float]:
    """``entries`` catalog rows (one INSERT ... SELECT, half last accessed 60 days ago) and as
    many tiny objects named by their keys (PUT from ``threads`` threads; rows only unless
    ``objects_too``)."""
    import psycopg

    backend = shared._backend
    catalog, objects = backend.catalog, backend.objects  # type: ignore[attr-defined]
    payload = tiny_parquet()
    started = time.perf_counter()
    fill = f"""
        INSERT INTO entries (key, feature, symbol, path, key_schema, data_fingerprint,
            data_method, config_fingerprint, config_json, code_fingerprint, code_version,
            result_schema, rows, bytes, time_column, min_time, max_time, compute_seconds,
            created_at, last_accessed_at, hit_count, library_versions, code_functions)
        SELECT md5(i::text), 'bench.feature', 'SYM' || (i % 500),
            'objects/' || left(md5(i::text), 2) || '/' || md5(i::text) || '.parquet', 1,
            md5(i::text), 'frame', md5(i::text), '{{}}', md5(i::text), NULL,
            '{{"x": "Int64", "y": "Float64"}}', 3, {len(payload)}, NULL, NULL, NULL, 0.01,
            t, t, 0, '{{}}', NULL
        FROM generate_series(1, {entries}) AS i,
            LATERAL (SELECT (now() AT TIME ZONE 'UTC') - CASE WHEN i % 2 = 0
                THEN interval '60 days' ELSE interval '0' END AS t) AS times
    """
    with psycopg.connect(catalog.dsn, autocommit=True) as connection:
        connection.execute(f"SET search_path = {catalog.schema}")
        connection.execute(fill)
    rows_seconds = time.perf_counter() - started
    if not objects_too:
        return {"rows_s": rows_seconds}
    keys = [hashlib.md5(str(i).encode()).hexdigest() for i in range(1, entries + 1)]
    return {"rows_s": rows_seconds, "objects_s": put_objects(objects, keys, payload, threads)}


def put_objects(objects: Any, keys: list[str], payload: bytes, threads: int) -> float:
    """PUT ``payload`` as each key's result object, from ``threads`` threads; the seconds."""
    client = objects.client

    def put(chunk: list[str]) -> None:
        for key in chunk:
            name = f"objects/{key[:2]}/{key}.parquet"
            client.put_object(Bucket=objects.bucket, Key=objects.key_of(name), Body=payload)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, [keys[i::threads] for i in range(threads)]))
    return time.perf_counter() - started


def _dry_run(spec: Spec, queue: Any) -> None:
    """One ``gc(dry_run=True)`` in a fresh process; for a shared root, its listing and rows
    snapshot timed on their own."""
    from jules_cache.engine import shared_upkeep

    store = FeatureStore(**spec)
    parts: dict[str, float] = {}
    if "catalog" in spec:
        listing = shared_upkeep.list_results

        def timed_listing(backend: Any) -> Any:
            started = time.perf_counter()
            found = listing(backend)
            parts["list_objects_s"] = time.perf_counter() - started
            return found

        shared_upkeep.list_results = timed_listing  # type: ignore[assignment]
        snapshot = Timer(shared_upkeep, "entries_snapshot")  # a module function: one process
    started, cpu = time.perf_counter(), time.process_time()
    report = store.gc(dry_run=True)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if "catalog" in spec:
        parts["rows_snapshot_s"] = snapshot.samples[0]
    for name in ("sql_count_entries_s", "sql_count_entries_again_s"):  # first, then kept
        sql_started = time.perf_counter()
        count = store.sql("SELECT count(*) AS n FROM entries")["n"][0]
        parts[name] = time.perf_counter() - sql_started
    queue.put(
        {
            "dry_run_s": seconds,
            "dry_run_cpu_s": cpu,  # this process's threads; less sensitive to load than wall
            "plan_s": report.plan_seconds,
            "planned": report.files,
            "peak_rss_mb": peak_rss_mb(),
            "sql_count": int(count),
            **parts,
        }
    )
    store.close()


def bench_gc(specs: dict[str, Spec], rounds: int) -> dict:
    context = multiprocessing.get_context("spawn")
    runs: dict[str, list[dict]] = {name: [] for name in specs}
    for _ in range(rounds):
        for name, spec in specs.items():
            queue = context.Queue()
            process = context.Process(target=_dry_run, args=(spec, queue))
            process.start()
            runs[name].append(queue.get(timeout=1800))
            process.join()
    summary = {}
    for name, found in runs.items():
        summary[name] = {
            key: statistics.median(run[key] for run in found)
            for key in found[0]
            if isinstance(found[0][key], float)
        }
        summary[name]["planned"] = found[0]["planned"]
        summary[name]["sql_count"] = found[0]["sql_count"]
        summary[name]["dry_run_s_all"] = [run["dry_run_s"] for run in found]
    return {"runs": summary, "load_average": load()}


# -- SQL -------------------------------------------------------------------------------------


def bench_sql(local: FeatureStore, shared: FeatureStore, days: int, rounds: int) -> dict:
    fill: dict[str, float] = {}
    for name, store in (("local", local), ("shared", shared)):
        started = time.perf_counter()
        for s in range(SQL_SYMBOLS):
            for d in range(days):
                store.get_or_compute(f"S{s:03d}", day_ticks(s, d), {"window": 20}, vwap_bars)
        fill[name] = time.perf_counter() - started
    views = {name: store.refresh_views() for name, store in (("local", local), ("shared", shared))}
    feature = next(f for f in views["local"] if f.endswith("vwap_bars"))
    assert views["local"][feature] == views["shared"][feature]
    view = views["local"][feature]
    queries = {
        "one symbol (WHERE symbol = 'S005')": (
            f"SELECT count(*) AS n, avg(vwap) AS v FROM {view} WHERE symbol = 'S005'"
        ),
        "full aggregate": f"SELECT count(*) AS n, avg(vwap) AS v FROM {view}",
        "SELECT 1 (per-query overhead)": "SELECT 1 AS n",
    }
    variants = {}
    for label, query in queries.items():
        local_answer, shared_answer = local.sql(query), shared.sql(query)
        assert local_answer["n"].to_list() == shared_answer["n"].to_list(), label
        for name, store in (("local", local), ("shared", shared)):
            variants[f"{name}: {label}"] = lambda store=store, query=query: store.sql(query)
    # The same symbol's files read without jules_cache: what the storage itself costs.
    raw = duckdb.connect()
    local_files = [str(local.root / e.path) for e in local.entries(symbol="S005")]
    one = f"SELECT count(*) AS n, avg(vwap) AS v FROM read_parquet({local_files!r})"
    objects = shared._backend.objects  # type: ignore[attr-defined]
    filesystem = objects.arrow_filesystem()
    shared_paths = [objects.arrow_path(e.path) for e in shared.entries(symbol="S005")]

    def raw_objects() -> Any:
        raw.register("symbol_objects", ds.dataset(shared_paths, filesystem=filesystem))
        return raw.execute("SELECT count(*) AS n, avg(vwap) AS v FROM symbol_objects").fetchall()

    assert (
        raw.execute(one).fetchall()[0][0]
        == raw_objects()[0][0]
        == local.sql(queries["one symbol (WHERE symbol = 'S005')"])["n"][0]
    )
    variants[f"raw: DuckDB read_parquet of the symbol's {len(local_files)} local files"] = lambda: (
        raw.execute(one).fetchall()
    )
    variants[f"raw: pyarrow dataset of the symbol's {len(shared_paths)} S3 objects in DuckDB"] = (
        raw_objects
    )
    samples = interleaved(variants, rounds)
    one_symbol = "one symbol (WHERE symbol = 'S005')"
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "ratios": {
            "shared / local, one symbol (target <= 2)": (
                medians[f"shared: {one_symbol}"] / medians[f"local: {one_symbol}"]
            ),
            "shared / local, full aggregate": (
                medians["shared: full aggregate"] / medians["local: full aggregate"]
            ),
        },
        "results": SQL_SYMBOLS * days,
        "rows_per_result": 5_000,
        "fill_s": fill,
        "view": view,
        "samples": {name: stats(values) for name, values in samples.items()},
        "load_average": load(),
    }


# -- the run ---------------------------------------------------------------------------------


def versions(dsn: str, endpoint: str) -> dict[str, str]:
    import subprocess
    from importlib.metadata import version

    import psycopg

    found = {
        package: version(package)
        for package in ("jules-cache", "polars", "duckdb", "pyarrow", "boto3", "psycopg")
    }
    with psycopg.connect(dsn) as connection:
        found["postgresql"] = str(connection.execute("SHOW server_version").fetchone()[0])
    weed = shared_services.weed_binary()
    if weed is not None:
        output = subprocess.run([str(weed), "version"], capture_output=True, text=True).stdout
        found["seaweedfs"] = output.strip().splitlines()[0] if output.strip() else "?"
    found["s3_endpoint"] = endpoint
    return found


def cleanup(dsn: str, schemas: list[str], prefixes: list[str]) -> None:
    import psycopg

    from jules_cache.storage.s3_objects import S3ObjectStore

    with psycopg.connect(dsn, autocommit=True) as connection:
        for schema in schemas:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    for prefix in prefixes:
        objects = S3ObjectStore(prefix)
        names = [name for name, _, _ in objects.list()]
        with ThreadPoolExecutor(4) as pool:  # DeleteObjects takes 1000 per request
            list(
                pool.map(objects.delete, [names[i : i + 1000] for i in range(0, len(names), 1000)])
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller GC cache")
    parser.add_argument("--gc-entries", type=int, help="GC cache size (default 100000)")
    parser.add_argument("--only", choices=["hit", "sql"], help="run this section alone")
    args = parser.parse_args()
    everything = args.only is None
    quick = args.quick
    gc_entries = args.gc_entries or (10_000 if quick else 100_000)
    hit_rounds = {"10k x 8": 15, "1M x 8": 5} if quick else {"10k x 8": 60, "1M x 8": 15}

    started_here = None
    dsn = os.environ.get(shared_services.PG_DSN_VAR)
    endpoint = os.environ.get(shared_services.S3_ENDPOINT_VAR)
    if not dsn or not endpoint:
        started_here = shared_services.start()
        os.environ.update(started_here.env())
        dsn, endpoint = started_here.pg_dsn, started_here.s3_endpoint
    bucket = os.environ.get(shared_services.S3_BUCKET_VAR, shared_services.BUCKET)
    run = uuid.uuid4().hex[:10]
    schemas: list[str] = []
    prefixes: list[str] = []

    def shared_spec(name: str) -> Spec:
        schemas.append(f"bench_{run}_{name}")
        prefixes.append(f"s3://{bucket}/bench-{run}/{name}")
        return {"root": prefixes[-1], "catalog": dsn, "catalog_schema": schemas[-1]}

    document: dict[str, Any] = {"load_average_start": load()}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
            base = Path(tmp)
            document["versions"] = versions(dsn, endpoint)
            if everything or args.only == "hit":
                local = FeatureStore(base / "hits")
                shared = FeatureStore(**shared_spec("hits"))
                print("hits ...", flush=True)
                document["hits"] = bench_hits(local, shared, hit_rounds)
                local.close()
                shared.close()
            if everything:
                local = FeatureStore(base / "publish")
                shared = FeatureStore(**shared_spec("publish"))
                print("publish ...", flush=True)
                document["publish"] = bench_publish(local, shared, 30 if quick else 100)
                local.close()
                shared.close()

                print("8 processes ...", flush=True)
                document["processes"] = bench_processes(
                    lambda tag: {
                        "local": {"root": str(base / f"procs-{tag}")},
                        "shared": shared_spec(f"procs_{tag}"),
                    },
                    1 if quick else 3,
                )

            if everything or args.only == "sql":
                print("SQL ...", flush=True)
                local = FeatureStore(base / "sql")
                shared = FeatureStore(**shared_spec("sql"))
                document["sql"] = bench_sql(local, shared, 4 if quick else 10, 5 if quick else 15)
                local.close()
                shared.close()

            if everything:
                print(f"GC: filling {gc_entries:,} rows + objects/files ...", flush=True)
                gc_specs = {"local": {"root": str(base / "gc")}, "shared": shared_spec("gc")}
                local_fill = build_cache(base / "gc", gc_entries)
                with contextlib.closing(FeatureStore(**gc_specs["shared"])) as shared:
                    shared_fill = fill_shared(shared, gc_entries)
                print("GC: dry runs ...", flush=True)
                document["gc"] = {
                    "entries": gc_entries,
                    "fill_s": {"local": local_fill, "shared": shared_fill},
                    **bench_gc(gc_specs, 2 if quick else 3),
                }
    finally:
        if started_here is not None:
            shared_services.stop(started_here.state_dir)
        else:
            print("cleaning up the run's schemas and objects ...", flush=True)
            cleanup(dsn, schemas, prefixes)
    document["load_average_end"] = load()
    report(document, gc_entries)
    write_json("shared" if everything else f"shared_{args.only}", document)


def report(document: dict[str, Any], gc_entries: int) -> None:
    if "hits" in document:
        report_hits_to_gc(document, gc_entries)
    if "sql" not in document:
        return
    sql = document["sql"]
    print_table(
        f"store.sql over {sql['results']} results x {sql['rows_per_result']} rows "
        f"({SQL_SYMBOLS} symbols), load {sql['load_average']}",
        ["query", "p50 ms", "p90 ms", "n"],
        [[name, s["p50_ms"], s["p90_ms"], s["n"]] for name, s in sql["samples"].items()],
    )
    if "ratios" in sql:
        print_table("Ratios of p50s, SQL", ["ratio", "x"], list(sql["ratios"].items()))


def report_hits_to_gc(document: dict[str, Any], gc_entries: int) -> None:
    for label, figures in document["hits"].items():
        print_table(
            f"Hit, {label} result ({figures['object_bytes'] / 1e6:.2f} MB lz4 Parquet), "
            f"load {figures['load_average']}",
            ["variant", "p50 ms", "p90 ms", "n"],
            [[name, s["p50_ms"], s["p90_ms"], s["n"]] for name, s in figures["samples"].items()],
        )
        print_table(
            f"Ratios of p50s, {label}",
            ["ratio", "x"],
            [[name, value] for name, value in figures["ratios"].items()],
        )
    if "publish" not in document:
        return  # --only hit
    publish = document["publish"]
    print_table(
        f"Publish and whole miss (10k x 8, new keys), load {publish['load_average']}",
        ["stage", "p50 ms", "p90 ms", "n"],
        [[name, s["p50_ms"], s["p90_ms"], s["n"]] for name, s in publish["samples"].items()],
    )
    procs = document["processes"]
    print_table(
        f"{PROCESSES} spawned processes x {PROCESS_KEYS} overlapping keys (median round of "
        f"{next(iter(procs['runs'].values()))['rounds']}), load {procs['load_average']}",
        ["root", "calls", "errors", "computes", "entries", "wall s", "calls/s", "p50 ms",
         "p90 ms"],
        [[name, r["calls"], r["errors"], r["computes"], r["entries"], r["wall_s"],
          r["calls_per_s"], r["latency"]["p50_ms"], r["latency"]["p90_ms"]]
         for name, r in procs["runs"].items()],
    )  # fmt: skip
    gc = document["gc"]
    print_table(
        f"GC dry run at {gc_entries:,} rows + objects/files (half expired), fresh process, "
        f"median of {len(gc['runs']['local']['dry_run_s_all'])}, load {gc['load_average']}",
        ["root", "dry run s", "CPU s", "plan s", "list s", "rows s", "planned", "peak RSS MB",
         "SQL count(*) s", "again s"],
        [[name, r["dry_run_s"], r["dry_run_cpu_s"], r["plan_s"], r.get("list_objects_s", "-"),
          r.get("rows_snapshot_s", "-"), r["planned"], r["peak_rss_mb"],
          r["sql_count_entries_s"], r["sql_count_entries_again_s"]]
         for name, r in gc["runs"].items()],
    )  # fmt: skip


if __name__ == "__main__":
    main()
