"""Counts a store leaves when it closes, as small files the next manifest write folds in.

A process that only hit the cache needs no DuckDB, except to write its hit counts at the end:
importing it, attaching the manifest and committing cost ~200 ms, more than the process's
whole first hit. So a local store closing (``close()``, interpreter exit) in a process that
never loaded DuckDB, with counts but no rows to write, leaves them in
``counts/<pid>.<unique>.json`` (``leave``), and every manifest transaction that writes counts
folds in the files it finds (``collect``) and deletes them before it commits (``discard``):
at most once. A crash between the delete and the commit loses those counts -- statistics,
never results -- and a file that cannot be read is deleted with a log line.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from datetime import datetime
from pathlib import Path
from stat import S_ISREG

from jules_cache.errors import UnsafePath
from jules_cache.storage import rootfs
from jules_cache.storage.layout import Layout
from jules_cache.storage.pending_counts import Counts

_log = logging.getLogger("jules_cache")
_SUFFIX = ".json"
_PARTIAL = ".part"  # being written: renamed to its final name when complete


def folder(layout: Layout) -> Path:
    return layout.root / "counts"


def leave(layout: Layout, counts: Counts) -> None:
    """Write ``counts`` (no rows) as a new journal file: written whole, then renamed into
    place, so a reader never sees half of one. Raises ``OSError``/``UnsafePath``."""
    name = f"{os.getpid()}.{uuid.uuid4().hex[:12]}"
    text = json.dumps(
        {
            "hits": {key: [n, when.isoformat()] for key, (n, when) in counts.hits.items()},
            "misses": counts.misses,
            "calls": counts.calls,
        }
    )
    with rootfs.folder(layout.root, folder(layout), create=True) as fd:
        partial = name + _PARTIAL
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        handle = os.open(partial, flags, 0o666, dir_fd=fd)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.rename(partial, name + _SUFFIX, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            os.unlink(partial, dir_fd=fd)
            raise


def waiting(layout: Layout) -> list[str]:
    """The names of the journal files waiting to be folded in (cheap: one listing). A
    ``counts`` that is a link, or not a folder, holds none: it is never followed."""
    try:
        listed = rootfs.listdir(layout.root, folder(layout))
    except (OSError, UnsafePath):
        return []
    return [name for name, found in listed if name.endswith(_SUFFIX) and S_ISREG(found.st_mode)]


def collect(layout: Layout, names: list[str]) -> Counts:
    """The counts of the journal files ``names``, added up (an unreadable one counts zero)."""
    total = Counts()
    if not names:
        return total
    try:
        with rootfs.folder(layout.root, folder(layout)) as fd:
            for name in names:
                _add_file(total, fd, name)
    except (FileNotFoundError, UnsafePath):
        pass  # no real counts/ folder (any more): nothing to fold in
    return total


def _add_file(total: Counts, fd: int, name: str) -> None:
    try:
        handle = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        with os.fdopen(handle, encoding="utf-8") as source:
            document = json.load(source)
        total.add(
            Counts(
                hits={
                    key: (int(n), datetime.fromisoformat(when))
                    for key, (n, when) in document["hits"].items()
                },
                misses=int(document["misses"]),
                calls={key: list(row) for key, row in document["calls"].items()},
            )
        )
    except FileNotFoundError:
        pass  # deleted since it was listed
    except (OSError, ValueError, TypeError, KeyError) as exc:
        _log.warning("ignoring unreadable hit counts %s: %s", name, exc)


def discard(layout: Layout, names: list[str]) -> None:
    """Delete journal files once their counts are written in the caller's transaction."""
    for name in names:
        rootfs.unlink(layout.root, folder(layout) / name)
