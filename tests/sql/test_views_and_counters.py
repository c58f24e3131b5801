"""Honest counters, one code version per view, stable view names, and
one feature name across ``multiprocessing`` spawn children.

All go through the public API (``FeatureStore``, ``stats``,
``prometheus_text``, ``store.sql``) or a plain DuckDB client of ``catalog.duckdb``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import pytest
from features import bar_count

from jules_cache import FeatureStore
from jules_cache.metrics import prometheus_text

REPO = Path(__file__).resolve().parents[2]

_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def _samples(text: str) -> dict[tuple[str, str], float]:
    """``{(metric, labels): value}`` of an exposition text."""
    found = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            found[(match["name"], match["labels"])] = float(match["value"])
    return found


def _types(text: str) -> dict[str, str]:
    return dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))


# -- counters only grow --------------------------------------------------------------------


def test_hits_and_misses_survive_rm_and_gc_in_stats_and_prometheus(store, aapl):
    for symbol in ("AAPL", "MSFT"):
        store.fetch(symbol, aapl, {"freq": "1m"}, bar_count, name="bars")
        for _ in range(3):
            assert store.fetch(symbol, aapl, {"freq": "1m"}, bar_count, name="bars").hit
    store.fetch("AAPL", aapl, {"freq": "5m"}, bar_count, name="vol")
    before = store.stats()
    assert (before.hits, before.misses) == (6, 3)
    text_before = prometheus_text(before)
    kinds = _types(text_before)
    assert kinds["jules_cache_hits_total"] == "counter"
    assert kinds["jules_cache_misses_total"] == "counter"
    assert kinds["jules_cache_symbol_hits_total"] == "counter"
    assert kinds["jules_cache_symbol_misses_total"] == "counter"
    assert kinds["jules_cache_hit_ratio"] == "gauge"
    samples = _samples(text_before)
    root = before.root
    assert samples[("jules_cache_hits_total", f'root="{root}",feature="bars"')] == 6
    assert samples[("jules_cache_misses_total", f'root="{root}",feature="bars"')] == 2
    assert samples[("jules_cache_symbol_hits_total", f'root="{root}",symbol="MSFT"')] == 3
    assert samples[("jules_cache_symbol_misses_total", f'root="{root}",symbol="AAPL"')] == 2
    assert samples[("jules_cache_hit_ratio", f'root="{root}"')] == 6 / 9

    store.remove(feature="bars")
    after_rm = store.stats()
    store.gc(retention_weeks=0, grace=0)
    after_gc = store.stats()
    assert after_gc.entries == 0
    for later in (after_rm, after_gc):
        assert (later.hits, later.misses, later.hit_rate) == (6, 3, before.hit_rate)
        assert later.seconds_saved >= before.seconds_saved
        later_samples = _samples(prometheus_text(later))
        for (name, labels), value in samples.items():
            if name.endswith("_total"):
                assert later_samples[(name, labels)] >= value, (name, labels)

    # Recomputed after the GC: the counters go on from where they were.
    store.fetch("AAPL", aapl, {"freq": "1m"}, bar_count, name="bars")
    assert store.fetch("AAPL", aapl, {"freq": "1m"}, bar_count, name="bars").hit
    again = store.stats()
    assert (again.hits, again.misses) == (7, 4)
    by_feature = {f.feature: f for f in again.features}
    assert (by_feature["bars"].hits, by_feature["bars"].misses) == (7, 3)
    by_symbol = {s.symbol: s for s in again.symbols}
    assert (by_symbol["AAPL"].hits, by_symbol["AAPL"].misses) == (4, 3)


def test_symbol_labels_are_capped_first_come_with_an_other_bucket(store, aapl):
    for symbol in ("S1", "S2", "S3", "S4"):
        store.fetch(symbol, aapl, {}, bar_count, name="bars")
    store.fetch("S4", aapl, {}, bar_count, name="bars")  # S4 most active: still over the cap
    capped = store.stats(symbol_limit=2)
    assert [s.symbol for s in capped.symbols] == ["S1", "S2", "__other__"]
    other = capped.symbols[-1]
    assert (other.hits, other.misses) == (1, 2)
    text = prometheus_text(capped)
    assert f'jules_cache_symbol_misses_total{{root="{capped.root}",symbol="__other__"}} 2' in text
    assert "S3" not in text and "S4" not in text


# -- one code version per (symbol, input) by default ------------------------------------


def _two_versions(store, aapl) -> None:
    for version in ("1", "2"):
        for symbol in ("AAPL", "MSFT"):
            store.fetch(symbol, aapl, {"freq": "1m"}, bar_count, name="bars", version=version)


PER_SYMBOL = (
    "SELECT symbol, count(*) AS n, count(DISTINCT code_version) AS versions, "
    "max(code_version) AS version FROM {view} GROUP BY symbol ORDER BY symbol"
)


def test_default_view_holds_the_latest_code_version_history_view_holds_all(store, aapl):
    _two_versions(store, aapl)
    rows_per_version = store.get_or_compute("AAPL", aapl, {"freq": "1m"}, bar_count,
                                            name="bars", version="2").height  # fmt: skip
    latest = store.sql(PER_SYMBOL.format(view="bars"))
    assert latest.rows() == [("AAPL", rows_per_version, 1, "2"), ("MSFT", rows_per_version, 1, "2")]
    history = store.sql(PER_SYMBOL.format(view="bars_history"))
    assert history["versions"].to_list() == [2, 2]
    assert history["n"].to_list() == [2 * rows_per_version] * 2

    store.flush()
    with duckdb.connect(str(store.root / "catalog.duckdb"), read_only=True) as con:
        plain_latest = con.sql(PER_SYMBOL.format(view="bars")).fetchall()
        plain_history = con.sql(PER_SYMBOL.format(view="bars_history")).fetchall()
    assert plain_latest == latest.rows()
    assert plain_history == history.rows()


# -- a view keeps its name ---------------------------------------------------------------


BARS_SOURCE = """
import polars as pl

