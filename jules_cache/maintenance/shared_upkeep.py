"""GC, check, verify and removal for a shared cache (S3 objects + PostgreSQL catalog).

The same plan as a local root: objects listed, then catalog rows read (in that order, so an
object published between the two is never taken for an orphan), matched by key in DuckDB with
``sql/gc.sql``'s ``plan``. What differs is the guard: each candidate is re-checked holding its
key's PostgreSQL advisory lock (the lock a publish holds from compute to COMMIT), rows are
deleted before objects, and an object without a row is an orphan only once it is older than the
grace period (a publish PUTs before it commits: give it at least the lock timeout plus the
longest compute; the default is 6 hours, as for local temp files).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jules_cache.errors import GCError, LockTimeout
from jules_cache.maintenance.check import (
    CHECKSUM_FAILURE,
    MISSING_FILE,
    ORPHAN_FILE,
    SIZE_MISMATCH,
    UNREADABLE_FOOTER,
    CheckReport,
    Problem,
)
from jules_cache.maintenance.gc import REASONS, GCItem, GCOptions, GCReport, ReasonTotal
from jules_cache.maintenance.verify import VerifyReport, judge_footer_inputs
from jules_cache.storage import sqlfiles
from jules_cache.storage.layout import KEY_PATTERN, OBJECTS_DIR, RESULT_SUFFIX
from jules_cache.storage.manifest import utc_now

if TYPE_CHECKING:
    from jules_cache.storage.shared import SharedBackend

GC_LOCK = "__gc__"  # the advisory lock one GC of a cache holds for its whole run
_CANDIDATE_LOCK_SECONDS = 1.0  # a key busy longer than this is being computed: skipped


@dataclass(frozen=True)
class Listed:
    name: str  # under the prefix, e.g. objects/ab/<key>.parquet
    size: int
    modified: datetime  # aware, UTC


def list_results(backend: SharedBackend) -> dict[str, Listed]:
    """Every result object by key; names not of the cache's scheme are ignored."""
    found: dict[str, Listed] = {}
    for name, size, modified in backend.objects.list(f"{OBJECTS_DIR}/"):
        key = name.rsplit("/", 1)[-1].removesuffix(RESULT_SUFFIX)
        if KEY_PATTERN.match(key) and name == f"{OBJECTS_DIR}/{key[:2]}/{key}{RESULT_SUFFIX}":
            found[key] = Listed(name, int(size), _aware(modified))
    return found


def delete_objects(backend: SharedBackend, keys: Iterable[str]) -> list[str]:
    """Delete the objects of ``keys`` whose rows are gone, each checked holding its key's lock
    (a publish of the key between the row's deletion and now keeps its object). Returns the
    keys whose object was deleted."""
    from jules_cache.storage.shared import object_name

    deleted = []
    for key in keys:
        try:
            with backend.catalog.key_lock(key, _CANDIDATE_LOCK_SECONDS):
                if backend.catalog.keys_with_rows([key]):
                    continue  # published again meanwhile: the object is live
                backend.objects.delete([object_name(key)])
                deleted.append(key)
        except LockTimeout:
            continue  # being computed now: its publish replaces the object; GC retries later
    return deleted


# -- GC ---------------------------------------------------------------------------------------


def collect_garbage(
    backend: SharedBackend, options: GCOptions, *, skip_if_ran_within: float | None = None
) -> GCReport | None:
    """Plan, then (unless a dry run) delete; record the run in ``gc_runs``.

    Raises ``LockTimeout`` if another GC of this cache is running, ``GCError`` if a step failed.
    """
    catalog = backend.catalog
    with catalog.key_lock(GC_LOCK, 0.0):
        if skip_if_ran_within is not None:
            last = catalog.query("gc.sql", "last_run")
            if last and (utc_now() - last[0][1]).total_seconds() < skip_if_ran_within:
                return None
        return _Run(backend, options).execute()


