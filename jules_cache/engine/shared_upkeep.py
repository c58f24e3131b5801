"""GC for every root, and check for a shared one, over a ``Catalog`` and an ``ObjectStore``.

GC (``CatalogRun``) lists the objects and reads the catalog's rows meanwhile, matches them by
key in DuckDB with ``sql/gc.sql``'s ``plan``, and reads the rows of the orphans it found again
once the listing is done, so an object published between the two is never taken for an orphan.
Then it deletes in batches sized to keep each catalog transaction near ``HOLD_TARGET_MS``:

- each candidate is re-checked holding its key's lock (the lock a publish holds from compute to
  commit; a key busy for longer than a second is being computed, and skipped);
- an entry's object is deleted inside the transaction that deletes its row, before the row
  (``Catalog.drop_entries``): a failed delete leaves the entry whole, never a row-less object
  that hits keep serving; an entry accessed since the plan is spared;
- an object without a row goes in a transaction that sees no row of its key
  (``Catalog.drop_orphans``), once it is older than the grace period: a shared publish PUTs
  before it commits (give the grace at least the lock timeout plus the longest compute; the
  default is 6 hours, as for temp files); a local one writes its row within about a second,
  so there it is the smaller of the grace and ``leftovers.ORPHAN_GRACE_SECONDS``.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jules_cache.engine.removal import absent, drop_whole, object_deleter
from jules_cache.errors import LockTimeout, PartialRemoval
from jules_cache.maintenance.check import (
    CHECKSUM_FAILURE,
    MISSING_FILE,
    ORPHAN_FILE,
    SIZE_MISMATCH,
    UNREADABLE_FOOTER,
    CheckReport,
    Problem,
    leftover_problems,
)
from jules_cache.maintenance.gc import (
    BATCH_START,
    YIELD_SECONDS,
    GCItem,
    GCOptions,
    GCRun,
    next_batch,
)
from jules_cache.storage import sqlfiles
from jules_cache.storage.catalog import entries_snapshot, keys_with_rows
from jules_cache.storage.directory_objects import DirectoryObjects
from jules_cache.storage.layout import OBJECTS_DIR, RESULT_SUFFIX, Layout
from jules_cache.storage.layout import result_name as object_name
from jules_cache.storage.manifest import utc_now

if TYPE_CHECKING:
    import polars as pl

    from jules_cache.engine.backend import Progress, SharedRoot

_RESULT_FOLDERS = tuple(f"{OBJECTS_DIR}/{i:02x}/" for i in range(256))  # key[:2] is hex
_CANDIDATE_LOCK_SECONDS = 1.0  # a key busy longer than this is being computed: skipped
# Deletion notes store.sql copies need (postgres_catalog.changes_since) outlive the copies taken
# within this long; an older copy is read whole. Dropped by every GC that deletes.
DELETION_NOTES_KEPT_SECONDS = 3600.0


@dataclass(frozen=True)
class Listed:
    name: str  # under the prefix, e.g. objects/ab/<key>.parquet
    size: int
    modified: datetime  # aware, UTC


def list_results(backend: SharedRoot) -> pl.DataFrame:
    """Every result object: ``key``, ``name``, ``size``, ``last_modified`` (naive UTC);
    names not of the cache's scheme (``objects/<k[:2]>/<k>.parquet``, nothing deeper) are
    left out.

    Only the 256 ``objects/xx/`` folders a key can name are listed, in parallel, and kept as
    columns: a Python object per listed object cost as much as the listing itself.
    """
    import polars as pl

    start = len(OBJECTS_DIR) + 4  # after "objects/ab/"
    key = pl.col("name").str.slice(start, 32)
    expected = pl.concat_str(
        pl.lit(f"{OBJECTS_DIR}/"), key.str.slice(0, 2), pl.lit("/"), key, pl.lit(RESULT_SUFFIX)
    )
    listed = backend.objects.list_frame(_RESULT_FOLDERS)
    return listed.select(key.alias("key"), pl.all()).filter(
        (pl.col("name") == expected) & pl.col("key").str.contains("^[0-9a-f]{32}$")
    )


def results_by_key(listed: pl.DataFrame) -> dict[str, Listed]:
    """``list_results`` as ``{key: Listed}``."""
    columns = listed.select("key", "name", "size", "last_modified").iter_rows()
    return {
        key: Listed(name, size, modified.replace(tzinfo=UTC))
        for key, name, size, modified in columns
    }


# -- GC ---------------------------------------------------------------------------------------


class CatalogRun(GCRun):
    """The run of a cache whose rows are a ``Catalog`` over an ``ObjectStore``: objects listed,
    rows read, each candidate re-checked under its key lock."""

    def __init__(self, backend: SharedRoot, options: GCOptions, progress: Progress | None):
        super().__init__(backend.location, options, progress)
        self.backend = backend
        # An object without a row younger than this may be a publish whose row is on its way.
        self._orphan_grace = min(options.grace_seconds, backend.orphan_grace_seconds)
        self._last_access: dict[str, datetime | None] = {}

    def _start(self) -> int:
        params = {
            "started_at": self.started_at,
            "dry_run": self.options.dry_run,
            "parameters": self.options.to_json(),
        }
        return int(self.backend.catalog.write("gc.sql", "start_run", params)[0][0])

    def _record(self, params: dict[str, Any]) -> None:
        self.backend.catalog.write("gc.sql", "finish_run", params)

    def _plan(self) -> list[GCItem]:
        """List the objects and, meanwhile, read the rows; plan in DuckDB; re-read the rows of
        the orphans the plan found (see ``_published_meanwhile``)."""
        from concurrent.futures import ThreadPoolExecutor

        started = time.perf_counter()
        with ThreadPoolExecutor(1, thread_name_prefix="jules-gc-list") as pool:
            listing = pool.submit(list_results, self.backend)
            # While the listing waits on the server: the rows, and the plan's imports.
            entries = _entries_table(entries_snapshot(self.backend.catalog))
            import duckdb

            listed = listing.result()
        now = utc_now()
        params = {
            "expire_before": now - timedelta(weeks=self.options.retention_weeks),
            "max_bytes": self.options.max_size,
            "now": now,  # entries written with expire= are expired from their expires_at
        }
        files = listed.select(filename="/" + listed["name"])
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET enable_progress_bar = false")
            con.register("gc_files", files)  # scanned in place: a copy cost ~0.15 s at 100k
            con.register("entries", entries)
            planned = con.execute(sqlfiles.statement("gc.sql", "plan"), params).fetchall()
        finally:
            con.close()
        orphans = [key for reason, key, _, _ in planned if reason == "orphan"]
        spared = self._published_meanwhile(listed, orphans)
        sizes = _listed_sizes(listed, orphans)  # the plan has none for a file without a row
        chosen = []
        for reason, key, size, last_access in planned:
            if reason == "orphan" and key in spared:
                continue
            self._last_access[key] = last_access
            size = sizes.get(key, 0) if reason == "orphan" else size
            chosen.append(GCItem(reason, object_name(key), int(size or 0), key))
        layout = temp_layout(self.backend)
        if layout is not None:
            chosen += self._plan_leftovers(layout)
        self.plan_seconds = time.perf_counter() - started
        return chosen

    def _published_meanwhile(self, listed: pl.DataFrame, orphans: list[str]) -> set[str]:
        """The planned orphans that are not orphans (yet): younger than the grace period
        (maybe a publish between its PUT and its COMMIT), or with a row now.

        The rows were read while the objects were listed, so an object published in between
        would look like an orphan; its row is read again here, after the listing: an orphan
        is an object listed with no row read AFTER the listing, as when rows were read only
        once the listing was done.
        """
        import polars as pl

        if not orphans:
            return set()
        found = listed.filter(pl.col("key").is_in(orphans)).select("key", "last_modified")
        modified = dict(found.iter_rows())
        stale_before = utc_now() - timedelta(seconds=self._orphan_grace)
        young = {key for key in orphans if modified[key] >= stale_before}
        old = [key for key in orphans if key not in young]
        return young | (keys_with_rows(self.backend.catalog, old) if old else set())

    def _delete(self, planned: list[GCItem]) -> None:
        """Delete in batches sized to keep each catalog transaction near ``HOLD_TARGET_MS``,
        with a pause after each so waiting publishers get in."""
        layout = temp_layout(self.backend)
        results = [item for item in planned if item not in self._leftovers]
        batch = BATCH_START
        while results:
            items, results = results[:batch], results[batch:]
            holds = len(self.holds)
            self._delete_batch(items)
            time.sleep(YIELD_SECONDS)
            batch = next_batch(batch, max(self.holds[holds:], default=0.0))
            self._advance(len(items))
        for item in self._leftovers:
            if item in planned and layout is not None:
                self._delete_stale(layout, item)
                self._advance(1)
        self.backend.catalog.tidy(DELETION_NOTES_KEPT_SECONDS)

    def _delete_batch(self, items: list[GCItem]) -> None:
        """Re-check each candidate holding its key's lock (a key busy longer than
        ``_CANDIDATE_LOCK_SECONDS`` is being computed: skipped)."""
        with contextlib.ExitStack() as held:
            locked = []
            for item in items:
                assert item.key is not None
                try:
                    held.enter_context(
                        self.backend.catalog.key_lock(item.key, _CANDIDATE_LOCK_SECONDS)
                    )
                except LockTimeout:
                    self.skipped += 1
                    continue
                locked.append(item)
            entries = [item for item in locked if item.reason != "orphan"]
            orphans = [item for item in locked if item.reason == "orphan"]
            for step, chosen in ((self._drop_entries, entries), (self._delete_orphans, orphans)):
                if not chosen:
                    continue
                started = time.perf_counter()
                try:
                    step(chosen)
                except Exception as exc:
                    self.errors.append(f"{chosen[0].reason} and {len(chosen) - 1} more: {exc}")
                finally:
                    self.holds.append((time.perf_counter() - started) * 1000)

    def _drop_entries(self, items: list[GCItem]) -> None:
        """Entries go whole (``Catalog.drop_entries``): an expired or over-budget one is
        spared if it was accessed since the plan; a dangling one if its object is back."""
        catalog, objects = self.backend.catalog, self.backend.objects
        reasons = {item.key: item.reason for item in items}
        left: dict[str, str] = {}
        delete_entries_objects = object_deleter(objects, left)

        def delete(keys: list[str]) -> list[str]:
            dangling = [key for key in keys if reasons[key] == "dangling"]
            rest = [key for key in keys if reasons[key] != "dangling"]
            return absent(objects)(dangling) + delete_entries_objects(rest)

        keys = [item.key for item in items if item.key is not None]
        try:
            dropped = set(catalog.drop_entries(keys, delete, [self._last_access[k] for k in keys]))
        except PartialRemoval as exc:  # the entries went; files of theirs stay (view links)
            dropped = set(keys) - keys_with_rows(catalog, keys)
            self.errors.append(str(exc))
        self.errors += [f"{where}: {why}" for where, why in left.items()]
        for item in items:
            if item.key in dropped:
                self.deleted.append(item)
            elif str(objects.where(item.path)) not in left:
                self.skipped += 1  # accessed since the plan, or its object is back

    def _delete_orphans(self, items: list[GCItem]) -> None:
        """Objects without a row still older than the grace period (a publish replaced none
        since the plan): ``Catalog.drop_orphans``."""
        objects = self.backend.objects
        stale_before = utc_now() - timedelta(seconds=self._orphan_grace)
        left: dict[str, str] = {}
        delete = object_deleter(objects, left)

        def delete_stale(keys: list[str]) -> list[str]:
            found = {key: objects.head(object_name(key)) for key in keys}
            return delete(
                [key for key, info in found.items() if info and info.last_modified < stale_before]
            )

        keys = [item.key for item in items if item.key is not None]
        try:
            gone = set(self.backend.catalog.drop_orphans(keys, delete_stale))
        except PartialRemoval as exc:  # the objects went; view links of theirs stay
            gone = {key for key in keys if objects.head(object_name(key)) is None}
            self.errors.append(str(exc))
        self.errors += [f"{where}: {why}" for where, why in left.items()]
        for item in items:
            if item.key in gone:
                self.deleted.append(item)
            elif str(objects.where(item.path)) not in left:
                self.skipped += 1  # published or written again since the plan


def temp_layout(backend: SharedRoot) -> Layout | None:
    """The folders of a directory's objects, whose ``tmp/`` keeps the temp files of publishes
    killed midway (GC and check remove them as on a local root); None for S3 objects, whose
    temp files are each process's own, outside the cache."""
    objects = backend.objects
    return objects.layout if isinstance(objects, DirectoryObjects) else None


