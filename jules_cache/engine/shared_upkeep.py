"""GC and check for a shared cache (S3 objects + PostgreSQL catalog); removal is
``engine.removal``, for every root.

The same plan as a local root: objects listed and catalog rows read, matched by key in DuckDB
with ``sql/gc.sql``'s ``plan``. The rows are read while the objects are listed, and the rows of
the orphans the plan finds are read again once the listing is done, so an object published
between the two is never taken for an orphan. What differs is the guard: each candidate is
re-checked holding its key's PostgreSQL advisory lock (the lock a publish holds from compute
to COMMIT), an entry's object is deleted inside the transaction that deletes its row (so a
failed delete leaves the entry whole, never a row-less object that hits keep serving), and an
object without a row is an orphan only once it is older than the grace period (a publish PUTs
before it commits: give it at least the lock timeout plus the longest compute; the default is
6 hours, as for local temp files).
"""

from __future__ import annotations

import io
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jules_cache.engine.removal import drop_whole
from jules_cache.errors import LockTimeout
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
from jules_cache.maintenance.gc import GCItem, GCOptions, GCRun
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
        spared = self._published_meanwhile(
            listed, [key for reason, key, _, _ in planned if reason == "orphan"]
        )
        chosen = []
        for reason, key, size, last_access in planned:
            if reason == "orphan" and key in spared:
                continue
            self._last_access[key] = last_access
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
        stale_before = utc_now() - timedelta(seconds=self.options.grace_seconds)
        young = {key for key in orphans if modified[key] >= stale_before}
        old = [key for key in orphans if key not in young]
        return young | (keys_with_rows(self.backend.catalog, old) if old else set())

    def _delete(self, planned: list[GCItem]) -> None:
        layout = temp_layout(self.backend)
        for item in planned:
            if layout is not None and item in self._leftovers:
                self._delete_stale(layout, item)
            else:
                self._delete_one(item)
            self._advance(1)
        self.backend.catalog.tidy(DELETION_NOTES_KEPT_SECONDS)

    def _delete_one(self, item: GCItem) -> None:
        """Re-check the candidate holding its key's lock; an entry's object is deleted inside
        the transaction deleting its row (``drop_entries``)."""
        catalog, objects, key = self.backend.catalog, self.backend.objects, item.key
        assert key is not None
        held = time.perf_counter()
        try:
            with catalog.key_lock(key, _CANDIDATE_LOCK_SECONDS):
                if item.reason == "orphan":
                    done = not keys_with_rows(catalog, [key])
                elif item.reason == "dangling":
                    done = objects.head(object_name(key)) is None and bool(
                        catalog.delete_entries([key])
                    )
                else:  # expired or over budget: spared if it was accessed since the plan
                    last_access = [self._last_access[key]]
                    done = bool(drop_whole(catalog, objects, [key], last_access))
                if done and item.reason == "orphan":
                    objects.delete([object_name(key)])
        except LockTimeout:
            done = False  # being computed right now
        except Exception as exc:
            self.errors.append(f"{item.reason} {key}: {exc}")
            return
        finally:
            self.holds.append((time.perf_counter() - held) * 1000)
        if done:
            self.deleted.append(item)
        else:
            self.skipped += 1


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
            if problem.kind == MISSING_FILE:
                backend.catalog.delete_entries([key])
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
