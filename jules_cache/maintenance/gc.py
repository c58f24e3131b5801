"""Garbage collection: one SQL plan (``sql/gc.sql``), then guarded, batched deletes.

The plan joins the result files DuckDB lists under the root with the manifest's entries, by key;
the leftovers are found as ``check`` finds them (``maintenance.leftovers``):

    orphan       result file without a row          (file deleted)
    dangling     row without a result file          (row deleted; the next request recomputes)
    expired      last ACCESS older than the retention (row deleted, then file)
    over_budget  least recently used beyond max_size  (row deleted, then file)
    stale_tmp    temp file older than the grace period
    stale_lock   per-key lock file older than the grace period (deleted only if nobody holds it)

Safety, in the order things happen:

- Files are listed (by DuckDB, outside any lock) BEFORE the entries are read (under the shared
  manifest lock). A publication renames its file and inserts its row inside one exclusive hold,
  so a file seen in the listing either has its row committed by the time entries are read, or
  was rolled back. Every candidate is checked again under the lock right before anything is
  deleted, so a key published (or hit) after the plan is spared.
- Rows are deleted and COMMITTED first (exclusive hold); their files, and the links the stored
  SQL views read, are unlinked in the next hold, after checking no row for the key has
  reappeared. That hold takes the shared lock: it keeps publishers out, not readers. A crash in
  between leaves orphans (removed by the next run), never rows pointing at nothing.
- Work is done in batches sized to keep each hold near ``HOLD_TARGET_MS``, with a pause after
  each so waiting publishers get the lock; the longest hold is measured and reported.
- Temp and lock files are removed by ``leftovers.remove``: only if still older than the grace
  period, and a lock file only while GC itself holds it (non-blocking), so a holder is never
  disturbed.
- Nothing here runs on import, in a destructor or at exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jules_cache._durations import parse_duration
from jules_cache.errors import GCError, InvalidInput, JulesCacheError, LockTimeout, ManifestError
from jules_cache.maintenance import leftovers
from jules_cache.maintenance.leftovers import DEFAULT_GRACE_SECONDS
from jules_cache.maintenance.removal import discard_files, drop_rows
from jules_cache.models import GCItem, GCReport, ReasonTotal
from jules_cache.options import parse_size
from jules_cache.query.views import LinkOwner
from jules_cache.storage import sqlfiles
from jules_cache.storage.layout import KEY_PATTERN, RESULT_SUFFIX, Layout
from jules_cache.storage.manifest import Manifest, utc_now

if TYPE_CHECKING:  # imported where GC plans: ``import jules_cache`` (and a hit) loads no DuckDB
    import duckdb

REASONS = ("orphan", "dangling", "expired", "over_budget", "stale_tmp", "stale_lock")
ROW_REASONS = frozenset({"dangling", "expired", "over_budget"})
RETENTION_ENV = "FEATURE_STORE_GC_RETENTION_WEEKS"
DEFAULT_RETENTION_WEEKS = 4.0
HOLD_TARGET_MS = 60.0
_BATCH_START, _BATCH_MIN, _BATCH_MAX = 200, 20, 5000
# Between two holds: more than two lock polls (locks._MAX_POLL), so a waiting publish gets in
# instead of GC re-taking the lock at once (measured: trainers waited up to 7 s without it).
_YIELD_SECONDS = 0.025
_GLOB_CHARS = frozenset("*?[]{}")
_MAX_ERRORS = 20

Progress = Callable[[int, int], None]  # (items done, items in total)


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GCOptions:
    """Validated GC settings."""

    retention_weeks: float
    max_size: int | None
    grace_seconds: float
    dry_run: bool
    limit: int | None

    @classmethod
    def build(
        cls,
        retention_weeks: float | None = None,
        max_size: int | str | None = None,
        grace: float | str | timedelta | None = None,
        dry_run: bool = False,
        limit: int | None = None,
    ) -> GCOptions:
        if retention_weeks is None:
            text = os.environ.get(RETENTION_ENV, "").strip()
            retention_weeks = _env_weeks(text) if text else DEFAULT_RETENTION_WEEKS
        if not isinstance(retention_weeks, int | float) or not retention_weeks >= 0:
            raise InvalidInput(f"retention_weeks must be a number >= 0, not {retention_weeks!r}")
        size = parse_size(max_size) if max_size is not None else None
        grace_seconds = parse_duration(grace) if grace is not None else DEFAULT_GRACE_SECONDS
        if limit is not None and limit < 1:
            raise InvalidInput(f"limit must be >= 1 deletion, not {limit}")
        return cls(float(retention_weeks), size, grace_seconds, bool(dry_run), limit)

    def to_json(self) -> str:
        return json.dumps(
            {
                "retention_weeks": self.retention_weeks,
                "max_size": self.max_size,
                "grace_seconds": self.grace_seconds,
                "dry_run": self.dry_run,
                "limit": self.limit,
            }
        )


def _env_weeks(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidInput(
            f"{RETENTION_ENV}={text!r} is not a number of weeks; set it to e.g. 4"
        ) from None


# -- the run -------------------------------------------------------------------------------------


def _check_root(layout: Layout) -> None:
    if _GLOB_CHARS & set(str(layout.root)):
        raise InvalidInput(
            f"cache root {layout.root} contains a glob character ({''.join(sorted(_GLOB_CHARS))})"
            "; GC lists files with a glob, so move the cache to a path without them"
        )
    layout.require_real_areas(shards=True)  # the glob would follow a link planted as objects/<xx>


class GCRun:
    """One GC run's state and story, whatever the backend: record the start, plan, delete
    (unless a dry run), report, record the end. Subclasses say how each step is done."""

    def __init__(self, root: str, options: GCOptions, progress: Progress | None):
        self.root = root
        self.options = options
        self.progress = progress
        self.started_at = utc_now()
        self.started = time.perf_counter()
        self.plan_seconds = 0.0
        self.holds: list[float] = []
        self.deleted: list[GCItem] = []
        self.skipped = 0
        self.errors: list[str] = []
        self.run_id: int | None = None
        self.done = 0
        self.total = 0
        self._leftovers: dict[GCItem, leftovers.Leftover] = {}  # planned temp and lock files

    def _start(self) -> int:
        """Record the run in ``gc_runs``; return its id."""
        raise NotImplementedError

    def _plan(self) -> list[GCItem]:
        raise NotImplementedError

    def _delete(self, planned: list[GCItem]) -> None:
        raise NotImplementedError

    def _plan_leftovers(self, layout: Layout) -> list[GCItem]:
        """The stale temp and lock files of a root's folders (``leftovers.find``), planned."""
        for leftover in leftovers.find(layout, self.options.grace_seconds).stale:
            reason = "stale_tmp" if leftover.kind == leftovers.TEMP else "stale_lock"
            path = leftover.path.relative_to(layout.root).as_posix()
            self._leftovers[GCItem(reason, path, leftover.bytes, leftover.key)] = leftover
        return sorted(self._leftovers, key=lambda item: (item.reason, item.path))

    def _delete_stale(self, layout: Layout, item: GCItem) -> None:
        """Remove a planned temp or lock file if it is still stale (``leftovers.remove``)."""
        leftover = self._leftovers[item]
        try:
            outcome = leftovers.remove(layout, leftover, self.options.grace_seconds)
        except (OSError, JulesCacheError) as exc:  # e.g. a link planted at the lock's name
            if len(self.errors) < _MAX_ERRORS:
                detail = getattr(exc, "strerror", None) or exc
                self.errors.append(f"cannot delete {leftover.path}: {detail}")
            return
        if outcome == leftovers.REMOVED:
            self.deleted.append(item)
        else:
            self.skipped += 1  # touched or taken since the plan, or already gone

    def _record(self, params: dict[str, Any]) -> None:
        """Write the run's outcome (``gc.sql``'s ``finish_run`` parameters)."""
        raise NotImplementedError

    def execute(self) -> GCReport:
        self.run_id = self._start()
        try:
            planned = self._plan()
            if self.options.limit is not None:
                planned = planned[: self.options.limit]
            self.total = len(planned)
            if self.options.dry_run:
                self.deleted = planned
            else:
                self._delete(planned)
        except BaseException as exc:
            self.errors.insert(0, _describe(exc))
            report = self._report("failed")
            with contextlib.suppress(Exception):  # the catalog may be what failed
                self._finish(report)
            if isinstance(exc, Exception) and not isinstance(exc, LockTimeout):
                raise GCError(self._failure_message(report), report) from exc
            raise
        report = self._report("failed" if self.errors else "success")
        self._finish(report)  # raises if recording fails: never "success" with an error inside
        if not report.ok:
            raise GCError(self._failure_message(report), report)
        return report

    def _advance(self, count: int) -> None:
        self.done += count
        if self.progress is not None and count:
            self.progress(self.done, self.total)

    def _report(self, status: str) -> GCReport:
        totals = []
        for reason in REASONS:
            chosen = [item for item in self.deleted if item.reason == reason]
            totals.append(ReasonTotal(reason, len(chosen), sum(item.bytes for item in chosen)))
        return GCReport(
            run_id=self.run_id,
            root=self.root,
            dry_run=self.options.dry_run,
            status=status,
            started_at=self.started_at,
            finished_at=utc_now(),
            duration_seconds=time.perf_counter() - self.started,
            plan_seconds=self.plan_seconds,
            retention_weeks=self.options.retention_weeks,
            max_size=self.options.max_size,
            grace_seconds=self.options.grace_seconds,
            totals=tuple(totals),
            skipped=self.skipped,
            lock_holds=len(self.holds),
            max_lock_hold_ms=max(self.holds, default=0.0),
            errors=tuple(self.errors),
            items=tuple(self.deleted),
        )

    def _finish(self, report: GCReport) -> None:
        params: dict[str, Any] = {
            "id": self.run_id,
            "finished_at": report.finished_at,
            "status": report.status,
            "error": "; ".join(report.errors) or None,
            "skipped": report.skipped,
            "max_lock_hold_ms": report.max_lock_hold_ms,
        }
        for total in report.totals:
            params[_RUN_COLUMNS[total.reason]] = total.count
            params[f"{total.reason}_bytes"] = total.bytes
        self._record(params)

    def _failure_message(self, report: GCReport) -> str:
        first = report.errors[0] if report.errors else "unknown error"
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        return (
            f"GC of {report.root} failed: {first}{more}. Fix the cause and run it again; "
            "whatever was not deleted is picked up by the next run"
        )