# -- check ------------------------------------------------------------------------------------


def check(backend: SharedRoot, *, fix: bool, deep: bool, grace_seconds: float) -> CheckReport:
    """Rows whose object is missing or of another size, objects without a row (older than
    the grace period), and with ``deep`` objects that fail to read (checksums, key).

    ``fix`` drops rows whose object is gone or wrong and deletes orphan and damaged objects,
    each under its key's lock; the next request recomputes them.
    """
    from jules_cache.storage.result_files import READ_ERRORS, read_result

    listed = results_by_key(list_results(backend))
    rows = backend.catalog.read("gc.sql", "entry_objects")
    young = datetime.now(UTC) - timedelta(seconds=grace_seconds)
    problems: list[Problem] = []
    with_rows = set()
    for key, path, size, _feature in rows:
        with_rows.add(key)
        found = listed.get(key)
        if found is None:
            problems.append(Problem(MISSING_FILE, path, key, "the row's object is missing"))
        elif found.size != size:
            detail = f"object has {found.size} bytes, the row says {size}"
            problems.append(Problem(SIZE_MISMATCH, path, key, detail))
        elif deep:
            try:
                data = backend.objects.get(object_name(key))
                if data is not None:
                    read_result(io.BytesIO(data), key, fresh=False)  # expired is not damaged
            except READ_ERRORS as exc:
                kind = UNREADABLE_FOOTER if "footer" in str(exc).lower() else CHECKSUM_FAILURE
                problems.append(Problem(kind, path, key, f"{type(exc).__name__}: {exc}"[:300]))
    in_flight = 0
    for key, item in listed.items():
        if key in with_rows:
            continue
        if item.modified >= young:
            in_flight += 1  # maybe a publish between PUT and COMMIT
            continue
        problems.append(Problem(ORPHAN_FILE, item.name, key, "object without a row"))
    if fix:
        problems = [_fix(backend, problem) for problem in problems]
    layout = temp_layout(backend)
    if layout is not None:
        stale, writing = leftover_problems(layout, grace_seconds, fix)
        problems += stale
        in_flight += writing
    return CheckReport(
        root=backend.location,
        entries=len(rows),
        files=len(listed),
        in_flight=in_flight,
        quarantined=0,
        deep=deep,
        fixed=fix,
        rebuilt_from=None,
        problems=tuple(problems),
    )


