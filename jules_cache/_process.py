"""What survives ``os.fork()``: the library resets the state it owns, and refuses what cannot work.

A child inherits the parent's thread pools without their threads. Once Polars has started its
compute pool (threads named ``polars-0``, ``polars-1``…), its next parallel operation in a
forked child waits forever (measured: a ``group_by`` never returns), and a task sent to our own
hashing pool (``jules-hash-…``) would too. So a child forked after either pool started fails at
once with ``ForkedProcess``, which says to use the ``spawn`` start method. A child forked before
(only imports done, or DuckDB used: its new connection in the child works) goes on, after the
hooks registered with ``on_fork`` dropped the parent's pools, connections and clients (never
closing them: they are the parent's, and closing DuckDB's in a child crashes it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from jules_cache.errors import ForkedProcess

_resets: list[Callable[[], None]] = []
# Threads of pools a forked child cannot use: Polars' compute pool and its async runtime, ours.
_POOL_THREAD = re.compile(r"polars-\d+|tokio-rt-worker|jules-hash.*")
_pool_threads_at_fork = 0
_forked_after_pools = False


def on_fork(reset: Callable[[], None]) -> Callable[[], None]:
    """Register ``reset`` to run in every forked child (usable as a decorator)."""
    _resets.append(reset)
    return reset


def require_unforked() -> None:
    """Raise ``ForkedProcess`` in a child forked after Polars' or our thread pool started."""
    if _forked_after_pools:
        raise ForkedProcess(
            f"process {os.getpid()} was forked from a process whose Polars or jules_cache "
            "thread pool had started; Polars and jules_cache cannot work in it (Polars waits "
            "forever on its thread pool). Start worker processes with the spawn method: "
            "multiprocessing.get_context('spawn') or "
            "concurrent.futures.ProcessPoolExecutor(mp_context=multiprocessing.get_context('spawn'))"
        )


def _count_pool_threads() -> int:
    """Threads of the pools named above (Linux names them in /proc; elsewhere assume some)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    found = 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                found += bool(_POOL_THREAD.fullmatch(comm.read().strip()))
        except OSError:  # the thread ended meanwhile
            continue
    return found


def _before_fork() -> None:
    global _pool_threads_at_fork
    _pool_threads_at_fork = _count_pool_threads()


def _after_fork_in_child() -> None:
    global _forked_after_pools
    _forked_after_pools = _forked_after_pools or _pool_threads_at_fork > 0
    for reset in _resets:
        reset()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
