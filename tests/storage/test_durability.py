"""What a publish makes durable before the call returns: a rename or a new folder is only
on disk once the folder that holds its entry is fsynced, so every folder the library creates
has its parent fsynced too (else a power cut can lose a result whose row committed)."""

from __future__ import annotations

import os

import polars as pl
from features import bar_count

from jules_cache import FeatureStore


def test_every_folder_a_first_miss_creates_has_its_entry_fsynced(tmp_path, ticks, monkeypatch):
    fsynced: set[int] = set()  # inodes of the folders fsynced
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        fsynced.add(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    root = tmp_path / "cache"
    with FeatureStore(root) as store:
        result = store.fetch("AAPL", ticks.filter(pl.col("symbol") == "AAPL"), {}, bar_count)
        assert not result.hit
    created = [root, root / "objects", result.path.parent]
    for folder in created:  # the folder that holds each new folder's entry was fsynced
        assert folder.parent.stat().st_ino in fsynced, f"{folder.parent} never fsynced"