def _fix(backend: SharedRoot, problem: Problem) -> Problem:
    """Holding the key's lock: register a valid orphan object again (as a local root does: the
    work it holds is kept); else drop the row (if any) and the object (the object inside the
    row's transaction, so a failure leaves both)."""
    from dataclasses import replace

    key = problem.key
    assert key is not None
    try:
        with backend.catalog.key_lock(key, _CANDIDATE_LOCK_SECONDS):
            if problem.kind == ORPHAN_FILE and keys_with_rows(backend.catalog, [key]):
                return replace(problem, action="kept: published meanwhile")
            if problem.kind == ORPHAN_FILE and _register(backend, key):
                return replace(problem, action="registered")
            if problem.kind == MISSING_FILE:  # the row only, if the object is still gone
                backend.catalog.drop_entries([key], absent(backend.objects))
            elif problem.kind == ORPHAN_FILE or not drop_whole(
                backend.catalog, backend.objects, [key]
            ):
                backend.objects.delete([object_name(key)])  # no row (left): an orphan
    except LockTimeout:
        return problem  # being computed: left for the next check
    action = "deleted object" if problem.kind == ORPHAN_FILE else "dropped row and object"
    return replace(problem, action=action)


def _register(backend: SharedRoot, key: str) -> bool:
    """Publish the row of ``key``'s object if it is a valid, intact result of that key (its
    footer names the key and every page checksum holds); False if it is not (or vanished)."""
    from jules_cache.maintenance.check import footer_entry, orphan_row
    from jules_cache.storage.result_files import READ_ERRORS, read_result

    name = object_name(key)
    info, data = backend.objects.head(name), backend.objects.get(name)
    if info is None or data is None:
        return False
    with tempfile.TemporaryDirectory(prefix="jules_cache-check-") as folder:
        path = Path(folder) / f"{key}{RESULT_SUFFIX}"
        path.write_bytes(data)
        try:
            read_result(path, key, fresh=False)  # pages verified; an expired one is not damaged
            row = orphan_row(path, footer_entry(path, key), name, info.last_modified)
        except (*READ_ERRORS, KeyError, TypeError, ValueError):
            return False
    backend.catalog.publish(row)
    return True


def _listed_sizes(listed: pl.DataFrame, keys: list[str]) -> dict[str, int]:
    import polars as pl

    found = listed.filter(pl.col("key").is_in(keys)).select("key", "size")
    return dict(found.iter_rows())


def _entries_table(rows: list[tuple[str, int, datetime, datetime | None]]) -> pl.DataFrame:
    """The catalog's (key, bytes, last_accessed_at, expires_at) rows as the plan's ``entries``
    (polars, not ``pyarrow.array``: that would import pandas)."""
    import polars as pl

    return pl.DataFrame(
        rows,
        schema={
            "key": pl.String,
            "bytes": pl.Int64,
            "last_accessed_at": pl.Datetime("us"),
            "expires_at": pl.Datetime("us"),
        },
        orient="row",
    )
