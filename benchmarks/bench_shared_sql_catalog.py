"""``store.sql`` on a shared root whose catalog holds many rows: what each query copies.

    python benchmarks/bench_shared_sql_catalog.py [--entries 100000] [--rounds 7]

Fills ``--entries`` catalog rows (rows only: the query reads the catalog, not the objects),
then times, interleaved in one run (medians after a warm-up):

- the snapshot as it was: every table copied whole for each query (the source's watermark
  reset, so ``changes_since`` replaces every table);
- a query after one publish, the query session's table copies made anew (as before the
  session's copies took only the changes);
- a query after one publish (one new entry through ``get_or_compute``, not timed);
- a query after no change at all.

Needs the services (``scripts/services.sh start``); writes
``benchmarks/results/shared_sql_catalog.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import polars as pl

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bench_shared import fill_shared  # noqa: E402
from common import print_table, write_json  # noqa: E402

from jules_cache import FeatureStore  # noqa: E402

QUERY = "SELECT count(*) AS n, sum(bytes) AS b FROM entries"


def one_row(ticks: pl.LazyFrame, config: dict[str, Any]) -> pl.LazyFrame:
    return ticks.select(pl.col("x").sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    dsn = os.environ["JULES_CACHE_TEST_PG_DSN"]
    bucket = os.environ.get("JULES_CACHE_TEST_S3_BUCKET", "jules-cache-test")
    run = uuid.uuid4().hex[:10]
    schema = f"bench_{run}_sqlcat"
    store = FeatureStore(f"s3://{bucket}/bench-{run}/sqlcat", catalog=dsn, catalog_schema=schema)
    document: dict[str, Any] = {"entries": args.entries}
    try:
        document["fill_s"] = fill_shared(store, args.entries, objects_too=False)
        store.sql(QUERY)
        source = store._backend._sql_source  # type: ignore[attr-defined]
        published = 0

        def publish() -> None:
            nonlocal published
            published += 1
            frame = pl.DataFrame({"x": [published]})
            store.get_or_compute(f"P{published}", frame, {}, one_row)

        def whole() -> None:
            source._watermark = None  # what every query did before: copy it all
            store.sql(QUERY)

        def session_copied_whole() -> None:
            from jules_cache.query import sql as query_sql

            assert query_sql._session is not None
            query_sql._session.tables.clear()  # forgets its copies: each is made anew
            store.sql(QUERY)

        variants = {
            "every table copied whole (before)": (None, whole),
            "after one publish, session copies made anew (before)": (
                publish,
                session_copied_whole,
            ),
            "after one publish (now)": (publish, lambda: store.sql(QUERY)),
            "after no change (now)": (None, lambda: store.sql(QUERY)),
        }
        for prepare, query in variants.values():  # warm-up
            if prepare:
                prepare()
            query()
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (prepare, query) in variants.items():
                if prepare:
                    prepare()
                started = time.perf_counter()
                query()
                samples[name].append(time.perf_counter() - started)
        expected = args.entries + published
        assert store.sql(QUERY)["n"][0] == expected, "the copy lost or invented rows"
        document["load_average"] = os.getloadavg()
        document["samples"] = {
            name: {"median_ms": statistics.median(s) * 1000, "all_s": s}
            for name, s in samples.items()
        }
    finally:
        import psycopg

        store.close()
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    print_table(
        f"store.sql on a {args.entries:,}-row shared catalog (median of {args.rounds}, load "
        f"{document['load_average'][0]:.1f})",
        ["variant", "median ms"],
        [[name, r["median_ms"]] for name, r in document["samples"].items()],
    )
    write_json("shared_sql_catalog", document)


if __name__ == "__main__":
    main()
