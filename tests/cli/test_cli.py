"""The jules-cache command, through click's runner and through the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from helpers import fill_two_entries

from jules_cache import FeatureStore
from jules_cache.cli import cli
from jules_cache.synthetic import ticks_for


@pytest.fixture(scope="module")
def read_root(tmp_path_factory, ticks):
    """A root filled by ``fill_two_entries`` once, for the tests that only read it."""
    root = tmp_path_factory.mktemp("read") / "cache"
    fill_two_entries(root, ticks_for(ticks, "AAPL"))
    return root


def test_stats_json_is_one_document_with_the_numbers(read_root):
    result = CliRunner().invoke(cli, ["--root", str(read_root), "stats", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["entries"] == 2 and document["hits"] == 1 and document["misses"] == 2
    assert document["features"][0]["feature"] == "bars"


def test_stats_table(read_root):
    result = CliRunner().invoke(cli, ["--root", str(read_root), "stats"])
    assert result.exit_code == 0
    assert "entries       2" in result.stdout and "bars" in result.stdout


def test_ls_filters_and_json(read_root):
    runner = CliRunner()
    listed = runner.invoke(cli, ["--root", str(read_root), "ls", "--symbol", "MSFT", "--json"])
    assert listed.exit_code == 0
    (entry,) = json.loads(listed.stdout)
    assert entry["symbol"] == "MSFT" and entry["feature"] == "bars"
    table = runner.invoke(cli, ["--root", str(read_root), "ls"])
    assert table.exit_code == 0 and "AAPL" in table.stdout and "MSFT" in table.stdout


def test_root_from_the_environment(read_root):
    result = CliRunner().invoke(
        cli, ["stats", "--json"], env={"FEATURE_STORE_PATH": str(read_root)}
    )
    assert json.loads(result.stdout)["entries"] == 2


def test_errors_exit_1_with_a_message_and_no_traceback(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    result = CliRunner().invoke(cli, ["--root", str(file), "stats"])
    assert result.exit_code == 1
    assert "not a directory" in result.stderr and "Traceback" not in result.output


def test_help_does_not_create_the_root(tmp_path):
    result = CliRunner().invoke(cli, ["--root", str(tmp_path / "new"), "stats", "--help"])
    assert result.exit_code == 0 and "Example" in result.stdout
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_demo_through_the_installed_entry_point_hits_on_the_second_call(
    tmp_path, jules_cache_command
):
    env = {**os.environ, "JULES_CACHE_ROOT": str(tmp_path / "cache")}
    command = [jules_cache_command, "demo", "--symbols", "3", "--rows", "60000"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "miss" in done.stdout and "x faster" in done.stdout
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert "all first calls were hits" in again.stdout


@pytest.mark.slow
def test_python_dash_m_runs_the_same_cli(root):
    FeatureStore(root).close()
    done = subprocess.run(
        [sys.executable, "-m", "jules_cache", "--root", str(root), "stats", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["entries"] == 0


def test_the_demo_leaves_the_readmes_view_name_to_the_users_make_bars(root, load_module):
    """After `jules-cache demo`, the docs' `FROM make_bars` read the demo's
    1-second bars and the user's own `make_bars` became a qualified name."""
    demo = CliRunner().invoke(
        cli, ["--root", str(root), "demo", "--symbols", "1", "--rows", "2000"]
    )
    assert demo.exit_code == 0, demo.output
    research = load_module(
        "research",
        """
        import polars as pl

        def make_bars(ticks, config):
            return ticks.group_by("symbol").agg(pl.len().alias("mine"))
        """,
    )
    from jules_cache.synthetic import make_ticks, symbol_names

    with FeatureStore(root) as store:
        ticks = make_ticks(symbol_names(1), 500)
        store.get_or_compute("SYM", ticks, {"freq": "1m"}, research.make_bars)
        assert store.sql("SELECT mine FROM make_bars")["mine"].to_list() == [500]
        assert store.sql("SELECT count(*) AS n FROM demo_bars")["n"][0] > 0
