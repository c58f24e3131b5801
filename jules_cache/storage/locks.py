"""Inter-process file locks built on ``flock``.

``flock`` locks belong to an open file description, so they exclude other processes *and*
other threads or store objects of this process, and the kernel releases them when a holder
dies — a crashed trainer never blocks the others. A lock file is opened through its folder's
descriptor with ``O_NOFOLLOW`` and must be a regular file, so a link planted at its name (to a
file outside the root) is refused, never truncated. Lock files are never deleted while held;
if one is unlinked and recreated (e.g. by GC), a holder notices that its inode is no longer the
path's and retries, so two processes can never both believe they hold the same lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from jules_cache.errors import LockTimeout, UnsafePath

_MAX_POLL = 0.01  # a waiter notices a released lock within 10 ms


@contextlib.contextmanager
def file_lock(
    path: Path, timeout: float, *, shared: bool = False, create: bool = True
) -> Iterator[None]:
    """Hold an exclusive (or shared) lock on ``path`` for the ``with`` block.

    Raises ``LockTimeout`` naming the lock file (and the last writer's pid) after ``timeout``
    seconds; ``timeout=0`` tries once. With ``create=False`` the file must exist and is opened
    read-only (``flock`` needs no write access: a read-only store on a read-only mount);
    a missing one raises ``FileNotFoundError``.
    """
    fd = _acquire(path, timeout, shared, create)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _acquire(path: Path, timeout: float, shared: bool, create: bool = True) -> int:
    operation = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        fd = _open(path, create)
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


def _open(path: Path, create: bool = True) -> int:
    """Open (creating) the lock file, refusing a link or a non-regular file at its name."""
    mode = os.O_RDWR | os.O_CREAT if create else os.O_RDONLY
    flags = mode | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _unsafe(path.parent, "is a symbolic link or not a folder") from exc
        raise
    try:
        fd = os.open(path.name, flags, 0o666, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _unsafe(path, "is a symbolic link") from exc
        raise
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _unsafe(path, "is not a regular file")
    return fd


def _unsafe(path: Path, what: str) -> UnsafePath:
    return UnsafePath(
        f"lock file {path} {what}; jules_cache never follows links inside its root. "
        "Remove it (the cache re-creates it) and retry"
    )


def _still_linked(fd: int, path: Path) -> bool:
    try:
        return os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _record_holder(fd: int) -> None:
    """Write our pid into the lock file so a timed-out waiter can name the holder."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)


def _holder_pid(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        text = os.read(fd, 32).decode(errors="replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None
