"""Garbage collection: what a run is asked (``GCOptions``), what it reports (``GCReport``), and
its story (``GCRun``: record the start, plan, delete unless a dry run, record the end). The run
of every root is ``engine.shared_upkeep.CatalogRun``: one SQL plan (``sql/gc.sql``) over the
objects listed and the catalog's rows, then guarded, batched deletes.

    orphan       result file without a row          (file deleted)
    dangling     row without a result file          (row deleted; the next request recomputes)
    expired      last ACCESS older than the retention (file, then row, in one transaction)
    over_budget  least recently used beyond max_size  (file, then row, in one transaction)
    stale_tmp    temp file older than the grace period
    stale_lock   per-key lock file older than the grace period (deleted only if nobody holds it)

Temp and lock files are removed by ``leftovers.remove``: only if still older than the grace
period, and a lock file only while GC itself holds it (non-blocking), so a holder is never
disturbed. Nothing here runs on import, in a destructor or at exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from jules_cache._durations import parse_duration
from jules_cache.errors import GCError, InvalidInput, JulesCacheError, LockTimeout
from jules_cache.maintenance import leftovers
from jules_cache.maintenance.leftovers import DEFAULT_GRACE_SECONDS
from jules_cache.models import GCItem, GCReport, ReasonTotal
from jules_cache.options import parse_size
from jules_cache.storage.layout import Layout
from jules_cache.storage.manifest import utc_now

if TYPE_CHECKING:  # imported where GC plans: ``import jules_cache`` (and a hit) loads no DuckDB
    pass

REASONS = ("orphan", "dangling", "expired", "over_budget", "stale_tmp", "stale_lock")
RETENTION_ENV = "FEATURE_STORE_GC_RETENTION_WEEKS"
DEFAULT_RETENTION_WEEKS = 4.0
HOLD_TARGET_MS = 60.0
BATCH_START, _BATCH_MIN, _BATCH_MAX = 200, 20, 5000
# Between two holds: more than two lock polls (locks._MAX_POLL), so a waiting publish gets in
# instead of GC re-taking the lock at once (measured: trainers waited up to 7 s without it).
YIELD_SECONDS = 0.025
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


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return str(exc) or type(exc).__name__


def next_batch(batch: int, hold_ms: float) -> int:
    """Scale the batch so the next exclusive hold lands near HOLD_TARGET_MS."""
    scale = HOLD_TARGET_MS / max(hold_ms, 1.0)
    scale = min(max(scale, 0.5), 2.0)
    return int(min(max(batch * scale, _BATCH_MIN), _BATCH_MAX))


__all__ = [
    "GCError",
    "GCItem",
    "GCOptions",
    "GCReport",
    "GCRun",
    "ReasonTotal",
    "parse_duration",
    "parse_size",
]
