"""A directory with a PostgreSQL catalog (a file system many hosts mount): the pairing is data.
The contract suite (``test_contract.py``) runs every capability on it; these tests prove what
only this pairing has: the directory belongs to one catalog, and a local cache is never taken
over. The refusals happen before any connection, but need the shared extra (psycopg): they are
marked ``shared`` and run in that step of ``.ci/run``; the CLI's refusal to turn a local root
into a shared one needs neither and runs in the default suite."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from features import bar_count

from jules_cache import FeatureStore, InvalidInput
from jules_cache.errors import ServiceUnavailable

NOBODY = "postgresql://nobody@127.0.0.1:1/cache"  # refused at once: nothing listens on port 1


def claim(root: Path, catalog: str) -> None:
    root.mkdir(parents=True)
    (root / "catalog.json").write_text(json.dumps({"catalog": catalog}))


@pytest.mark.shared
def test_a_local_cache_is_never_opened_with_a_postgresql_catalog(root, aapl):
    FeatureStore(root).get_or_compute("AAPL", aapl, {}, bar_count)
    with pytest.raises(InvalidInput, match="local cache with its own catalog"):
        FeatureStore(root, catalog=NOBODY)
    assert not (root / "catalog.json").exists()
    assert FeatureStore(root).entries()  # still the local cache it was


@pytest.mark.shared
def test_a_directory_of_another_catalog_is_refused_naming_both(root):
    claim(root, "database cache, schema team_a")
    with pytest.raises(InvalidInput, match=r"team_a.*not to 'database cache, schema team_b'"):
        FeatureStore(root, catalog=NOBODY, catalog_schema="team_b")


@pytest.mark.shared
def test_a_directory_of_a_postgresql_catalog_needs_it_and_never_becomes_a_local_cache(
    root, monkeypatch
):
    monkeypatch.delenv("JULES_CACHE_CATALOG", raising=False)
    claim(root, "database cache, schema jules_cache")
    with pytest.raises(InvalidInput, match=r"names database cache.*JULES_CACHE_CATALOG"):
        FeatureStore(root)
    assert not (root / "manifest.duckdb").exists()


@pytest.mark.shared
def test_an_unreachable_catalog_claims_nothing(tmp_path):
    root = tmp_path / "shared-dir"
    with pytest.raises(ServiceUnavailable):
        FeatureStore(root, catalog=NOBODY, lock_timeout=2)
    assert not (root / "catalog.json").exists()  # the right catalog can still have it


def test_the_catalog_variable_of_an_s3_cache_never_turns_a_local_root_into_one(root, aapl):
    FeatureStore(root).get_or_compute("AAPL", aapl, {}, bar_count)
    env = {**os.environ, "JULES_CACHE_CATALOG": NOBODY, "JULES_CACHE_CATALOG_SCHEMA": "x"}
    cli = Path(sys.executable).with_name("jules-cache")
    done = subprocess.run(
        [str(cli), "--root", str(root), "stats", "--json"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["entries"] == 1  # read from the local manifest


@pytest.fixture
def mounted(tmp_path, services, pg_schema) -> Iterator[Callable[..., FeatureStore]]:
    """Opens stores of one directory with this test's PostgreSQL catalog (schema)."""
    opened: list[FeatureStore] = []

    def open_store(schema: str = pg_schema) -> FeatureStore:
        opened.append(
            FeatureStore(tmp_path / "mounted", catalog=services.pg_dsn, catalog_schema=schema)
        )
        return opened[-1]

    yield open_store
    for store in opened:
        store.close()


@pytest.mark.shared
def test_two_stores_of_one_catalog_share_the_directory_and_the_claim_names_it(
    mounted, pg_schema, aapl
):
    first, second = mounted(), mounted()
    root = first.root
    key = first.fetch("AAPL", aapl, {}, bar_count).key
    found = second.fetch("AAPL", aapl, {}, bar_count)
    assert found.hit and found.key == key and Path(found.path).is_relative_to(root)
    claimed = json.loads((root / "catalog.json").read_text())["catalog"]
    assert claimed.endswith(f"schema {pg_schema}")
    assert not (root / "manifest.duckdb").exists()
    with pytest.raises(InvalidInput, match="belongs to the catalog"):
        mounted(pg_schema + "_other")


@pytest.mark.skipif(
    importlib.util.find_spec("psycopg") is not None,
    reason="psycopg is installed here (the default step of .ci/run installs no shared extra)",
)
def test_a_postgresql_catalog_without_the_shared_extra_says_which_extra(root):
    with pytest.raises(InvalidInput, match=r"pip install \"jules-cache\[shared\]\""):
        FeatureStore(root, catalog=NOBODY)
    assert not root.exists()


@pytest.mark.shared
def test_temp_files_of_killed_publishes_are_found_by_check_and_removed_by_gc(mounted, aapl):
    store = mounted()
    root = store.root
    key = store.fetch("AAPL", aapl, {}, bar_count).key
    stale = [root / "tmp" / f"{key}.{n}.dead.parquet.tmp" for n in range(2)]
    for path in stale:
        path.write_bytes(b"half a result")
        os.utime(path, (1, 1))  # long before any grace period
    young = root / "tmp" / f"{key}.9.writing.parquet.tmp"  # a publish in flight
    young.write_bytes(b"")
    report = store.check()
    assert [p.kind for p in report.problems] == ["stale_temp", "stale_temp"]
    assert report.in_flight == 1
    assert store.gc(dry_run=True).total("stale_tmp").count == 2 and stale[0].exists()
    assert store.gc().total("stale_tmp").count == 2
    assert not any(path.exists() for path in stale) and young.exists()
    assert store.check().consistent and store.fetch("AAPL", aapl, {}, bar_count).hit
    young.unlink()
