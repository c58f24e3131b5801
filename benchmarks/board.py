"""The speed board: every speed target of the project, measured in one run, in one table.

    python benchmarks/board.py            # run every script below in turn, then the table
    python benchmarks/board.py --table    # the table from the JSON the scripts last wrote

Runs each script (medians after warm-up, peers and floors in the same script run), then reads
their ``benchmarks/results/*.json`` and writes ``benchmarks/results/board.md`` and
``board.json``: one row per target with the command, the figure, the limit or peer it is held
against, the goal and whether it is met. The shared rows need the services
(``eval "$(scripts/services.sh start)"``); without them they say "not measured".
``docs/benchmarks.md`` quotes ``board.md`` between its ``board`` markers (``--docs`` rewrites
that part).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOCS = HERE.parent / "docs" / "benchmarks.md"
START, END = "<!-- board:start -->", "<!-- board:end -->"
SHARED = ("JULES_CACHE_TEST_PG_DSN", "JULES_CACHE_TEST_S3_ENDPOINT")

# What the board runs, in order: (script and arguments, needs the shared services).
RUNS: list[tuple[list[str], bool]] = [
    (["bench_store.py"], False),
    (["bench_miss.py"], False),
    (["bench_imports.py"], False),
    (["compare.py", "--only", "first-hit"], False),
    (["bench_big_hit.py"], False),
    (["bench_sql.py", "--full-aggregate"], False),
    (["bench_sql.py"], False),
    (["bench_gc.py", "--plan-only"], False),
    (["bench_shared.py", "--only", "hit"], True),
    (["bench_shared.py", "--only", "sql"], True),
    (["bench_shared_sql_catalog.py"], True),
    (["bench_shared_list.py", "--only", "list_frame", "--rounds", "1"], True),  # fills a root
    (["bench_shared_gc_plan.py", "--keep", "<the root bench_shared_list.py filled>"], True),
]


@dataclass(frozen=True)
class Row:
    measure: str
    command: str
    now: str
    limit: str
    goal: str
    met: bool | None  # None: not measured


def load(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def dig(document: dict[str, Any], *path: str) -> Any:
    """``document[path[0]][path[1]]…``, or None when any step is missing."""
    value: Any = document
    for step in path:
        if not isinstance(value, dict) or step not in value:
            return None
        value = value[step]
    return value


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def at_most(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


OVER_DATASET = "plain DuckDB over store.sql's dataset"
WALL = "process_wall_ms"  # a new process's whole life, its exit included


def rows() -> list[Row]:
    store, miss, imports = load("store"), load("miss"), load("imports")
    first, big = load("compare-first-hit"), load("big_hit")
    full, sql, gc_plan = load("sql_full_aggregate"), load("sql"), load("gc-plan")
    shared_hit, shared_sql = load("shared_hit"), load("shared_sql")
    catalog_sql, shared_gc = load("shared_sql_catalog"), load("shared_gc_plan")

    def big_ms(kind: str, what: str) -> float | None:
        return dig(big, "medians_ms", f"{kind}: {what}")

    def hit(kind: str) -> float | None:
        return big_ms(kind, "hit (get_or_compute)")

    def floor(kind: str) -> float | None:
        return big_ms(kind, "floor, xxh3 of the buffers, all threads")

    def first_hit(cache: str, what: str = "first_hit_ms") -> float | None:
        return dig(first, "first_hit", "caches", cache, what)

    def full_ms(name: str) -> float | None:
        return dig(full, "results", name, "p50_ms")

    raw_full = full_ms("DuckDB read_parquet([400 files])")
    polars_ms = dig(imports, "medians_ms", "polars")
    ours_ms = dig(imports, "medians_ms", "jules_cache")
    import_extra = None if polars_ms is None or ours_ms is None else ours_ms - polars_ms
    shared_get = dig(shared_hit, "hits", "10k x 8", "ratios", "shared hit / raw S3 GET")
    one_symbol = dig(shared_sql, "sql", "ratios", "shared / local, one symbol (target <= 2)")
    after_publish = dig(catalog_sql, "samples", "after one publish (now)", "median_ms")
    gc_seconds = dig(shared_gc, "runs", "now", "gc_s")
    return [
        Row(
            "hit, 10k × 8 result, 100k-row input fingerprinted",
            "bench_store.py",
            ms(dig(store, "hits", "hit", "p50_ms")),
            "—",
            "≤ 2.2 ms (2 ms + 10%)",
            at_most(dig(store, "hits", "hit", "p50_ms"), 2.2),
        ),
        Row(
            "miss of a small daily feature (200k ticks → 390 bars), in a loop",
            "bench_miss.py",
            f"{ms(miss.get('jules_cache_miss_loop_ms'))} "
            f"({times(miss.get('miss_loop_over_compute'))} compute)",
            f"compute {ms(miss.get('compute_ms'))}; joblib.Memory miss "
            f"{ms(miss.get('joblib_miss_ms'))} ({times(miss.get('joblib_over_compute'))})",
            "≤ 2.0× compute",
            at_most(miss.get("miss_loop_over_compute"), 2.0),
        ),
        Row(
            "publish p50: in a loop / a lone miss",
            "bench_miss.py",
            f"{ms(miss.get('publish_loop_p50_ms'))} / {ms(miss.get('publish_alone_p50_ms'))}",
            "—",
            "≤ 5 ms",
            at_most(
                max(miss.get("publish_loop_p50_ms", 1e9), miss.get("publish_alone_p50_ms", 1e9)),
                5.0,
            ),
        ),
        Row(
            "`import jules_cache` over `import polars` (new process)",
            "bench_imports.py",
            "—" if import_extra is None else f"+{import_extra:.0f} ms",
            f"`import polars` {ms(polars_ms)}",
            "≤ +40 ms",
            at_most(import_extra, 40.0),
        ),
        Row(
            "first hit in a new process (10k-row Parquet, module-level feature)",
            "compare.py --only first-hit",
            f"whole process {ms(first_hit('jules_cache', WALL))} "
            f"({times(ratio(first_hit('jules_cache', WALL), first_hit('joblib', WALL)))} "
            f"joblib); import + open + fetch {ms(first_hit('jules_cache'))} "
            f"({times(ratio(first_hit('jules_cache'), first_hit('joblib')))})",
            f"joblib.Memory: whole process {ms(first_hit('joblib', WALL))}, import + open + "
            f"fetch {ms(first_hit('joblib'))}",
            "≤ 0.85× joblib",
            None
            if first_hit("jules_cache", WALL) is None
            else bool(
                at_most(ratio(first_hit("jules_cache", WALL), first_hit("joblib", WALL)), 0.85)
                and at_most(ratio(first_hit("jules_cache"), first_hit("joblib")), 0.85)
            ),
        ),
        Row(
            "hit, 10M-row input, `symbol` a String column",
            "bench_big_hit.py",
            f"{ms(hit('string'))} ({times(ratio(hit('string'), floor('string')))} "
            f"floor, {times(ratio(hit('string'), big_ms('string', 'no cache (recompute)')))} "
            "recompute)",
            f"xxh3 over the buffers, all threads {ms(floor('string'))}",
            "≤ 1.5× floor, ≤ 0.4× recompute",
            None
            if hit("string") is None
            else bool(
                at_most(ratio(hit("string"), floor("string")), 1.5)
                and at_most(ratio(hit("string"), big_ms("string", "no cache (recompute)")), 0.4)
            ),
        ),
        Row(
            "hit, 10M-row input, `symbol` Categorical",
            "bench_big_hit.py",
            f"{ms(hit('categorical'))} "
            f"({times(ratio(hit('categorical'), floor('categorical')))} floor)",
            f"xxh3 over the buffers, all threads {ms(floor('categorical'))}",
            "≤ 1.2× floor",
            at_most(ratio(hit("categorical"), floor("categorical")), 1.2),
        ),
        Row(
            "`store.sql` full aggregate, 400 results",
            "bench_sql.py --full-aggregate",
            f"{ms(full_ms('store.sql'))} "
            f"({times(ratio(full_ms('store.sql'), raw_full))} read_parquet)",
            f"DuckDB `read_parquet` {ms(raw_full)}; the floor without file access, plain "
            f"DuckDB over store.sql's Arrow dataset: {ms(full_ms(OVER_DATASET))} "
            f"({times(ratio(full_ms(OVER_DATASET), raw_full))})",
            "≤ 1.15×",
            at_most(ratio(full_ms("store.sql"), raw_full), 1.15),
        ),
        Row(
            "plain DuckDB on `catalog.duckdb`, same aggregate",
            "bench_sql.py --full-aggregate",
            f"{ms(full_ms('plain DuckDB on catalog.duckdb'))} "
            f"({times(ratio(full_ms('plain DuckDB on catalog.duckdb'), raw_full))})",
            f"DuckDB `read_parquet` {ms(raw_full)}",
            "≤ 1.3×",
            at_most(ratio(full_ms("plain DuckDB on catalog.duckdb"), raw_full), 1.3),
        ),
        Row(
            "`store.sql` `WHERE symbol = …`, one symbol of 1000 results (pruning)",
            "bench_sql.py",
            ms(dig(sql, "results", "store.sql WHERE symbol = (auto-pruned)", "p50_ms")),
            "DuckDB `read_parquet` of its 10 files "
            + ms(dig(sql, "results", "raw read_parquet, one symbol (10 files)", "p50_ms")),
            "≤ 15 ms (9–14 ms + 10%)",
            at_most(dig(sql, "results", "store.sql WHERE symbol = (auto-pruned)", "p50_ms"), 15.0),
        ),
        Row(
            "GC plan, local root, 100k entries (dry run in a new process)",
            "bench_gc.py --plan-only",
            "—"
            if dig(gc_plan, "plan", "plan_seconds") is None
            else f"{dig(gc_plan, 'plan', 'plan_seconds'):.2f} s",
            "—",
            "≤ 1.65 s (1.5 s + 10%)",
            at_most(dig(gc_plan, "plan", "plan_seconds"), 1.65),
        ),
        Row(
            "shared hit, 10k × 8 result, over a raw S3 GET of its bytes",
            "bench_shared.py --only hit",
            times(shared_get),
            "boto3 `get_object`",
            "≤ 2×",
            at_most(shared_get, 2.0),
        ),
        Row(
            "shared `store.sql`, one symbol of 16, over the local root's",
            "bench_shared.py --only sql",
            times(one_symbol),
            "the same query on a local root",
            "≤ 2×",
            at_most(one_symbol, 2.0),
        ),
        Row(
            "shared `store.sql` on a 100k-row catalog, after one publish",
            "bench_shared_sql_catalog.py",
            ms(after_publish),
            "every table copied: "
            + ms(dig(catalog_sql, "samples", "every table copied whole (before)", "median_ms")),
            "≤ 100 ms",
            at_most(after_publish, 100.0),
        ),
        Row(
            "shared GC plan, 100k objects (dry run in a new process)",
            "bench_shared_gc_plan.py",
            "—" if gc_seconds is None else f"{gc_seconds:.2f} s",
            "—",
            "≤ 2 s",
            at_most(gc_seconds, 2.0),
        ),
    ]


def table() -> tuple[str, list[dict[str, Any]]]:
    versions = {}
    for module in ("polars", "duckdb", "pyarrow"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = "?"
    header = (
        f"One run of `python benchmarks/board.py` ({time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + "); medians after warm-up, ratios within one script's run.\n\n"
        "| measure | command | now | limit / peer, same run | goal | met |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
    )
    lines, document = [], []
    for row in rows():
        verdict = "not measured" if row.met is None else "**yes**" if row.met else "**no**"
        cells = [row.measure, f"`{row.command}`", row.now, row.limit, row.goal, verdict]
        lines.append("| " + " | ".join(cells) + " |")
        document.append(dict(zip(["measure", "command", "now", "limit", "goal", "met"], cells)))
    return header + "\n".join(lines) + "\n", document


def run_all(start: str | None) -> None:
    have_services = all(os.environ.get(name) for name in SHARED)
    first = [" ".join(arguments) for arguments, _ in RUNS].index(start) if start else 0
    for arguments, shared in RUNS[first:]:
        if shared and not have_services:
            print(f"== skipping {' '.join(arguments)}: no services in the environment")
            continue
        if arguments[0] == "bench_shared_gc_plan.py":
            arguments = [*arguments[:-1], load("shared_list")["root"]]
        print(f"== {' '.join(arguments)}", flush=True)
        subprocess.run([sys.executable, str(HERE / arguments[0]), *arguments[1:]], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="only the table, from the JSON")
    parser.add_argument("--docs", action="store_true", help="also rewrite docs/benchmarks.md")
    parser.add_argument("--from", dest="start", help="start at this run ('bench_sql.py')")
    args = parser.parse_args()
    if not args.table:
        run_all(args.start)
    text, document = table()
    print(text)
    (RESULTS / "board.md").write_text(text)
    (RESULTS / "board.json").write_text(json.dumps(document, indent=2) + "\n")
    if args.docs:
        page = DOCS.read_text()
        before, _, rest = page.partition(START)
        _, _, after = rest.partition(END)
        DOCS.write_text(f"{before}{START}\n{text}{END}{after}")


if __name__ == "__main__":
    main()