# gc_runs' count column of each reason (its bytes column is ``<reason>_bytes``).
_RUN_COLUMNS = {
    "orphan": "orphan_files",
    "dangling": "dangling_rows",
    "expired": "expired_entries",
    "over_budget": "over_budget_entries",
    "stale_tmp": "stale_tmp_files",
    "stale_lock": "stale_lock_files",
}


class LocalRun(GCRun):
    """A local root's run: files under the root, rows in the manifest, its locks."""

    def __init__(
        self, manifest: Manifest, layout: Layout, options: GCOptions, progress: Progress | None
    ):
        _check_root(layout)
        super().__init__(str(layout.root), options, progress)
        self.manifest = manifest
        self.layout = layout
        # key -> (feature, symbol) of the rows deleted so far: where their view links are
        self._owners: dict[str, LinkOwner] = {}

    def _start(self) -> int:
        with self._hold() as con:
            started = self.manifest.execute(
                con,
                "gc.sql",
                "start_run",
                {
                    "started_at": self.started_at,
                    "dry_run": self.options.dry_run,
                    "parameters": self.options.to_json(),
                },
            ).fetchone()
        assert started is not None  # INSERT ... RETURNING id: one row
        return int(started[0])

    def _record(self, params: dict[str, Any]) -> None:
        with self.manifest.write() as con:
            self.manifest.execute(con, "gc.sql", "finish_run", params)

    @contextlib.contextmanager
    def _hold(self, *, shared: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A manifest transaction (or, ``shared``, a read-only attach under the shared lock,
        which also keeps publishers out) whose length, attach to detach, is recorded."""
        with self.manifest.read() if shared else self.manifest.write() as con:
            entered = time.perf_counter()
            yield con
        self.holds.append((time.perf_counter() - entered) * 1000)

    # -- planning ----------------------------------------------------------------------------

    def _plan(self) -> list[GCItem]:
        """Run the plan on this run's own DuckDB, outside the manifest lock.

        Files are listed first, then the entries are copied under a short shared hold; see
        the module docstring for why that order is safe.
        """
        started = time.perf_counter()
        now = utc_now()
        params = {
            "expire_before": now - timedelta(weeks=self.options.retention_weeks),
            "max_bytes": self.options.max_size,
            "now": now,  # entries written with expire= are expired from their expires_at
        }
        import duckdb

        # No DuckDB progress bar: it would write into `--json` output on stdout.
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET enable_progress_bar = false")
            _list_files_into(con, self.layout)
            with self.manifest.read() as manifest_con:
                snapshot = manifest_con.sql(
                    sqlfiles.statement("gc.sql", "entries_snapshot")
                ).to_arrow_table()
            con.register("entries_snapshot", snapshot)
            con.execute("CREATE TEMP TABLE entries AS SELECT * FROM entries_snapshot")
            con.unregister("entries_snapshot")
            rows = con.execute(sqlfiles.statement("gc.sql", "plan"), params).fetchall()
        except duckdb.Error as exc:
            raise ManifestError(f"GC plan for {self.layout.root} failed: {exc}") from exc
        finally:
            con.close()
        rows = [row for row in rows if row[0] != "orphan" or not self._in_flight(row[1])]
        stale = self._plan_leftovers(self.layout)
        self.plan_seconds = time.perf_counter() - started
        self._last_access = {row[1]: row[3] for row in rows if row[0] in ROW_REASONS}
        return [self._item(reason, key, size) for reason, key, size, _ in rows] + stale

    def _in_flight(self, key: str) -> bool:
        """An orphan younger than the grace (at most ``ORPHAN_GRACE_SECONDS``) may be a
        publish whose row another process has not written yet: it stays."""
        grace = min(self.options.grace_seconds, leftovers.ORPHAN_GRACE_SECONDS)
        try:
            written = self.layout.result_path(key).stat(follow_symlinks=False).st_mtime
        except OSError:
            return False
        return time.time() - written < grace

    def _item(self, reason: str, key: str, size: int | None) -> GCItem:
        if size is None:  # an orphan: the listing has names only
            with contextlib.suppress(OSError):
                size = self.layout.result_path(key).stat().st_size
        return GCItem(reason, self.layout.relative_result_path(key), int(size or 0), key)

    # -- deleting ----------------------------------------------------------------------------

    def _delete(self, planned: list[GCItem]) -> None:
        rows = [item for item in planned if item.reason in ROW_REASONS]
        orphans = [item for item in planned if item.reason == "orphan"]
        stale = [item for item in planned if item.reason in ("stale_tmp", "stale_lock")]
        batch = _BATCH_START
        while rows or orphans:
            holds = len(self.holds)
            if rows:
                items, rows = rows[:batch], rows[batch:]
                with self._hold() as con:  # rows are deleted and committed first...
                    doomed = self._delete_rows(con, items)
                time.sleep(_YIELD_SECONDS)  # flock is no fair queue: let waiting publishers in
            else:
                items, orphans = orphans[:batch], orphans[batch:]
                doomed = items
            if doomed:
                with self._hold(shared=True) as con:  # ...then their files
                    self._unlink_results(con, doomed)
                time.sleep(_YIELD_SECONDS)
            batch = _next_batch(batch, max(self.holds[holds:], default=0.0))
            self._advance(len(items))
        for item in stale:
            self._delete_stale(self.layout, item)
            self._advance(1)

    def _delete_rows(self, con: duckdb.DuckDBPyConnection, items: list[GCItem]) -> list[GCItem]:
        """Delete the rows still as planned; return those whose files must go next."""
        if not items:
            return []
        candidates = []
        for item in items:
            if item.reason == "dangling" and self._result_path(item).exists():
                self.skipped += 1  # published since the plan
            else:
                candidates.append(item)
        if not candidates:
            return []
        keys = [_key(item) for item in candidates]
        deleted = drop_rows(self.manifest, con, keys, [self._last_access[k] for k in keys])
        self.skipped += len(candidates) - len(deleted)
        self._owners.update(deleted)
        survivors = []
        for item in candidates:
            if item.key in deleted:
                if item.reason == "dangling":
                    self.deleted.append(item)
                survivors.append(item)  # a dangling row's file is gone; its link goes next
        return survivors

    def _unlink_results(self, con: duckdb.DuckDBPyConnection, items: Sequence[GCItem]) -> None:
        """Unlink result files (and links) whose key has no row now (checked under the lock),
        unless an orphan's file was written since the plan (a publish whose row is on its way)."""
        young = [i for i in items if i.reason == "orphan" and self._in_flight(_key(i))]
        self.skipped += len(young)
        items = [item for item in items if item not in young]
        if not items:
            return
        doomed = {_key(item): self._owners.get(_key(item)) for item in items}
        outcome = discard_files(self.manifest, con, doomed)
        gone, missing = set(outcome.removed), set(outcome.missing)
        files = [item for item in items if item.reason != "dangling"]  # rows only: counted
        self.skipped += len(outcome.live) + sum(item.key in missing for item in files)
        self.deleted += [item for item in files if item.key in gone]
        self.errors += outcome.errors[: max(0, _MAX_ERRORS - len(self.errors))]

    def _result_path(self, item: GCItem) -> Path:
        return self.layout.result_path(_key(item))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return str(exc) or type(exc).__name__


def _key(item: GCItem) -> str:
    """The key of a result item (temp and lock items have none)."""
    assert item.key is not None and KEY_PATTERN.fullmatch(item.key)
    return item.key


def _next_batch(batch: int, hold_ms: float) -> int:
    """Scale the batch so the next exclusive hold lands near HOLD_TARGET_MS."""
    scale = HOLD_TARGET_MS / max(hold_ms, 1.0)
    scale = min(max(scale, 0.5), 2.0)
    return int(min(max(batch * scale, _BATCH_MIN), _BATCH_MAX))


def _list_files_into(con: duckdb.DuckDBPyConnection, layout: Layout) -> None:
    """List the result files into the temp table ``gc_files`` of ``con``, via DuckDB."""
    glob = {"objects_glob": str(layout.objects / "*" / f"*{RESULT_SUFFIX}")}
    listing = sqlfiles.statement("gc.sql", "list_files").rstrip().rstrip(";")
    con.execute(f"CREATE TEMP TABLE gc_files AS {listing}", glob)


__all__ = [
    "GCError",
    "GCItem",
    "GCOptions",
    "GCReport",
    "GCRun",
    "LocalRun",
    "ReasonTotal",
    "parse_duration",
    "parse_size",
]
