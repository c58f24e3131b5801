"""Many processes, one root: single flight, no exceptions, equal results."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from features import computations, logged_feature
from helpers import frame

from jules_cache import FeatureStore, LockTimeout
from jules_cache.storage.locks import file_lock

PROCESSES = 8
SHARED_KEYS = 6

pytestmark = pytest.mark.slow  # every test spawns processes


ROWS = 500


def fetch_every_shared_key_and_a_private_one(
    root: str, log_dir: str, worker: int, barrier
) -> list[tuple[str, float, int]]:
    """Fetch every shared key (in a worker-specific order) plus a private one."""
    store = FeatureStore(root)
    barrier.wait()
    seen = []
    order = list(range(SHARED_KEYS))
    order = order[worker % SHARED_KEYS :] + order[: worker % SHARED_KEYS]
    for i in order:
        config = {"log_dir": log_dir, "tag": f"shared{i}"}
        value = store.get_or_compute(f"SYM{i}", frame(i, ROWS), config, logged_feature)
        seen.append((f"shared{i}", value["total"][0], value["rows"][0]))
    private = {"log_dir": log_dir, "tag": f"private{worker}"}
    value = store.get_or_compute("PRIV", frame(100 + worker, ROWS), private, logged_feature)
    seen.append((f"private{worker}", value["total"][0], value["rows"][0]))
    store.close()
    return seen


def test_spawned_processes_share_one_root_and_compute_each_key_once(tmp_path):
    root, log_dir = tmp_path / "cache", tmp_path / "log"
    log_dir.mkdir()
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(PROCESSES)
        with context.Pool(PROCESSES) as pool:
            results = pool.starmap(
                fetch_every_shared_key_and_a_private_one,
                [(str(root), str(log_dir), w, barrier) for w in range(PROCESSES)],
            )
    for i in range(SHARED_KEYS):
        assert computations(log_dir, f"shared{i}") == 1
    expected = {f"shared{i}": sum(float(i + j) for j in range(ROWS)) for i in range(SHARED_KEYS)}
    for worker, seen in enumerate(results):
        assert computations(log_dir, f"private{worker}") == 1
        for tag, total, rows in seen:
            assert rows == ROWS
            if tag.startswith("shared"):
                assert total == expected[tag]
    store = FeatureStore(root)
    stats = store.stats()
    assert stats.entries == SHARED_KEYS + PROCESSES
    assert stats.misses == SHARED_KEYS + PROCESSES
    assert stats.hits == PROCESSES * SHARED_KEYS - SHARED_KEYS


def _hold_lock(path: str, ready, release) -> None:
    with file_lock(Path(path), timeout=5):
        ready.set()
        release.wait(30)


def _start_lock_holder(lock: Path):
    """Start a process that holds ``lock`` until the returned event is set (or 30 s pass)."""
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(lock), ready, release))
    holder.start()
    assert ready.wait(30)
    return holder, release


def test_lock_timeout_names_the_lock_file_and_holder(tmp_path):
    lock = tmp_path / "manifest.lock"
    holder, release = _start_lock_holder(lock)
    try:
        with pytest.raises(LockTimeout) as info, file_lock(lock, timeout=0.2):
            pass
        assert str(lock) in str(info.value) and info.value.holder_pid == holder.pid
        assert isinstance(info.value, TimeoutError)
    finally:
        release.set()
        holder.join(30)


def test_a_dead_lock_holder_never_blocks_others(tmp_path):
    lock = tmp_path / "k.lock"
    holder, _ = _start_lock_holder(lock)
    holder.kill()
    holder.join(30)
    with file_lock(lock, timeout=2):
        assert lock.read_text() == str(os.getpid())
