"""Inter-process file locks built on ``flock``.

``flock`` locks belong to an open file description, so they exclude other processes *and*
other threads or store objects of this process, and the kernel releases them when a holder
dies — a crashed trainer never blocks the others. Lock files are never deleted while held;
if one is unlinked and recreated (e.g. by GC), a holder notices that its inode is no longer the
path's and retries, so two processes can never both believe they hold the same lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import LockTimeout

_MAX_POLL = 0.01  # a waiter notices a released lock within 10 ms


@contextlib.contextmanager
def file_lock(path: Path, timeout: float, *, shared: bool = False) -> Iterator[None]:
    """Hold an exclusive (or shared) lock on ``path`` for the ``with`` block.

    Raises ``LockTimeout`` naming the lock file (and the last writer's pid) after ``timeout``
    seconds; ``timeout=0`` tries once.
    """
    fd = _acquire(path, timeout, shared)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _acquire(path: Path, timeout: float, shared: bool) -> int:
    operation = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise LockTimeout(str(path), timeout, _holder_pid(path)) from None
            time.sleep(delay)
            delay = min(delay * 2, _MAX_POLL)
            continue
        except BaseException:
            os.close(fd)
            raise
        if _still_linked(fd, path):
            if not shared:
                _record_holder(fd)
            return fd
        fcntl.flock(fd, fcntl.LOCK_UN)  # the file was replaced while we waited: lock the new one
        os.close(fd)


def _still_linked(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _record_holder(fd: int) -> None:
    """Write our pid into the lock file so a timed-out waiter can name the holder."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)


def _holder_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
