"""A shared root's GC plan (``gc(dry_run=True)`` in a fresh spawned process) at 100k objects,
listing as before (one boto3 paginator) and now (``list_each``), alternated in one run.

    python benchmarks/bench_shared_gc_plan.py --keep s3://BUCKET/PREFIX [--entries 100000]

``--keep`` is a root filled by ``bench_shared_list.py`` (objects ``objects/xx/md5(i)``); this
script adds the matching catalog rows in a fresh schema (dropped at the end) and times the
dry run and its listing. Needs the services; writes ``benchmarks/results/shared_gc_plan.json``.
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
from bench_shared import fill_shared  # noqa: E402
from bench_shared_list import _list_results_before  # noqa: E402
from common import print_table, write_json  # noqa: E402

from jules_cache import FeatureStore  # noqa: E402


def _plan(spec: dict[str, Any], before: bool, queue: Any) -> None:
    from jules_cache.engine import shared_upkeep

    listing = (
        (lambda backend: _list_results_before(backend.objects))
        if before
        else (shared_upkeep.list_results)
    )
    parts: dict[str, float] = {}

    def timed(backend: Any) -> Any:
        started = time.perf_counter()
        found = listing(backend)
        parts["list_s"] = time.perf_counter() - started
        return found

    shared_upkeep.list_results = timed  # type: ignore[assignment]
    store = FeatureStore(**spec)
    started = time.perf_counter()
    report = store.gc(dry_run=True)
    queue.put({"dry_run_s": time.perf_counter() - started, "planned": report.files, **parts})
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", required=True)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dsn = os.environ["JULES_CACHE_TEST_PG_DSN"]
    schema = f"bench_{uuid.uuid4().hex[:10]}_gcplan"
    spec = {"root": args.keep, "catalog": dsn, "catalog_schema": schema}
    context = multiprocessing.get_context("spawn")
    runs: dict[str, list[dict[str, Any]]] = {"before: one paginator": [], "now: list_each": []}
    try:
        with FeatureStore(**spec) as store:
            fill_shared(store, args.entries, objects_too=False)
        for _ in range(args.rounds):
            for name in runs:
                queue = context.Queue()
                process = context.Process(target=_plan, args=(spec, name.startswith("b"), queue))
                process.start()
                runs[name].append(queue.get(timeout=1800))
                process.join()
    finally:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    document: dict[str, Any] = {"entries": args.entries, "load_average": os.getloadavg()}
    document["runs"] = {
        name: {
            "dry_run_s": statistics.median(r["dry_run_s"] for r in found),
            "list_s": statistics.median(r["list_s"] for r in found),
            "planned": found[0]["planned"],
            "all": found,
        }
        for name, found in runs.items()
    }
    print_table(
        f"shared GC plan at {args.entries:,} objects (median of {args.rounds}, load "
        f"{document['load_average'][0]:.1f})",
        ["listing", "dry run s", "of it listing s", "planned"],
        [[n, r["dry_run_s"], r["list_s"], r["planned"]] for n, r in document["runs"].items()],
    )
    write_json("shared_gc_plan", document)


if __name__ == "__main__":
    main()
