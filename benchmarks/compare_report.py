"""Render the results of ``compare.py`` as a Markdown report and a console summary.

Also holds the capability rows: jules_cache's are detected from this checkout, the peers' are
stated from their documentation (joblib 1.6, diskcache 5.6).
"""

from __future__ import annotations

import contextlib
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import compare_peers as peers
from common import print_table

PEERS = peers.KINDS


def ms(seconds: float) -> float:
    return seconds * 1000


def jules_capabilities() -> dict[str, str]:
    """What this checkout of jules_cache offers, detected rather than claimed."""
    from jules_cache import FeatureStore
    from jules_cache.cli import cli

    commands = set(cli.commands)
    has = {name: hasattr(FeatureStore, name) for name in ("sql", "stats", "gc", "check", "explain")}
    sql = (
        "`store.sql()`"
        + (" / `jules-cache sql`" if "sql" in commands else "")
        + ": DuckDB over the manifest and the Parquet results"
        if has["sql"]
        else "manifest is a DuckDB file (feature, symbol, config, rows, bytes, times, hits)"
    )
    return {
        "stats": "`stats()` / `jules-cache stats`: entries, bytes, hits, misses, compute time "
        "saved, by feature",
        "sql": sql,
        "gc": "`gc()` / `jules-cache gc`: retention by last access, size cap (LRU), orphans, "
        "temp files, `--dry-run`",
        "why": "`explain()`: which input, config key or function changed"
        if has["explain"]
        else "—",
        "format": "Parquet (+ entry metadata in the footer): readable by any tool",
        "single_flight": "yes: one process computes a key, the others wait and read it",
        "commands": ", ".join(sorted(commands)),
    }


CAPABILITIES = {
    "joblib": {
        "stats": "none (no hit/miss counters); items with size and last access via "
        "`memory.store_backend.get_items()`",
        "sql": "none (a directory tree of pickles + `metadata.json`)",
        "gc": "`Memory.reduce_size(bytes_limit, items_limit, age_limit)` by file atime; `clear()`",
        "why": "none",
        "format": "pickle (joblib)",
        "single_flight": "no: concurrent misses all compute (writes are atomic)",
    },
    "diskcache": {
        "stats": "`stats(enable=True)`: hits, misses (off by default); `volume()`, `len()`",
        "sql": "SQLite index, but keys and values are pickles: no query by symbol or config",
        "gc": "automatic eviction past `size_limit` (default 1 GB, least-recently-stored); "
        "`expire`, `cull()`, `evict(tag)`, `check()`",
        "why": "none",
        "format": "pickle (values > 32 KB in files, keys in SQLite)",
        "single_flight": "no for `memoize` (recipes offer `memoize_stampede`, `Lock`, `barrier`)",
    },
}


