"""Where things live inside a cache root.

    <root>/
      manifest.duckdb              the manifest (entries, memo, counters, gc runs)
      manifest.lock                guards every attach of the manifest
      objects/<k[:2]>/<k>.parquet  immutable results; the path is derived from the key alone
      tmp/                         in-flight writes: results (renamed into objects/ under the
                                   manifest lock) and manifests being created or rebuilt
      locks/<k>.lock               per-key single-flight locks (and gc.lock, GC's own)
      views/<digest>/schema-<d>/__jules_symbol=<s>/<k>.parquet
                                   hard links to a feature's results, a folder per result schema
                                   and symbol: what its stored SQL view reads (``query.views``)
      quarantine/                  damaged files moved aside by a hit or ``check --fix``
      catalog.duckdb               views for plain DuckDB clients (``query.catalog_file``)

Objects, temp files and locks are named by key alone. The only place a symbol appears in a
path is the name of its link folder, percent-encoded (every byte but ``A-Z0-9-.``), so no
symbol (``../../etc/passwd``, ``BRK/B``, ``日本``) can escape the root or collide with
another on a case-insensitive filesystem. The root is resolved once, so a
root that is itself a symbolic link works; every area below it must be a real folder on the
root's device (checked when a store opens, and enforced on every change by ``rootfs``).
"""

from __future__ import annotations

import os
import re
import stat
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from jules_cache.errors import InvalidInput
from jules_cache.storage import rootfs

MANIFEST_NAME = "manifest.duckdb"
MANIFEST_LOCK_NAME = "manifest.lock"
OBJECTS_DIR = "objects"
TMP_DIR = "tmp"
LOCKS_DIR = "locks"
VIEWS_DIR = "views"
QUARANTINE_DIR = "quarantine"
RESULT_SUFFIX = ".parquet"
TMP_SUFFIX = ".tmp"

KEY_PATTERN = re.compile(r"[0-9a-f]{32}")  # fullmatch only: '$' passes a trailing "\n"


def result_name(key: str) -> str:
    """A result's name under its root, '/'-separated: a local path or an S3 object name."""
    return f"{OBJECTS_DIR}/{key[:2]}/{key}{RESULT_SUFFIX}"


@dataclass(frozen=True)
class Layout:
    """The paths of one cache root, resolved to an absolute, symlink-free form."""

    root: Path

    @classmethod
    def create(cls, root: str | os.PathLike[str]) -> Layout:
        """Resolve ``root`` and create its folders if missing."""
        path = Path(root)
        path = path.expanduser().resolve()
        if path.exists() and not path.is_dir():
            raise InvalidInput(
                f"cache root {path} exists and is not a directory; pick another root"
            )
        layout = cls(path)
        layout.require_real_areas()
        try:
            if not path.is_dir():  # a new root: its entry in its parent made durable too
                path.mkdir(parents=True, exist_ok=True)
                with rootfs.folder(path.parent, path.parent) as parent:
                    rootfs.fsync_folder(parent)
            for folder in (layout.objects, layout.tmp, layout.locks):
                with rootfs.folder(path, folder, create=True):
                    pass
        except OSError as exc:
            raise InvalidInput(
                f"cannot create cache root {path}: {exc.strerror}; check its permissions "
                "or pass another root"
            ) from exc
        if not os.access(path, os.W_OK):  # EROFS even for root: a read-only mount
            raise InvalidInput(
                f"cache root {path} is not writable (a read-only file system or missing "
                "permissions): every process takes locks in it; pass a writable root"
            )
        return layout

    @classmethod
    def open_existing(cls, root: str | os.PathLike[str]) -> Layout:
        """Resolve ``root`` of an existing cache for a read-only store: nothing is created
        and the root need not be writable (a read-only mount). Raises ``InvalidInput`` if
        there is no cache (no manifest) at ``root``."""
        path = Path(root)
        path = path.expanduser().resolve()
        if not (path / MANIFEST_NAME).is_file():
            raise InvalidInput(
                f"no jules_cache at {path} (no {MANIFEST_NAME}): a read-only store opens an "
                "existing cache; check the root, or create it with a writable FeatureStore"
            )
        layout = cls(path)
        layout.require_real_areas()
        return layout

    def require_real_areas(self, *, shards: bool = False) -> None:
        """Raise ``UnsafePath`` if an area folder or a manifest file of the root is a link (or
        a folder is not one, or sits on another device): the library would refuse to touch it
        anyway, so say so before any work starts. ``shards`` also checks ``objects/<xx>``
        (GC and check, which list every result file, do)."""
        for area in (self.objects, self.tmp, self.locks, self.views, self.quarantine):
            rootfs.require_real_folder(self.root, area)
        for name in (MANIFEST_NAME, MANIFEST_NAME + ".wal", MANIFEST_LOCK_NAME):
            rootfs.require_regular_file(self.root / name)
        if shards:
            for name, found in rootfs.listdir(self.root, self.objects):
                if stat.S_ISLNK(found.st_mode):
                    rootfs.require_real_folder(self.root, self.objects / name)

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def manifest_lock(self) -> Path:
        return self.root / MANIFEST_LOCK_NAME

    @property
    def objects(self) -> Path:
        return self.root / OBJECTS_DIR

    @property
    def tmp(self) -> Path:
        return self.root / TMP_DIR

    @property
    def locks(self) -> Path:
        return self.root / LOCKS_DIR

    @property
    def views(self) -> Path:
        return self.root / VIEWS_DIR

    @property
    def quarantine(self) -> Path:
        return self.root / QUARANTINE_DIR

    def relative_result_path(self, key: str) -> str:
        """The manifest's ``path`` column for ``key``: relative, '/'-separated."""
        return result_name(key)

    def result_path(self, key: str) -> Path:
        return self.root / self.relative_result_path(key)

    def removing_path(self, key: str) -> Path:
        """Where a removed entry's file waits, out of ``objects/``, for its unlink after the
        removing transaction commits (a leftover temp file if the process dies first)."""
        return self.tmp / f"{key}.removing{RESULT_SUFFIX}{TMP_SUFFIX}"

    def key_lock_path(self, key: str) -> Path:
        return self.locks / f"{key}.lock"

    def new_temp_path(self, key: str) -> Path:
        """Create an empty temp file no other writer can pick (key, pid, thread, a random
        part), as a new regular file in the real ``tmp/`` folder, and return its path."""
        unique = f"{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:12]}"
        path = self.tmp / f"{key}.{unique}{RESULT_SUFFIX}{TMP_SUFFIX}"
        rootfs.create(self.root, path)
        return path
