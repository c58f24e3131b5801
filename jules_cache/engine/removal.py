"""Removal, written once for every root: an entry goes whole or stays whole.

``rm`` takes its entries in batches. Each batch holds its keys' locks (so no publish of them
interleaves), then one catalog transaction (``Catalog.drop_entries``) deletes their objects and
then the rows of the objects that went. An object that cannot be deleted keeps its row: the
entry stays listed and served, and the caller is told which and why (``PartialRemoval``).
Once an entry is reported removed, nothing brings it back: its object went before its row, in
the transaction, so no hit can serve it or register it again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jules_cache.errors import JulesCacheError, LockTimeout, PartialRemoval, StoreError
from jules_cache.storage.catalog import keys_with_rows
from jules_cache.storage.layout import result_name

if TYPE_CHECKING:
    from datetime import datetime

    from jules_cache.models import Entry
    from jules_cache.storage.catalog import Catalog
    from jules_cache.storage.objects import ObjectStore

# Keys per transaction: each holds its key lock (a file descriptor on a local root) meanwhile.
REMOVE_BATCH = 200
# A key busy longer than this is being computed: left, and said so (the publish would replace
# what a removal deleted under it).
BUSY_KEY_SECONDS = 1.0


@dataclass
class Removal:
    """What ``remove_entries`` did."""

    removed: list[Entry] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # {object location: why}: still served
    left_files: dict[str, str] = field(default_factory=dict)  # {path: why}: entry gone

    def error(self, matched: int) -> PartialRemoval | None:
        """The error to raise for what could not be done, or None."""
        if not self.kept and not self.left_files:
            return None
        parts = []
        if self.kept:
            shown = "; ".join(f"{where}: {why}" for where, why in list(self.kept.items())[:3])
            parts.append(
                f"{len(self.kept)} could not be removed and are still listed and served "
                f"({shown}). Retry once the key is free or the service is back"
            )
        if self.left_files:
            shown = "; ".join(f"{where}: {why}" for where, why in list(self.left_files.items())[:3])
            parts.append(
                f"{len(self.left_files)} file(s) of removed entries could not be deleted "
                f"({shown}). Make them deletable (check `ls -ld` and `lsattr` of their "
                "folder), then `jules-cache check --fix` removes them"
            )
        message = f"removed {len(self.removed)} of {matched} entries; " + ". ".join(parts)
        return PartialRemoval(message, self.removed, [*self.kept, *self.left_files])


def remove_entries(
    catalog: Catalog, objects: ObjectStore, entries: Iterable[Entry], *, lock_timeout: float
) -> Removal:
    """Remove ``entries`` in batches, each holding its keys' locks (see the module)."""
    done = Removal()
    ordered = sorted(entries, key=lambda entry: entry.key)  # key order: removals never deadlock
    wait = min(BUSY_KEY_SECONDS, lock_timeout)
    for start in range(0, len(ordered), REMOVE_BATCH):
        with contextlib.ExitStack() as held:
            locked = []
            for entry in ordered[start : start + REMOVE_BATCH]:
                try:
                    held.enter_context(catalog.key_lock(entry.key, wait))
                except LockTimeout as exc:
                    done.kept[_where(objects, entry.key)] = f"being computed ({exc})"
                    continue
                locked.append(entry)
            keys = [entry.key for entry in locked]
            try:
                gone = set(catalog.drop_entries(keys, object_deleter(objects, done.kept)))
            except PartialRemoval as exc:  # removed, but files of theirs stay (view links)
                gone = set(keys) - keys_with_rows(catalog, keys)
                done.left_files.update({str(path): str(exc) for path in exc.not_deleted})
            except (LockTimeout, StoreError) as exc:  # ServiceUnavailable is a StoreError
                gone = set()
                for key in keys:
                    done.kept.setdefault(_where(objects, key), str(exc))
            done.removed += [entry for entry in locked if entry.key in gone]
    return done


def _where(objects: ObjectStore, key: str) -> str:
    """How an entry's object is named to the user (``CacheResult.path``)."""
    return str(objects.where(result_name(key)))


def drop_whole(
    catalog: Catalog,
    objects: ObjectStore,
    keys: list[str],
    last_accessed: list[datetime | None] | None = None,
    *,
    quarantine: bool = False,
) -> list[str]:
    """``catalog.drop_entries`` of ``keys`` with their objects; return the keys dropped.
    Raises ``StoreError`` naming the objects that could not be deleted (their entries stay)."""
    left: dict[str, str] = {}
    delete = object_deleter(objects, left, quarantine=quarantine)
    dropped = catalog.drop_entries(keys, delete, last_accessed)
    if left:
        raise StoreError("; ".join(f"{where}: {why}" for where, why in left.items()))
    return dropped


def object_deleter(
    objects: ObjectStore, left: dict[str, str], *, quarantine: bool = False
) -> Callable[[list[str]], list[str]]:
    """``delete_objects`` for ``Catalog.drop_entries``: deletes (or quarantines) the keys'
    objects and returns the keys whose objects are gone; why the others stay goes to ``left``
    (``{location: why}``)."""

    def delete(keys: list[str]) -> list[str]:
        names = [result_name(key) for key in keys]
        try:
            objects.delete(names, quarantine=quarantine)
            return keys
        except (OSError, JulesCacheError) as exc:
            gone = []
            for key, name in zip(keys, names, strict=True):
                if objects.head(name) is None:
                    gone.append(key)
                else:
                    left[str(objects.where(name))] = str(exc)
            return gone

    return delete