def bars(ticks, config):
    return ticks.select((pl.len() * FACTOR).alias("n")).collect()
"""


def test_the_first_feature_keeps_its_view_name_a_later_one_is_qualified(store, load_module, aapl):
    tag = uuid.uuid4().hex[:8]
    # "z..." sorts after "a...": the first feature is not the first in name order.
    first = load_module(f"zresearch_{tag}", BARS_SOURCE.replace("FACTOR", "1"))
    second = load_module(f"amain_{tag}", BARS_SOURCE.replace("FACTOR", "2"))
    store.get_or_compute("AAPL", aapl, {}, first.bars)
    assert store.sql("SELECT n FROM bars")["n"].to_list() == [aapl.height]
    store.get_or_compute("AAPL", aapl, {}, second.bars)

    query = "SELECT view_name, feature FROM feature_views ORDER BY view_name"
    expected = [(f"amain_{tag}_bars", f"amain_{tag}.bars"), ("bars", f"zresearch_{tag}.bars")]
    assert store.sql(query).rows() == expected
    assert store.sql("SELECT n FROM bars")["n"].to_list() == [aapl.height]
    # A new process (a fresh store and SQL session) and a plain DuckDB client agree.
    with FeatureStore(store.root) as again:
        assert again.sql(query).rows() == expected
    store.flush()
    with duckdb.connect(str(store.root / "catalog.duckdb"), read_only=True) as con:
        assert con.sql(query).fetchall() == expected
        assert con.sql("SELECT n FROM bars").fetchall() == [(aapl.height,)]


# -- __main__ and __mp_main__ are one feature ------------------------------------------

SCRIPT = """
import multiprocessing
import os
import sys

import polars as pl

from jules_cache import FeatureStore
from jules_cache.synthetic import make_ticks, ticks_for

ROOT, LOG = sys.argv[1], sys.argv[2]


def bars(ticks, config):
    with open(LOG, "a") as log:
        log.write(f"{os.getpid()}\\n")
    return ticks.select(pl.len().alias("n")).collect()


def work(symbol):
    ticks = ticks_for(make_ticks(["AAPL", "MSFT", "NVDA"], 3000, seed=3), symbol)
    with FeatureStore(ROOT) as store:
        return store.fetch(symbol, ticks, {}, bars).key


if __name__ == "__main__":
    parent = [work(symbol) for symbol in ("AAPL", "MSFT", "NVDA")]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        children = pool.map(work, ["AAPL", "MSFT", "NVDA", "AAPL"])
    print(parent == children[:3] == [*children[:3]] and children[3] == parent[0])
"""


@pytest.mark.slow
def test_a_feature_of_the_main_script_is_one_feature_in_spawn_children(tmp_path):
    script = tmp_path / "research.py"
    script.write_text(SCRIPT)
    root, log = tmp_path / "cache", tmp_path / "computes.log"
    done = subprocess.run(
        [sys.executable, str(script), str(root), str(log)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"  # the same keys in the parent and the children
    assert len(log.read_text().split()) == 3  # once per symbol, in all processes together
    with FeatureStore(root) as store:
        assert [f.feature for f in store.stats().features] == ["__main__.bars"]
        assert store.sql("SELECT view_name FROM feature_views").rows() == [("bars",)]
        assert store.sql("SELECT count(*) FROM bars").item() == 3
