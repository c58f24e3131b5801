"""How an entry leaves a local root in GC, ``check --fix`` and ``verify --fix``: its rows and
its file in one transaction, then the bytes. (``rm`` and the quarantine of a damaged file found
on a read go through ``engine.removal``, whose ``ManifestCatalog.drop_entries`` deletes the file
inside the transaction, before its rows, using ``drop_rows`` for the rows.)

1. ``drop_rows``, inside the caller's exclusive manifest transaction: the entry's row in every
   per-key table (``entries``, ``entry_inputs``) and the stored view of a feature left without
   entries (``catalog.views_deleted``); once that transaction committed, and before its lock is
   released, the result file is renamed out of ``objects/`` to
   ``tmp/<key>.removing.parquet.tmp`` (``Manifest.after_commit``);
2. ``discard_files``, after that transaction committed: the view links of keys that still
   have no row, and the moved files, are unlinked (or the file moved to ``quarantine/``), each
   through ``rootfs`` (no link followed, only regular files removed).

Moving the file in the same transaction as its row makes a removal final: between the commit
and the unlink no result file is left at the key's path, so no concurrent hit can serve it and
no hit's count flush (which registers result files found without a row) can bring it back.
A crash before the commit rolls the rows back while the file is already moved: a row without
its file, which reads as a miss and is replaced by the next publish (GC and ``check`` drop it);
a crash after it leaves a temp file that GC deletes after its grace period.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from jules_cache.errors import JulesCacheError
from jules_cache.query.views import LinkOwner, link_folder, link_path, unlink_links, views_deleted
from jules_cache.storage import rootfs
from jules_cache.storage.directory_objects import quarantine_file
from jules_cache.storage.layout import Layout
from jules_cache.storage.manifest import Manifest

if TYPE_CHECKING:
    import duckdb

_SQL = "removal.sql"


def drop_rows(
    manifest: Manifest,
    con: duckdb.DuckDBPyConnection,
    keys: Sequence[str],
    last_accessed: Sequence[datetime | None] | None = None,
) -> dict[str, LinkOwner]:
    """Delete the entries ``keys`` in every per-key table; return ``{key: LinkOwner}`` of
    those deleted (what ``discard_files`` needs to find their view links without searching).

    ``last_accessed`` (GC) spares a row whose last access moved since it was planned.
    """
    if not keys:
        return {}
    times = list(last_accessed) if last_accessed is not None else [None] * len(keys)
    params = {"keys": list(keys), "last_accessed": times}
    rows = manifest.execute(con, _SQL, "delete_entries", params).fetchall()
    deleted = {key: LinkOwner(*owner) for key, *owner in rows}
    if deleted:
        manifest.execute(con, _SQL, "delete_entry_inputs", {"keys": list(deleted)})
        views_deleted(con, manifest.layout, deleted)
        manifest.after_commit(lambda: _move_aside(manifest.layout, list(deleted)))
    return deleted


def _move_aside(layout: Layout, keys: list[str]) -> None:
    """Move removed entries' files out of ``objects/`` (after the COMMIT, under its lock).

    A file that cannot be moved stays where it is: ``discard_files`` reports it."""
    for key in keys:
        with contextlib.suppress(OSError, JulesCacheError):
            rootfs.rename(layout.root, layout.result_path(key), layout.removing_path(key))


@dataclass
class Discarded:
    """What ``discard_files`` did: keys whose files went, keys spared, and failures."""

    removed: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)  # published again: their files stay
    missing: list[str] = field(default_factory=list)  # no file was there
    errors: list[str] = field(default_factory=list)
    not_deleted: list[Path] = field(default_factory=list)  # files (or links) still there


def discard_files(
    manifest: Manifest,
    con: duckdb.DuckDBPyConnection,
    doomed: Mapping[str, LinkOwner | str | None],
    *,
    quarantine: bool = False,
) -> Discarded:
    """Unlink (or quarantine) the files ``drop_rows`` moved aside, and the view links (and a
    file ``drop_rows`` could not move) of ``{key: owner}`` with no row now.

    The owner (see ``views.unlink_links``) is what ``drop_rows`` returned, or just a feature,
    or None: then the view links are searched for.

    ``con`` is the manifest attached under the shared (or exclusive) lock by the caller, after
    the commit of ``drop_rows``. Failures (a file that cannot be deleted, a planted link) are
    collected, not raised: the other keys still go.
    """
    layout = manifest.layout
    outcome = Discarded()
    if not doomed:
        return outcome
    params = {"keys": list(doomed)}
    live = {row[0] for row in manifest.execute(con, _SQL, "keys_with_rows", params).fetchall()}
    outcome.live = [key for key in doomed if key in live]
    for key, owner in doomed.items():
        moved = layout.removing_path(key)
        if key in live and not rootfs.exists(layout.root, moved):
            continue
        if key not in live:
            try:  # a link left behind is harmless (the views join entries) but reported
                unlink_links(layout, {key: owner})
            except (OSError, JulesCacheError) as exc:
                _failed(outcome, _link_place(layout, key, owner), exc)
        # The file moved aside in the removing transaction; else (it could not be moved, or
        # the caller removed no row) the result file itself, unless its key was published
        # again since.
        path = moved if rootfs.exists(layout.root, moved) else layout.result_path(key)
        if key in live and path != moved:
            continue
        try:
            if quarantine:
                done = quarantine_file(layout, path, layout.result_path(key).name) is not None
            else:
                done = rootfs.unlink(layout.root, path)
        except (OSError, JulesCacheError) as exc:
            _failed(outcome, path, exc)
            continue
        (outcome.removed if done else outcome.missing).append(key)
    return outcome


def _link_place(layout: Layout, key: str, owner: LinkOwner | str | None) -> Path:
    """The link (or the folder searched for it) to name when it could not be removed."""
    if isinstance(owner, LinkOwner):
        return link_path(layout, owner.feature, key, owner.symbol, owner.result_schema)
    return link_folder(layout, owner) if owner is not None else layout.views


def _failed(outcome: Discarded, path: Path, exc: BaseException) -> None:
    outcome.errors.append(f"cannot delete {path}: {getattr(exc, 'strerror', None) or exc}")
    outcome.not_deleted.append(path)


__all__ = ["Discarded", "discard_files", "drop_rows"]
