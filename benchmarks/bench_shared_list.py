"""How fast a shared root lists its result objects: the listing side of a GC plan.

    python benchmarks/bench_shared_list.py [--objects 100000] [--rounds 3] [--keep PREFIX]

Fills ``--objects`` tiny objects under ``objects/xx/`` of a fresh prefix (or reuses ``--keep``,
an s3:// root filled by an earlier run, which is then not deleted) and times, interleaved in
one run, medians after a warm-up:

- ``S3ObjectStore.list`` of ``objects/`` (one boto3 paginator, 1000 keys a page, the old GC path);
- boto3 paginators over the 256 ``objects/xx/`` prefixes on 16 threads;
- pyarrow ``S3FileSystem.get_file_info(FileSelector(objects/, recursive=True))`` (C++);
- pyarrow ``get_file_info`` per prefix on 16 threads;
- ``S3ObjectStore.list_each`` over the 256 folders on 8 and 32 threads (a tuple per object);
- ``S3ObjectStore.list_frame`` over the 256 folders (columns, as GC lists now);
- ``list_results`` as it was (over ``S3ObjectStore.list``) and as GC runs it now (``list_frame``,
  filtered to the cache's names with polars).

Needs the services (``scripts/services.sh start``); writes ``benchmarks/results/shared_list.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_gc import tiny_parquet
from common import print_table, write_json

from jules_cache.engine import shared_upkeep
from jules_cache.storage.layout import KEY_PATTERN
from jules_cache.storage.s3_objects import S3ObjectStore

PREFIXES = [f"objects/{i:02x}/" for i in range(256)]


def fill(objects: S3ObjectStore, count: int, threads: int = 16) -> float:
    from bench_shared import put_objects

    keys = [hashlib.md5(str(i).encode()).hexdigest() for i in range(count)]
    return put_objects(objects, keys, tiny_parquet(), threads)


def variants(objects: S3ObjectStore) -> dict[str, Callable[[], int]]:
    import pyarrow.fs as pafs

    filesystem = objects.arrow_filesystem()
    client = objects.client

    def boto_one(prefix: str) -> int:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=objects.bucket, Prefix=objects.key_of(prefix.rstrip("/")) + "/"
        )
        return sum(len(page.get("Contents", ())) for page in pages)

    def arrow_one(prefix: str) -> int:
        selector = pafs.FileSelector(objects.arrow_path(prefix.rstrip("/")), recursive=True)
        found = filesystem.get_file_info(selector)
        return sum(1 for info in found if info.type == pafs.FileType.File)

    def threaded(one: Callable[[str], int]) -> Callable[[], int]:
        def run() -> int:
            with ThreadPoolExecutor(16) as pool:
                return sum(pool.map(one, PREFIXES))

        return run

    return {
        "S3ObjectStore.list, one paginator (before)": lambda: sum(
            1 for _ in objects.list("objects/")
        ),
        "boto3 paginators, 256 prefixes, 16 threads": threaded(boto_one),
        "pyarrow get_file_info, one recursive selector": lambda: arrow_one("objects/"),
        "pyarrow get_file_info, 256 prefixes, 16 threads": threaded(arrow_one),
        "S3ObjectStore.list_each, 256 folders, 8 threads": lambda: sum(
            1 for _ in objects.list_each(PREFIXES, threads=8)
        ),
        "S3ObjectStore.list_each, 256 folders, 32 threads": lambda: sum(
            1 for _ in objects.list_each(PREFIXES, threads=32)
        ),
        "S3ObjectStore.list_frame, 256 folders, 16 threads": lambda: len(
            objects.list_frame(PREFIXES)
        ),
        "list_results as before (S3ObjectStore.list)": lambda: len(_list_results_before(objects)),
        "shared_upkeep.list_results (GC now: list_frame, 16 threads)": lambda: len(
            shared_upkeep.list_results(_Backend(objects))  # type: ignore[arg-type]
        ),
    }


def _list_results_before(objects: S3ObjectStore) -> dict[str, Any]:
    """list_results as it was: one paginator over ``objects/``."""
    found = {}
    for name, size, modified in objects.list("objects/"):
        key = name.rsplit("/", 1)[-1].removesuffix(".parquet")
        if KEY_PATTERN.fullmatch(key) and name == f"objects/{key[:2]}/{key}.parquet":
            found[key] = shared_upkeep.Listed(name, int(size), modified.replace(tzinfo=UTC))
    return found


class _Backend:
    """The one attribute ``list_results`` reads."""

    def __init__(self, objects: S3ObjectStore):
        self.objects = objects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", help="an s3:// root filled by an earlier run (reused, kept)")
    parser.add_argument("--only", help="run only variants whose label contains this")
    args = parser.parse_args()
    bucket = os.environ.get("JULES_CACHE_TEST_S3_BUCKET", "jules-cache-test")
    url = args.keep or f"s3://{bucket}/bench-list-{uuid.uuid4().hex[:10]}"
    objects = S3ObjectStore(url, lock_timeout=30.0)
    document: dict[str, Any] = {"objects": args.objects, "root": url}
    if not args.keep:
        print(f"filling {args.objects:,} objects under {url} ...", flush=True)
        document["fill_s"] = fill(objects, args.objects)
        print(f"  {document['fill_s']:.1f} s; keep it with --keep {url}", flush=True)
    chosen = {k: v for k, v in variants(objects).items() if not args.only or args.only in k}
    counts = {name: func() for name, func in chosen.items()}  # warm-up, and the same answer
    samples: dict[str, list[float]] = {name: [] for name in chosen}
    for _ in range(args.rounds):
        for name, func in chosen.items():
            started = time.perf_counter()
            func()
            samples[name].append(time.perf_counter() - started)
    document["load_average"] = os.getloadavg()
    document["samples"] = {
        name: {"median_s": statistics.median(s), "all_s": s, "listed": counts[name]}
        for name, s in samples.items()
    }
    print_table(
        f"listing {args.objects:,} objects (median of {args.rounds}, load "
        f"{document['load_average'][0]:.1f})",
        ["variant", "median s", "listed"],
        [[name, r["median_s"], r["listed"]] for name, r in document["samples"].items()],
    )
    write_json("shared_list", document)


if __name__ == "__main__":
    main()
