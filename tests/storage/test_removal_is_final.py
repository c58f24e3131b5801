"""Removal is final: once ``remove`` has reported an entry gone, no concurrent hit in another
process brings the same file back (a recompute may publish a new one: that is a new entry)."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest
from features import bar_count
from helpers import frame

from jules_cache import FeatureStore

pytestmark = [pytest.mark.slow, pytest.mark.attack]
CONFIG = {"freq": "1m"}


def _hit_until(root: str, stop: str) -> None:
    """Hit (or recompute) one entry in a loop, writing the counts after every hit."""
    with FeatureStore(root, hit_flush_seconds=0) as store:
        while not os.path.exists(stop):
            store.fetch("AAPL", frame(1), CONFIG, bar_count, name="bars")


def same_file(path: Path) -> tuple[int, int]:
    """A file's identity: its inode and its write time. ext4 reuses a freed inode number at
    once, so a recompute's new file may get the removed one's; never its write time too."""
    found = path.stat()
    return found.st_ino, found.st_mtime_ns


def test_a_removed_file_is_never_registered_again_by_concurrent_hits(tmp_path: Path) -> None:
    root, stop = tmp_path / "cache", tmp_path / "stop"
    with FeatureStore(root) as store:
        key = store.fetch("AAPL", frame(1), CONFIG, bar_count, name="bars").key
    context = multiprocessing.get_context("spawn")
    hitters = [context.Process(target=_hit_until, args=(str(root), str(stop))) for _ in range(2)]
    for hitter in hitters:
        hitter.start()
    resurrected = 0
    try:
        with FeatureStore(root) as store:
            path = Path(store.fetch("AAPL", frame(1), CONFIG, bar_count, name="bars").path)
            time.sleep(1.0)  # the hitters are up and hitting
            for _ in range(20):
                try:
                    identity = same_file(path)
                except FileNotFoundError:  # a hitter's recompute is publishing: wait for it
                    time.sleep(0.05)
                    continue
                if not store.remove(key=key):
                    continue
                time.sleep(0.3)  # the hitters' counts are written meanwhile
                try:
                    if same_file(path) == identity:
                        resurrected += 1  # the very file reported removed is served again
                except FileNotFoundError:
                    pass
    finally:
        stop.touch()
        for hitter in hitters:
            hitter.join(60)
    assert all(hitter.exitcode == 0 for hitter in hitters)
    assert resurrected == 0, f"{resurrected} removed files came back"
