"""fingerprint="footer": fast but not exact, and `verify` finds what it got wrong."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import polars as pl
import pytest

from jules_cache import FeatureStore


def _write(path, cents_changed: bool) -> None:
    """A file whose one-cent edit leaves the Parquet footer byte-identical (no stats, plain)."""
    prices = np.round(np.linspace(10, 20, 50_000), 2)
    if cents_changed:
        prices[500] += 0.01
    pl.DataFrame({"price": prices}).write_parquet(
        path, compression="uncompressed", statistics=False
    )


def total(ticks, config):
    return ticks.select(pl.col("price").sum())


@pytest.fixture
def footer_store(root):
    return FeatureStore(root, fingerprint="footer")


def test_footer_mode_serves_a_stale_entry_that_verify_finds_and_fix_removes(footer_store, tmp_path):
    path = tmp_path / "vendor.parquet"
    _write(path, cents_changed=False)
    first = footer_store.fetch("AAPL", path, {}, total)
    assert footer_store.entry(first.key).data_method == "footer"
    _write(path, cents_changed=True)
    stale = footer_store.fetch("AAPL", path, {}, total)
    assert stale.hit  # the documented weakness: an identical footer is the same key
    report = footer_store.verify()
    assert report.stale == (first.key,) and report.removed == 0 and not report.ok
    fixed = footer_store.verify(fix=True)
    assert fixed.removed == 1 and fixed.ok and footer_store.entry(first.key) is None
    fresh = footer_store.fetch("AAPL", path, {}, total)
    assert not fresh.hit
    assert fresh.value["price"][0] == pytest.approx(first.value["price"][0] + 0.01)


def test_content_mode_never_serves_the_stale_entry(store, tmp_path):
    path = tmp_path / "vendor.parquet"
    _write(path, cents_changed=False)
    first = store.fetch("AAPL", path, {}, total)
    _write(path, cents_changed=True)
    second = store.fetch("AAPL", path, {}, total)
    assert not second.hit and second.key != first.key
    assert store.verify().checked == 0  # only footer-keyed entries need verifying


def test_unchanged_and_deleted_inputs_are_not_stale(footer_store, tmp_path):
    path = tmp_path / "vendor.parquet"
    _write(path, cents_changed=False)
    footer_store.fetch("AAPL", path, {}, total)
    assert footer_store.verify().stale == ()
    os.unlink(path)
    report = footer_store.verify()
    assert report.stale == () and len(report.inputs_missing) == 1


@pytest.mark.slow
def test_verify_command_exits_1_while_stale_entries_remain(root, tmp_path, jules_cache_command):
    path = tmp_path / "vendor.parquet"
    _write(path, cents_changed=False)
    FeatureStore(root, fingerprint="footer").fetch("AAPL", path, {}, total)
    _write(path, cents_changed=True)
    command = [jules_cache_command, "--root", str(root), "verify", "--json"]
    found = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert found.returncode == 1 and len(json.loads(found.stdout)["stale"]) == 1
    fixed = subprocess.run([*command, "--fix"], capture_output=True, text=True, timeout=120)
    assert fixed.returncode == 0 and json.loads(fixed.stdout)["removed"] == 1
