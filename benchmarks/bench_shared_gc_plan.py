"""A shared root's GC plan (``gc(dry_run=True)`` in a fresh spawned process) at 100k objects:
the plan as it was and as it is now, alternated in one run, each with its stages.

    python benchmarks/bench_shared_gc_plan.py --keep s3://BUCKET/PREFIX [--entries 100000]

``--keep`` is a root filled by ``bench_shared_list.py`` (objects ``objects/xx/md5(i)``); this
script adds the matching catalog rows in a fresh schema (dropped at the end) and times, per
dry run: the process (spawn to report), the imports of ``jules_cache``, ``gc()`` itself and
its CPU seconds, and inside it the listing and the rows read. "before" is the plan of the
previous round (copied below: a tuple, a datetime and a ``Listed`` per object, built into
``pyarrow`` tables, which imports pandas; rows read after the listing; the S3 client made to
resolve credentials); "now" is ``shared_upkeep``'s (columns in polars, the rows read while
the objects are listed). Needs the services; writes ``benchmarks/results/shared_gc_plan.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

STAGES = ["process_s", "imports_s", "gc_s", "gc_cpu_s", "list_s", "rows_s", "after_list_s"]


def _plan(spec: dict[str, Any], before: bool, queue: Any) -> None:
    started = time.perf_counter()
    from jules_cache import FeatureStore
    from jules_cache.engine import shared_upkeep

    parts: dict[str, float] = {"imports_s": time.perf_counter() - started}

    def timing(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any) -> Any:
            begun = time.perf_counter()
            try:
                return original(*args)
            finally:
                parts[label] = time.perf_counter() - begun
                parts[f"{label}_end"] = time.perf_counter()

        setattr(owner, name, timed)

    if before:
        shared_upkeep.CatalogRun._plan = _plan_before
        shared_upkeep.list_results = _list_results_before
    timing(shared_upkeep, "list_results", "list_s")
    timing(shared_upkeep, "entries_snapshot", "rows_s")
    store = FeatureStore(**spec)
    begun, cpu = time.perf_counter(), time.process_time()
    report = store.gc(dry_run=True)
    ended = time.perf_counter()
    parts["gc_cpu_s"] = time.process_time() - cpu
    parts["after_list_s"] = ended - parts.pop("list_s_end")
    parts.pop("rows_s_end")
    queue.put({"gc_s": ended - begun, "planned": report.files, **parts})
    store.close()


# -- the plan of the previous round, for "before" ---------------------------------------------


def _list_results_before(backend: Any) -> dict[str, Any]:
    """``list_results`` as it was: a tuple, datetimes and a ``Listed`` per object."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC

    import pyarrow.fs

    from jules_cache.engine.shared_upkeep import _RESULT_FOLDERS, Listed
    from jules_cache.storage.layout import KEY_PATTERN

    objects = backend.objects
    objects.client  # noqa: B018 - the old arrow_filesystem made the client for credentials
    filesystem = objects.arrow_filesystem()

    def folder(name: str) -> list[tuple[str, int, Any]]:
        path = objects.arrow_path(name.removesuffix("/"))
        try:
            found = filesystem.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
        except FileNotFoundError:
            return []
        start = len(objects.bucket) + 1
        return sorted(
            (
                objects._name_of(info.path[start:]),
                int(info.size),
                info.mtime.astimezone(UTC).replace(tzinfo=None),
            )
            for info in found
            if info.type == pyarrow.fs.FileType.File
        )

    found: dict[str, Any] = {}
    with ThreadPoolExecutor(16) as pool:
        for listed in pool.map(folder, sorted(_RESULT_FOLDERS)):
            for name, size, modified in listed:
                key = name.rsplit("/", 1)[-1].removesuffix(".parquet")
                if KEY_PATTERN.fullmatch(key) and name == f"objects/{key[:2]}/{key}.parquet":
                    found[key] = Listed(name, int(size), modified.replace(tzinfo=UTC))
    return found


