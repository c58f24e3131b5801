"""Stale temp and lock files: found and removed one way, for ``check`` and for GC.

What a cache root accumulates besides results and the manifest:

    tmp/<key>.<unique>.parquet.tmp          a put's result being written, renamed into objects/
    tmp/manifest.<unique>.duckdb.tmp[.wal]  a manifest being created or rebuilt
    locks/<key>.lock                        a key's single-flight lock (left after every put)

A temp file untouched for longer than the grace period belongs to a put (or manifest creation)
that was killed: a live one writes to it and renames it within seconds. A lock file untouched
for that long and held by nobody is just an empty file. Both are harmless leftovers; nothing
else is ever a candidate (only regular files with these names: ``locks/gc.lock``, GC's own, and
files a user put there are never touched).

A leftover is removed only if it is still stale at that moment: its age is read again, and a
lock file goes only while this process holds it (taken without waiting), so a holder is never
disturbed; a waiter that opened the old inode notices the unlink and retries (``locks``).
"""

from __future__ import annotations

import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from jules_cache.errors import LockTimeout
from jules_cache.options import DEFAULT_GRACE_SECONDS
from jules_cache.storage import rootfs
from jules_cache.storage.layout import Layout
from jules_cache.storage.locks import file_lock

# Six hours: far beyond any put or manifest creation, well within a day of cron GC runs.
# A result file without a row younger than this may be a publish whose row is still on its way
# (engine.local writes rows of quick successive misses in batches, within about a second).
ORPHAN_GRACE_SECONDS = 60.0

TEMP = "temp"
LOCK = "lock"

_TEMP_NAME = re.compile(
    r"(?:(?P<key>[0-9a-f]{32})\.[^/\\]+\.parquet\.tmp|manifest\.[^/\\]+\.duckdb\.tmp(?:\.wal)?)"
)
_LOCK_NAME = re.compile(r"(?P<key>[0-9a-f]{32})\.lock")  # fullmatch only

# What ``remove`` did.
REMOVED = "removed"
IN_USE = "in use"  # touched since it was found, or its lock is held: left alone
GONE = "gone"  # someone else removed it first


@dataclass(frozen=True)
class Leftover:
    """A temp or lock file older than the grace period when it was found."""

    kind: str  # TEMP or LOCK
    path: Path
    key: str | None  # the key its name carries (None: a manifest temp file)
    bytes: int
    age_seconds: float


@dataclass(frozen=True)
class Found:
    """The stale leftovers of a root, and how many temp files are younger (puts in flight)."""

    stale: tuple[Leftover, ...]
    in_flight: int


def find(layout: Layout, grace_seconds: float) -> Found:
    """List the temp and lock files of ``layout`` older than ``grace_seconds``, by name.

    Whether a lock is held is not tested here (``is_free`` does): GC plans by age and skips a
    held lock when it comes to remove it, ``check`` reports only the free ones.
    """
    now = time.time()
    stale: list[Leftover] = []
    in_flight = 0
    for kind, folder, pattern in ((TEMP, layout.tmp, _TEMP_NAME), (LOCK, layout.locks, _LOCK_NAME)):
        for name, found in rootfs.listdir(layout.root, folder):
            match = pattern.fullmatch(name)
            if match is None or not stat.S_ISREG(found.st_mode):
                continue
            age = now - found.st_mtime
            if age <= grace_seconds:
                in_flight += kind == TEMP
                continue
            key = match.group("key")
            stale.append(Leftover(kind, folder / name, key, found.st_size, age))
    return Found(tuple(stale), in_flight)


def is_free(path: Path) -> bool:
    """True if nobody holds the lock file ``path`` (tested by taking it without waiting)."""
    try:
        with file_lock(path, 0.0, create=False):
            return True
    except (LockTimeout, FileNotFoundError):
        return False


def remove(layout: Layout, leftover: Leftover, grace_seconds: float) -> str:
    """Remove ``leftover`` if it is still stale; return ``REMOVED``, ``IN_USE`` or ``GONE``.

    Raises ``UnsafePath`` if something other than a regular file now has its name, or on the
    way to it, and ``OSError`` if the file system refuses.
    """
    try:
        age = time.time() - leftover.path.lstat().st_mtime
    except FileNotFoundError:
        return GONE
    if age <= grace_seconds:
        return IN_USE
    if leftover.kind == TEMP:
        return REMOVED if rootfs.unlink(layout.root, leftover.path) else GONE
    try:
        with file_lock(leftover.path, 0.0, create=False):  # only a lock nobody holds goes
            removed = rootfs.unlink(layout.root, leftover.path)
    except LockTimeout:
        return IN_USE
    except FileNotFoundError:
        return GONE
    return REMOVED if removed else GONE


__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "GONE",
    "IN_USE",
    "LOCK",
    "REMOVED",
    "TEMP",
    "Found",
    "Leftover",
    "find",
    "is_free",
    "remove",
]