# ------------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    found = {}
    for package in ("jules-cache", "polars", "duckdb", "pyarrow", "joblib", "diskcache"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def fmt_ms(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def fmt_ratio(value: float) -> str:
    return f"{value:.0f}×" if value >= 100 else f"{value:.1f}×" if value >= 10 else f"{value:.2f}×"


def fmt_opt_ratio(value: float | None) -> str:
    return "—" if value is None else fmt_ratio(value)


def fmt_bytes(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def markdown(document: dict[str, Any]) -> str:
    env = document["environment"]
    lat = document["latency"]
    lines = [
        "# jules_cache vs joblib.Memory vs diskcache memoize vs no cache",
        "",
        f"Command: `{env['command']}`  ",
        f"Machine: {env['cpus']} cores ({env['cpu_model']}), {env['memory_gb']} GB RAM, "
        f"Python {env['python']}, {env['platform']}  ",
        "Libraries: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + "  ",
        f"Workload: {env['ticks']:,} ticks, {env['symbols']} symbols (Zipf-like activity); "
        f"total run {env['total_seconds']:.0f} s wall, {env['cpu_seconds']:.0f} s CPU; "
        "load average "
        f"{env['load_average_start'][0]:.1f} at start, {env['load_average_end'][0]:.1f} at end "
        "(other work on the machine inflates absolute times; each comparison was measured "
        "interleaved, in the same minutes)",
        "",
        "Setup, each library as documented: `FeatureStore(root).get_or_compute(symbol, ticks, "
        "config, func)` (defaults: lz4 Parquet, content fingerprints); "
        "`joblib.Memory(location, mmap_mode=None).cache(func)(ticks, config)` (no "
        "compression); `diskcache.Cache(directory).memoize()(func)(ticks, config)` (default "
        "disk and settings). The same function and input frames go to every cache; the ticks "
        "are read from one Parquet file the same way in every process, so peers that pickle "
        "their arguments see identical bytes.",
        "",
        "## Hit latency and cold-miss overhead (medians after warm-up)",
        "",
        "| case | result | cache | hit | compute ÷ hit | hit ÷ jules_cache hit | miss | "
        "miss − compute |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, case in lat.items():
        if name.startswith("_"):
            continue
        first = True
        for kind in PEERS:
            c = case["caches"][kind]
            label = (
                f"**{name}**: {case['description']}, {case['input_rows']:,} input rows; "
                f"compute {fmt_ms(case['compute_ms'])}"
                if first
                else ""
            )
            shape = f"{case['result_rows']:,} × {case['result_columns']}" if first else ""
            first = False
            if "error" in c:
                error = c["error"].replace("|", "/")
                lines.append(f"| {label} | {shape} | {peers.LABELS[kind]} | **error**: {error} |")
                continue
            flag = "" if c["hit_correct"] else " (WRONG)"
            if c["hit_recomputed"]:
                flag += f" ({c['hit_recomputed']} recomputed)"
            lines.append(
                f"| {label} | {shape} | {peers.LABELS[kind]} | {fmt_ms(c['hit_ms'])}{flag} | "
                f"{fmt_ratio(c['speedup_vs_compute'])} | "
                f"{fmt_opt_ratio(c['hit_vs_jules_cache'])} | "
                f"{fmt_ms(c['miss_ms'])} | {c['miss_overhead_ms']:+.0f} ms "
                f"({fmt_ratio(c['miss_ratio_vs_compute'])}) |"
            )
    code = document["code_change"]
    lines += [
        "",
        "A new process pays each library's import and first-call setup once. From the "
        "code-change test below (one fresh process per step; small case; the caches run one "
        "after another in this order, so jules_cache also pays for imports the others then "
        "reuse):",
        "",
        "| in a new process | " + " | ".join(peers.LABELS[k] for k in PEERS) + " |",
        "|---|" + "---:|" * len(PEERS),
    ]
    for index, title in ((0, "first call (miss)"), (1, "first call (hit)")):
        lines.append(
            f"| {title} | "
            + " | ".join(fmt_ms(ms(code[k][index]["seconds"])) for k in PEERS)
            + " |"
        )
    procs = document["processes"]
    any_run = next(iter(procs.values()))
    lines += [
        "",
        f"## {any_run['processes']} spawned processes sharing one cache "
        f"({any_run['keys']} keys: tick-level features of {any_run['key_symbols']})",
        "",
        "Each process fetches every key once. *same order*: all start at the first key "
        "(trainers launched together); *rotated*: each starts at a different key.",
        "",
        "| key order | cache | computations (ideal = keys) | max per key | errors | "
        "wrong results | wall time | ÷ no cache |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in procs.values():
        lines.append(
            f"| {run['order']} | {peers.LABELS[run['cache']]} | {run['computations']} "
            f"/ {run['calls']} calls | {run['max_per_key']} | {run['errors']} | "
            f"{run['wrong_results']} | {run['wall_s']:.2f} s | "
            f"{fmt_ratio(run['wall_vs_no_cache'])} |"
        )
    lines += [
        "",
        "## Does the cache notice a change?",
        "",
        "Code steps each run in a fresh process against the generated feature module as "
        "rewritten for that step. *hit* and *recomputed* are correct; **STALE** means the old "
        "result was served for new code or data.",
        "",
        "| change | expected | " + " | ".join(peers.LABELS[k] for k in PEERS) + " |",
        "|---|---|" + "---|" * len(PEERS),
    ]
    for table in ("code_change", "data_change"):
        steps = document[table]
        for index in range(len(steps[PEERS[0]])):
            step = steps[PEERS[0]][index]
            cells = []
            for kind in PEERS:
                got = steps[kind][index]["outcome"]
                cells.append(f"**{got}**" if got in ("STALE", "wrong", "error") else got)
            lines.append(f"| {step['step']} | {step['expected']} | " + " | ".join(cells) + " |")
    disk = document["disk"]
    caps = document["capabilities"]
    lines += [
        "",
        "## Disk used and what each can tell you afterwards",
        "",
        "| | " + " | ".join(peers.LABELS[k] for k in PEERS) + " |",
        "|---|" + "---|" * len(PEERS),
        f"| disk after storing the same {disk['entries_per_cache']} results | "
        + " | ".join(fmt_bytes(disk[k]["bytes"]) + _disk_note(disk[k]) for k in PEERS)
        + " |",
        "| results still cached | "
        + " | ".join(
            f"{disk[k]['entries']}"
            + (
                " (evicted: default `size_limit` 1 GB)"
                if k == "diskcache" and disk[k]["entries"] < disk["entries_per_cache"]
                else ""
            )
            for k in PEERS
        )
        + " |",
    ]
    for row, title in (
        ("stats", "statistics"),
        ("sql", "SQL"),
        ("gc", "GC / bounding"),
        ("why", "why did it miss?"),
        ("single_flight", "one compute per key across processes"),
        ("format", "result format"),
    ):
        lines.append(f"| {title} | " + " | ".join(caps[k][row] for k in PEERS) + " |")
    lines += issue13_markdown(document)
    lines += ["", "## Where a peer wins (by more than 10%)", ""]
    lines += [f"- {note}" for note in document["peer_wins"]] or ["- (none measured in this run)"]
    return "\n".join(lines) + "\n"


def issue13_markdown(document: dict[str, Any]) -> list[str]:
    """The six speed targets, as measured in this run (each beside its peer or limit)."""
    lines = ["", "## Speed targets: to the limit (same run)", ""]
    lines += ["| measure | jules_cache | limit / peer, same run | target |", "|---|---:|---|---|"]
    big = document.get("big_input")
    if big and "hit_ms" in big["caches"].get("jules_cache", {}):
        jc = big["caches"]["jules_cache"]
        floor = big["raw_buffer_xxh3_ms"] + big.get("categorical_rank_lookup_ms", 0.0)
        peers_text = ", ".join(
            f"{peers.LABELS[k]} {fmt_ms(big['caches'][k]['hit_ms'])}"
            for k in ("joblib", "diskcache")
            if "hit_ms" in big["caches"].get(k, {})
        )
        lines.append(
            f"| hit, cheap feature, {big['input_rows']:,}-row Polars input "
            f"({big['input_mb']:.0f} MB) | {fmt_ms(jc['hit_ms'])} "
            f"({fmt_ratio(jc['hit_vs_no_cache'])} of recomputing, "
            f"{fmt_ms(big['no_cache_ms'])}) | floor {fmt_ms(floor)} (xxh3 over the raw buffers "
            f"{fmt_ms(big['raw_buffer_xxh3_ms'])} + categorical rank lookup "
            f"{fmt_ms(big.get('categorical_rank_lookup_ms', 0.0))}); {peers_text} | ≤ 25 ms |"
        )
    first = document.get("first_hit")
    if first and "first_hit_ms" in first["caches"].get("jules_cache", {}):
        caches = first["caches"]
        others = ", ".join(
            f"{peers.LABELS[k]} {fmt_ms(caches[k]['first_hit_ms'])}"
            for k in ("joblib", "diskcache")
            if "first_hit_ms" in caches.get(k, {})
        )
        lines.append(
            f"| first hit in a new process, imports included ({first['rounds']} subprocesses "
            f"each) | {fmt_ms(caches['jules_cache']['first_hit_ms'])} (import "
            f"{fmt_ms(caches['jules_cache']['import_ms'])}) | {others} | ≤ joblib's |"
        )
    medium = document.get("latency", {}).get("medium")
    if medium:
        jc, jl = medium["caches"].get("jules_cache", {}), medium["caches"].get("joblib", {})
        if "miss_ms" in jc and "miss_ms" in jl:
            lines.append(
                f"| cold miss, {medium['result_rows']:,}-row result | {fmt_ms(jc['miss_ms'])} | "
                f"joblib {fmt_ms(jl['miss_ms'])} ({fmt_ratio(jc['miss_ms'] / jl['miss_ms'])}) "
                "| ≤ joblib's |"
            )
        raw = medium.get("raw_read")
        if raw:
            lines.append(
                f"| hit, {medium['result_rows']:,}-row result | {fmt_ms(raw['jules_hit_ms'])} | "
                f"`pl.read_parquet` of the file {fmt_ms(raw['read_parquet_ms'])} "
                f"({fmt_ratio(raw['hit_vs_read_parquet'])}) | ≤ 1.15× the raw read |"
            )
    sql = document.get("sql_symbol")
    if sql:
        m = sql["medians_ms"]
        lines.append(
            f"| plain DuckDB client, `WHERE symbol = …`, {sql['results']:,} results | "
            f"{fmt_ms(m['plain DuckDB WHERE symbol'])} | `store.sql` "
            f"{fmt_ms(m['store.sql WHERE symbol'])} ({fmt_ratio(sql['plain_vs_store_sql'])}) "
            "| ≤ 2× `store.sql` |"
        )
    views = document.get("views")
    if views:
        worst = views["worst_view_upkeep_under_lock_ms"]
        hold = max(k["exclusive_max_ms"]["max"] for k in views["kinds"].values())
        shared = max(k["catalog_shared_hold_ms"]["max"] for k in views["kinds"].values())
        rebuild = max(k["catalog_rebuild_ms"]["median"] for k in views["kinds"].values())
        lines.append(
            f"| adding a feature / new result schema at {views['entries']:,} results | view "
            f"work under the exclusive lock ≤ {fmt_ms(worst)} (whole publish's hold ≤ "
            f"{fmt_ms(hold)}) | catalog rebuild afterwards, outside the lock: "
            f"{fmt_ms(rebuild)} (shared-lock copy ≤ {fmt_ms(shared)}) | ≤ 100 ms |"
        )
    return lines if len(lines) > 4 else []


def _disk_note(stats: dict[str, int]) -> str:
    if "sqlite_bytes" in stats:
        return f" (SQLite {fmt_bytes(stats['sqlite_bytes'])})"
    if "manifest_bytes" in stats:
        return f" (manifest {fmt_bytes(stats['manifest_bytes'])})"
    return ""


CLEAR_WIN = 1.1  # a peer "wins" a row when it is more than 10% better (less is noise)


def peer_wins(document: dict[str, Any]) -> list[str]:
    """Every measured row where a peer clearly beat jules_cache, stated plainly."""
    notes = []
    for name, case in document["latency"].items():
        if name.startswith("_"):
            continue
        jc = case["caches"]["jules_cache"]
        for kind in ("joblib", "diskcache"):
            c = case["caches"][kind]
            if "error" in jc and "error" not in c:
                notes.append(f"{peers.LABELS[kind]} worked on *{name}* where jules_cache failed.")
            if "error" in jc or "error" in c:
                continue
            if c["hit_ms"] < jc["hit_ms"] / CLEAR_WIN:
                notes.append(
                    f"{peers.LABELS[kind]} hits faster on *{name}*: {fmt_ms(c['hit_ms'])} vs "
                    f"{fmt_ms(jc['hit_ms'])}."
                )
            if c["miss_ms"] < jc["miss_ms"] / CLEAR_WIN:
                notes.append(
                    f"{peers.LABELS[kind]} has a cheaper cold miss on *{name}*: "
                    f"{fmt_ms(c['miss_ms'])} vs {fmt_ms(jc['miss_ms'])} (plain compute "
                    f"{fmt_ms(case['compute_ms'])})."
                )
    code = document["code_change"]
    for kind in ("joblib", "diskcache"):
        mine, theirs = code["jules_cache"][1]["seconds"], code[kind][1]["seconds"]
        if theirs < mine / CLEAR_WIN:
            notes.append(
                f"{peers.LABELS[kind]}'s first hit in a new process is faster: "
                f"{fmt_ms(ms(theirs))} vs {fmt_ms(ms(mine))}."
            )
    for run in document["processes"].values():
        if run["cache"] in ("joblib", "diskcache"):
            jc = document["processes"][f"{run['order']}/jules_cache"]
            if run["wall_s"] < jc["wall_s"] / CLEAR_WIN:
                notes.append(
                    f"{peers.LABELS[run['cache']]} finished the {run['order']}-order process "
                    f"run sooner: {run['wall_s']:.2f} s vs {jc['wall_s']:.2f} s."
                )
    disk = document["disk"]
    for kind in ("joblib", "diskcache"):
        same_entries = disk[kind]["entries"] == disk["jules_cache"]["entries"]
        if same_entries and disk[kind]["bytes"] < disk["jules_cache"]["bytes"] / CLEAR_WIN:
            notes.append(
                f"{peers.LABELS[kind]} uses less disk: {fmt_bytes(disk[kind]['bytes'])} vs "
                f"{fmt_bytes(disk['jules_cache']['bytes'])}."
            )
    return notes


def print_summary(document: dict[str, Any]) -> None:
    rows = []
    for name, case in document["latency"].items():
        if name.startswith("_"):
            continue
        for kind in PEERS:
            c = case["caches"][kind]
            if "error" in c:
                rows.append([name, peers.LABELS[kind], "error", "", "", ""])
                continue
            rows.append(
                [
                    name,
                    peers.LABELS[kind],
                    c["hit_ms"],
                    c["speedup_vs_compute"],
                    c["hit_vs_jules_cache"],
                    c["miss_overhead_ms"],
                ]
            )
    print_table(
        "Hits and misses (ms, medians)",
        ["case", "cache", "hit ms", "compute/hit", "hit/jules hit", "miss overhead ms"],
        rows,
    )
    print_table(
        "Processes sharing one cache",
        ["order", "cache", "computations", "calls", "errors", "wrong", "wall s"],
        [
            [
                r["order"],
                peers.LABELS[r["cache"]],
                r["computations"],
                r["calls"],
                r["errors"],
                r["wrong_results"],
                r["wall_s"],
            ]
            for r in document["processes"].values()
        ],
    )