def _plan_before(self: Any) -> list[Any]:
    """``CatalogRun._plan`` as it was: objects listed, then rows read, then tables built."""
    from datetime import UTC, datetime, timedelta

    import duckdb
    import pyarrow as pa

    from jules_cache.engine import shared_upkeep
    from jules_cache.maintenance.gc import GCItem
    from jules_cache.storage import sqlfiles
    from jules_cache.storage.layout import result_name
    from jules_cache.storage.manifest import utc_now

    started = time.perf_counter()
    listed = shared_upkeep.list_results(self.backend)
    rows = shared_upkeep.entries_snapshot(self.backend.catalog)
    files = pa.table(
        {
            "filename": [f"/{item.name}" for item in listed.values()],
            "size": pa.array([item.size for item in listed.values()], pa.int64()),
            "last_modified": pa.array(
                [item.modified for item in listed.values()],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    entries = pa.table(
        {
            "key": [row[0] for row in rows],
            "bytes": pa.array([row[1] for row in rows], pa.int64()),
            "last_accessed_at": pa.array([row[2] for row in rows], pa.timestamp("us")),
            "expires_at": pa.array([row[3] for row in rows], pa.timestamp("us")),
        }
    )
    now = utc_now()
    params = {
        "expire_before": now - timedelta(weeks=self.options.retention_weeks),
        "max_bytes": self.options.max_size,
        "now": now,
    }
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET enable_progress_bar = false")
        con.register("gc_files_in", files)
        con.register("entries_in", entries)
        con.execute("CREATE TEMP TABLE gc_files AS SELECT * FROM gc_files_in")
        con.execute("CREATE TEMP TABLE entries AS SELECT * FROM entries_in")
        planned = con.execute(sqlfiles.statement("gc.sql", "plan"), params).fetchall()
    finally:
        con.close()
    self.plan_seconds = time.perf_counter() - started
    stale_before = datetime.now(UTC) - timedelta(seconds=self.options.grace_seconds)
    chosen = []
    for reason, key, size, last_access in planned:
        if reason == "orphan" and listed[key].modified >= stale_before:
            continue
        self._last_access[key] = last_access
        path = listed[key].name if key in listed else result_name(key)
        chosen.append(GCItem(reason, path, int(size or 0), key))
    return chosen


def main() -> None:
    from bench_shared import fill_shared
    from common import print_table, write_json

    from jules_cache import FeatureStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", required=True)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    dsn = os.environ["JULES_CACHE_TEST_PG_DSN"]
    schema = f"bench_{uuid.uuid4().hex[:10]}_gcplan"
    spec = {"root": args.keep, "catalog": dsn, "catalog_schema": schema}
    context = multiprocessing.get_context("spawn")
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "now": []}
    try:
        with FeatureStore(**spec) as store:
            fill_shared(store, args.entries, objects_too=False)
        for round_ in range(args.rounds + 1):  # the first round warms the server and caches
            for name in runs:
                queue = context.Queue()
                started = time.perf_counter()
                process = context.Process(target=_plan, args=(spec, name == "before", queue))
                process.start()
                found = queue.get(timeout=1800)
                found["process_s"] = time.perf_counter() - started
                process.join()
                if round_:
                    runs[name].append(found)
    finally:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    document: dict[str, Any] = {"entries": args.entries, "load_average": os.getloadavg()}
    document["runs"] = {
        name: {
            **{stage: statistics.median(r[stage] for r in found) for stage in STAGES},
            "planned": found[0]["planned"],
            "all": found,
        }
        for name, found in runs.items()
    }
    before, now = document["runs"]["before"], document["runs"]["now"]
    document["gc_ratio_now_to_before"] = statistics.median(
        n["gc_s"] / b["gc_s"] for b, n in zip(runs["before"], runs["now"], strict=True)
    )
    print_table(
        f"shared GC plan at {args.entries:,} objects, seconds (median of {args.rounds}, load "
        f"{document['load_average'][0]:.1f}); now/before gc_s, paired: "
        f"{document['gc_ratio_now_to_before']:.2f}",
        ["stage", "before", "now"],
        [[stage, before[stage], now[stage]] for stage in STAGES]
        + [["planned", before["planned"], now["planned"]]],
    )
    write_json("shared_gc_plan", document)


if __name__ == "__main__":
    main()