class _Run:
    def __init__(self, backend: SharedBackend, options: GCOptions):
        self.backend = backend
        self.options = options
        self.started = time.perf_counter()
        self.started_at = utc_now()
        self.plan_seconds = 0.0
        self.deleted: list[GCItem] = []
        self.skipped = 0
        self.holds: list[float] = []
        self.errors: list[str] = []

    def execute(self) -> GCReport:
        catalog = self.backend.catalog
        params = {
            "started_at": self.started_at,
            "dry_run": self.options.dry_run,
            "parameters": self.options.to_json(),
        }
        self.run_id = int(catalog.execute("gc.sql", "start_run", params)[0][0])
        try:
            planned = self._plan()
            if self.options.limit is not None:
                planned = planned[: self.options.limit]
            if self.options.dry_run:
                self.deleted = [item for item, _ in planned]
            else:
                for item, last_access in planned:
                    self._delete(item, last_access)
        except BaseException as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            report = self._report("failed")
            with contextlib.suppress(Exception):
                self._finish(report)
            if isinstance(exc, Exception) and not isinstance(exc, LockTimeout):
                raise GCError(_failure(report), report) from exc
            raise
        report = self._report("failed" if self.errors else "success")
        self._finish(report)
        if not report.ok:
            raise GCError(_failure(report), report)
        return report

    def _plan(self) -> list[Any]:
        import duckdb
        import pyarrow as pa

        started = time.perf_counter()
        listed = list_results(self.backend)  # objects first, then rows: see the module
        rows = self.backend.catalog.entries_snapshot()
        stale_before = datetime.now(UTC) - timedelta(seconds=self.options.grace_seconds)
        files = pa.table(
            {
                "filename": [f"/{item.name}" for item in listed.values()],
                "size": pa.array([item.size for item in listed.values()], pa.int64()),
                "last_modified": pa.array(
                    [item.modified for item in listed.values()], pa.timestamp("us", tz="UTC")
                ),
            }
        )
        entries = pa.table(
            {
                "key": [row[0] for row in rows],
                "bytes": pa.array([row[1] for row in rows], pa.int64()),
                "last_accessed_at": pa.array([row[2] for row in rows], pa.timestamp("us")),
            }
        )
        params = {
            "expire_before": utc_now() - timedelta(weeks=self.options.retention_weeks),
            "max_bytes": self.options.max_size,
        }
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET enable_progress_bar = false")
            con.register("gc_files_in", files)
            con.register("entries_in", entries)
            con.execute("CREATE TEMP TABLE gc_files AS SELECT * FROM gc_files_in")
            con.execute("CREATE TEMP TABLE entries AS SELECT * FROM entries_in")
            planned = con.execute(sqlfiles.statement("gc.sql", "plan"), params).fetchall()
        finally:
            con.close()
        self.plan_seconds = time.perf_counter() - started
        chosen = []
        for reason, key, size, last_access in planned:
            if reason == "orphan" and listed[key].modified >= stale_before:
                continue  # maybe a publish between its PUT and its COMMIT: not yet
            path = listed[key].name if key in listed else f"{OBJECTS_DIR}/{key[:2]}/{key}"
            chosen.append((GCItem(reason, path, int(size or 0), key), last_access))
        return chosen

    def _delete(self, item: GCItem, last_access: datetime | None) -> None:
        """Re-check the candidate holding its key's lock; rows before objects."""
        from jules_cache.storage.shared import object_name

        catalog, objects, key = self.backend.catalog, self.backend.objects, item.key
        assert key is not None
        held = time.perf_counter()
        try:
            with catalog.key_lock(key, _CANDIDATE_LOCK_SECONDS):
                if item.reason == "orphan":
                    done = not catalog.keys_with_rows([key])
                elif item.reason == "dangling":
                    done = objects.get(object_name(key)) is None and bool(
                        catalog.delete_entries([key])
                    )
                else:  # expired or over budget: spared if it was accessed since the plan
                    done = bool(catalog.delete_entries([key], [last_access]))
                if done and item.reason != "dangling":
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

    def _report(self, status: str) -> GCReport:
        totals = []
        items = self.deleted
        for reason in REASONS:
            chosen = [item for item in items if item.reason == reason]
            totals.append(ReasonTotal(reason, len(chosen), sum(item.bytes for item in chosen)))
        return GCReport(
            run_id=self.run_id,
            root=self.backend.location,
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
            items=tuple(items),
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
        columns = {
            "orphan": "orphan_files",
            "dangling": "dangling_rows",
            "expired": "expired_entries",
            "over_budget": "over_budget_entries",
            "stale_tmp": "stale_tmp_files",
            "stale_lock": "stale_lock_files",
        }
        for total in report.totals:
            params[columns[total.reason]] = total.count
            params[f"{total.reason}_bytes"] = total.bytes
        self.backend.catalog.execute("gc.sql", "finish_run", params)


def _failure(report: GCReport) -> str:
    first = report.errors[0] if report.errors else "unknown error"
    return (
        f"GC of {report.root} failed: {first}. Fix the cause and run it again; whatever was "
        "not deleted is picked up by the next run"
    )


# -- check ------------------------------------------------------------------------------------


def check(backend: SharedBackend, *, fix: bool, deep: bool, grace_seconds: float) -> CheckReport:
    """Rows whose object is missing or of another size, objects without a row (older than
    the grace period), and with ``deep`` objects that fail to read (checksums, key).

    ``fix`` drops rows whose object is gone or wrong and deletes orphan and damaged objects,
    each under its key's lock; the next request recomputes them.
    """
    from jules_cache.storage.result_files import READ_ERRORS

    listed = list_results(backend)
    rows = backend.catalog.query("gc.sql", "entry_objects")
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
                backend._get(key, lazy=False)
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


def _fix(backend: SharedBackend, problem: Problem) -> Problem:
    """Drop the row (if any), then the object, holding the key's lock."""
    from dataclasses import replace

    from jules_cache.storage.shared import object_name

    key = problem.key
    assert key is not None
    try:
        with backend.catalog.key_lock(key, _CANDIDATE_LOCK_SECONDS):
            if problem.kind == ORPHAN_FILE and backend.catalog.keys_with_rows([key]):
                return replace(problem, action="kept: published meanwhile")
            if problem.kind != ORPHAN_FILE:
                backend.catalog.delete_entries([key])
            if problem.kind != MISSING_FILE:
                backend.objects.delete([object_name(key)])
    except LockTimeout:
        return problem  # being computed: left for the next check
    action = "deleted object" if problem.kind == ORPHAN_FILE else "dropped row and object"
    return replace(problem, action=action)


# -- verify -----------------------------------------------------------------------------------


def verify(backend: SharedBackend) -> VerifyReport:
    """Footer-keyed entries whose input file, as seen from THIS host, changed under an
    identical footer (input paths are recorded as the computing host saw them)."""
    rows = backend.catalog.query("entries.sql", "footer_entry_inputs")
    return judge_footer_inputs(rows)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
