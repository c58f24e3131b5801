"""Every public argument is checked at the API edge: a wrong type or value is ``InvalidInput``
naming the argument, never a ``TypeError``/``ValueError``/``OverflowError`` from deep inside."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from features import bar_count
from helpers import frame

from jules_cache import FeatureStore, InvalidInput
from jules_cache.cli import cli


@pytest.fixture
def filled(store):
    store.fetch("AAPL", frame(1), {}, bar_count, name="bars")
    return store


@pytest.fixture(scope="module")
def filled_once(tmp_path_factory):
    """One filled store for the whole bad-argument matrix: a refused call changes nothing, so
    the calls can share it, and the check at the end proves that none did."""
    with FeatureStore(tmp_path_factory.mktemp("edge") / "cache") as store:
        store.fetch("AAPL", frame(1), {}, bar_count, name="bars")
        yield store
        assert [e.feature for e in store.entries()] == ["bars"]
        assert store.check().consistent


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda s: s.entry(None), "key"),
        (lambda s: s.entry(123456), "key"),
        (lambda s: s.entry("abc\0def"), "key"),
        (lambda s: s.remove(key=123456), "key"),
        (lambda s: s.remove(feature=5), "feature"),
        (lambda s: s.remove(symbol=["A"]), "symbol"),
        (lambda s: s.remove(all="yes"), "all"),
        (lambda s: s.remove(key="abcdef", dry_run="no"), "dry_run"),
        (lambda s: s.entries(feature=5), "feature"),
        (lambda s: s.entries(since="yesterday"), "since"),
        (lambda s: s.sql("SELECT 1", symbols=1), "symbols"),
        (lambda s: s.sql(5), "query"),
        (lambda s: s.check(grace_seconds="x"), "grace_seconds"),
        (lambda s: s.check(fix="yes"), "fix"),
        (lambda s: s.check(deep=1), "deep"),
        (lambda s: s.verify(fix="yes"), "fix"),
        (lambda s: s.fetch("A", frame(1), {}, bar_count, lazy="yes"), "lazy"),
        (lambda s: s.fetch("A", frame(1), {}, bar_count, name="bars\0x"), "name"),
        (lambda s: s.fetch("A", frame(1), {}, bar_count, name="two\nlines"), "name"),
        (lambda s: s.fetch("A", frame(1), {}, bar_count, version="v\0"), "version"),
        (lambda s: s.stats(symbol_limit="3"), "symbol_limit"),
    ],
)
def test_a_bad_argument_is_invalid_input_naming_it(filled_once, call, named):
    with pytest.raises(InvalidInput, match=named):
        call(filled_once)


def test_nothing_is_stored_under_a_name_the_readme_says_is_refused(filled):
    with pytest.raises(InvalidInput):
        filled.fetch("A", frame(2), {}, bar_count, name="bad\0name")
    assert [e.feature for e in filled.entries()] == ["bars"]


def test_ls_since_far_in_the_past_is_a_usage_error_not_a_traceback(filled):
    result = CliRunner().invoke(cli, ["--root", str(filled.root), "ls", "--since", "9999999999d"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "since" in result.output


def test_ls_says_never_for_an_entry_never_hit_and_counts_rows_right(tmp_path):
    with FeatureStore(tmp_path / "cache") as store:
        store.fetch("AAPL", frame(1), {}, bar_count, name="bars")
    result = CliRunner().invoke(cli, ["--root", str(tmp_path / "cache"), "ls"])
    assert result.exit_code == 0, result.output
    assert "never" in result.output
    sql = CliRunner().invoke(cli, ["--root", str(tmp_path / "cache"), "sql", "SELECT 1 AS x"])
    assert "1 rows" not in sql.output + sql.stderr


def test_gc_dry_run_summarises_unless_verbose(tmp_path):
    with FeatureStore(tmp_path / "cache") as store:
        for i in range(30):
            store.fetch("AAPL", frame(i), {}, bar_count, name="bars")
    base = ["--root", str(tmp_path / "cache"), "gc", "--dry-run", "--retention-weeks", "0"]
    quiet = CliRunner().invoke(cli, base)
    assert quiet.exit_code == 0, quiet.output
    assert quiet.output.count("objects/") < 5, quiet.output
    verbose = CliRunner().invoke(cli, [*base, "-v"])
    assert verbose.output.count("objects/") >= 30
