"""The objects of a cache in a directory whose catalog is PostgreSQL: a cache on a file system
many hosts mount (NFS, a cluster file system), keyed by PostgreSQL advisory locks, not ``flock``.

``FeatureStore('/mnt/cache', catalog='postgresql://…')`` pairs this with the catalog an
``s3://`` root uses: the same engine (``engine.shared``), only the objects differ. It answers
what ``s3_objects.S3ObjectStore`` answers, the same way:

- an object is a file at its key-derived name under the directory (``objects/ab/<key>.parquet``,
  the local layout); a result is written to ``tmp/`` first and published with a hard link,
  which fails if the name exists (put-if-absent: no reader ever sees a partial or replaced
  file), then the folder is fsynced;
- every change goes through ``rootfs`` (no link inside the directory is followed);
- ``catalog.json`` names the catalog the directory belongs to: a local store (a DuckDB
  manifest) refuses the directory, and so does another catalog, since two catalogs over one
  set of files would each delete the other's as orphans.

Every host must mount the directory at the same path: the catalog is bound to that path.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from jules_cache.errors import InvalidInput, JulesCacheError, StoreError
from jules_cache.roots import CLAIM_NAME, claimed_catalog
from jules_cache.storage import rootfs
from jules_cache.storage.layout import MANIFEST_NAME, Layout
from jules_cache.storage.objects import ObjectInfo
from jules_cache.storage.result_files import fsync_dir


class DirectoryObjects:
    """The result files under one directory (see the module): a local root's own (its
    manifest is its catalog), or a directory a PostgreSQL catalog claimed (``claimed``)."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.root = layout.root
        self.location = str(self.root)

    @classmethod
    def claimed(cls, root: Path, *, catalog: str, read_only: bool = False) -> DirectoryObjects:
        """The objects of ``root`` for the catalog named ``catalog``, claiming the directory
        for it (``catalog.json``) unless ``read_only``, which needs the claim there."""
        if read_only:  # nothing is created: the directory and its claim must be there
            layout = Layout(Path(root).expanduser().resolve())
            if claimed_catalog(layout.root) != catalog:
                raise InvalidInput(
                    f"no cache of the catalog {catalog!r} at {layout.root} (no "
                    f"{CLAIM_NAME} naming it): a read-only store opens an existing cache"
                )
        else:
            layout = Layout.create(root)
            _claim(layout.root, catalog)
        return cls(layout)

    def __repr__(self) -> str:
        return f"DirectoryObjects({self.location!r})"

    def where(self, name: str) -> Path:
        """Where object ``name`` is, for the caller (``CacheResult.path``)."""
        return self.root / name

    def path(self, name: str) -> Path:
        """Every object is a local file: a hit reads it in place."""
        return self.where(name)

    def new_temp_path(self, key: str) -> Path:
        """A new temp file in ``tmp/``: on the objects' file system, so a link publishes it."""
        return self.layout.new_temp_path(key)

    def discard_temp(self, temp: Path) -> None:
        with contextlib.suppress(OSError, JulesCacheError):
            rootfs.unlink(self.root, temp)

    def put_if_absent(self, name: str, data: str | os.PathLike[str]) -> bool:
        """Publish the written file ``data`` as object ``name`` unless it exists; True if this
        call did. A hard link: atomic, and refused when the name is taken."""
        target = self.where(name)
        source = Path(data)
        with (
            rootfs.folder(self.root, source.parent) as source_fd,
            rootfs.folder(self.root, target.parent, create=True) as fd,
        ):
            try:
                os.link(source.name, target.name, src_dir_fd=source_fd, dst_dir_fd=fd)
            except FileExistsError:
                return False
        fsync_dir(target.parent)
        return True

    def get(self, name: str) -> bytes | None:
        """The content of object ``name``, or None if there is none (a miss)."""
        try:
            with rootfs.folder(self.root, self.where(name).parent) as fd:
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                with open(os.open(Path(name).name, flags, dir_fd=fd), "rb") as file:
                    return file.read()
        except FileNotFoundError:
            return None

    def head(self, name: str) -> ObjectInfo | None:
        """Size and time of object ``name``, or None if there is none."""
        try:
            found = os.stat(self.where(name), follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(found.st_mode):
            return None
        return ObjectInfo(name, found.st_size, _naive_utc(found.st_mtime_ns), _etag(found))

    def delete(self, names: list[str], *, quarantine: bool = False) -> None:
        """Delete objects (a missing one is not an error); ``quarantine`` moves them into
        ``quarantine/`` instead, for inspection. Every object is tried; raises ``StoreError``
        naming those that stay (as ``S3ObjectStore.delete``)."""
        failed: list[str] = []
        for name in names:
            try:
                if quarantine:
                    quarantine_file(self.layout, self.where(name))
                else:
                    rootfs.unlink(self.root, self.where(name))
            except (OSError, JulesCacheError) as exc:
                failed.append(f"{self.where(name)} ({getattr(exc, 'strerror', None) or exc})")
        if failed:
            shown = "; ".join(failed[:3]) + (f" and {len(failed) - 3} more" if failed[3:] else "")
            raise StoreError(
                f"could not delete {len(failed)} file(s): {shown}. Make them deletable (check "
                "`ls -ld` and `lsattr` of their folder), then retry"
            )

    def list_frame(self, folders: Iterable[str], **_: Any) -> pl.DataFrame:
        """``name``, ``size`` and ``last_modified`` of the regular files in ``folders``
        (``"objects/ab/"``), in name order, as ``S3ObjectStore.list_frame`` gives them."""
        names: list[str] = []
        sizes: list[int] = []
        micros: list[int] = []
        for folder in sorted(set(folders)):
            for entry_name, found in rootfs.listdir(self.root, self.where(folder.rstrip("/"))):
                if stat.S_ISREG(found.st_mode):
                    names.append(folder + entry_name)
                    sizes.append(found.st_size)
                    micros.append(found.st_mtime_ns // 1000)
        frame = pl.DataFrame(
            {
                "name": pl.Series(names, dtype=pl.String),
                "size": pl.Series(sizes, dtype=pl.Int64),
                "last_modified": pl.Series(micros, dtype=pl.Int64).cast(pl.Datetime("us")),
            }
        )
        return frame.sort("name")

    def arrow_filesystem(self) -> Any:
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem()

    def arrow_path(self, name: str = "") -> str:
        return str(self.where(name)) if name else self.location

    def close(self) -> None:
        """Nothing is held between calls (temp files are deleted as each publish ends)."""


def quarantine_file(layout: Layout, path: Path, name: str | None = None) -> Path | None:
    """Move a damaged file into ``<root>/quarantine/`` as ``<name>.<time>`` (default: its own
    name); return its new path (None: it was gone).

    Call with no row for its key (or for a file that is no entry), under the catalog's lock.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = layout.quarantine / f"{name or path.name}.{stamp}"
    try:
        rootfs.rename(layout.root, path, target)
    except FileNotFoundError:
        return None
    return target


def require_claimable(root: Path, catalog: str) -> None:
    """Raise ``InvalidInput`` unless ``root`` may hold the objects of ``catalog``: not a local
    cache (a manifest of its own), not another catalog's directory."""
    if (root / MANIFEST_NAME).exists():
        raise InvalidInput(
            f"{root} is a local cache with its own catalog ({MANIFEST_NAME}); a PostgreSQL "
            "catalog over its files would delete them as orphans. Open it without catalog=, "
            "or give the PostgreSQL catalog a new directory"
        )
    found = claimed_catalog(root)
    if found is not None and found != catalog:
        raise InvalidInput(
            f"{root} belongs to the catalog {found!r} ({CLAIM_NAME}), not to {catalog!r}: "
            "two catalogs over one directory would delete each other's files"
        )


def _claim(root: Path, catalog: str) -> None:
    """Write ``catalog.json`` naming ``catalog`` unless there is one; the first of two racing
    claims wins and the other is refused."""
    require_claimable(root, catalog)
    path = root / CLAIM_NAME
    if path.exists():
        return
    temp = root / f".{CLAIM_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    temp.write_text(json.dumps({"catalog": catalog}))
    try:
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)  # atomic: never a half-written claim
    finally:
        temp.unlink()
    require_claimable(root, catalog)


def _naive_utc(mtime_ns: int) -> datetime:
    return datetime.fromtimestamp(mtime_ns / 1e9, UTC).replace(tzinfo=None)


def _etag(found: os.stat_result) -> str:
    return f"{found.st_ino:x}-{found.st_mtime_ns:x}"
