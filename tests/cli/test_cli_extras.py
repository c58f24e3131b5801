"""rm and stats --prometheus."""

from __future__ import annotations

import json
import subprocess

import pytest
from click.testing import CliRunner
from features import bar_count

from jules_cache import FeatureStore, InvalidInput
from jules_cache.cli import cli


@pytest.fixture
def filled(root, aapl):
    with FeatureStore(root) as store:
        for symbol in ("AAPL", "MSFT", "IBM"):
            store.get_or_compute(symbol, aapl, {"freq": "1m"}, bar_count, name="bars")
        store.get_or_compute("AAPL", aapl, {"freq": "5m"}, bar_count, name="slow_bars")
        store.get_or_compute("AAPL", aapl, {"freq": "5m"}, bar_count, name="slow_bars")
    return root


def test_rm_by_symbol_deletes_rows_then_files(filled):
    store = FeatureStore(filled)
    doomed = store.entries(symbol="AAPL")
    removed = store.remove(symbol="AAPL")
    assert {e.key for e in removed} == {e.key for e in doomed} and len(removed) == 2
    assert store.entries(symbol="AAPL") == []
    assert not any((filled / e.path).exists() for e in removed)
    assert len(store.entries()) == 2


def test_rm_dry_run_changes_nothing_and_key_prefix_works(filled):
    store = FeatureStore(filled)
    entry = store.entries(feature="slow_bars")[0]
    assert [e.key for e in store.remove(key=entry.key[:12], dry_run=True)] == [entry.key]
    assert store.entry(entry.key) is not None
    result = CliRunner().invoke(
        cli, ["--root", str(filled), "rm", "--key", entry.key[:12], "--json"]
    )
    assert result.exit_code == 0
    assert [e["key"] for e in json.loads(result.stdout)["removed"]] == [entry.key]
    assert store.entry(entry.key) is None


def test_rm_needs_a_filter(filled):
    with pytest.raises(InvalidInput, match="name a key, feature or symbol"):
        FeatureStore(filled).remove()
    result = CliRunner().invoke(cli, ["--root", str(filled), "rm", "--key", "abc"])
    assert result.exit_code == 2 and "too short" in result.stderr  # a usage error (#14 item 8)


@pytest.mark.slow
def test_stats_prometheus_textfile(filled, tmp_path, jules_cache_command):
    target = tmp_path / "jules_cache.prom"
    done = subprocess.run(
        [jules_cache_command, "--root", str(filled), "stats", "--prometheus", str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    text = target.read_text()
    assert "# TYPE jules_cache_hits_total counter" in text
    assert f'jules_cache_entries{{root="{filled.resolve()}",feature="bars"}} 3' in text
    assert f'jules_cache_hits_total{{root="{filled.resolve()}",feature="slow_bars"}} 1' in text
    assert "jules_cache_misses_total" in text and "jules_cache_size_bytes" in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_check_deep_reports_progress(filled):
    seen = []
    report = FeatureStore(filled).check(
        deep=True, progress=lambda done, total: seen.append((done, total))
    )
    assert report.consistent
    assert seen and seen[-1][0] == seen[-1][1] == report.entries
