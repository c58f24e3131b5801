"""Compare the manifest with the files on disk, report by kind, and repair on request.

    run_check(layout, manifest)            what is wrong (``jules-cache check``)
    run_check(..., fix=True)               and repair it (``--fix``)
    run_check(..., deep=True)              also re-read every page, checksums verified (``--deep``)
    rebuild(layout, lock_timeout)          rebuild the manifest from the files' own metadata
                                           and swap it in (``--rebuild``); crash-safe
    recover(layout, lock_timeout)          what ``FeatureStore()`` runs first: finish an
                                           interrupted rebuild, rebuild a missing or
                                           never-completed manifest

The comparison runs under the manifest lock (shared; exclusive with ``fix``): a put renames
its file into ``objects/`` and inserts its row in one exclusive transaction, so under the lock
a file without a row, or a row without a file, is a real inconsistency, never a put in flight.
Entries are removed the one way every command removes them (``maintenance.removal``): rows
dropped and files moved aside in the check's transaction, then quarantined or unlinked.
The deep read (``deep``) needs no lock: result files are immutable.
Nothing that is not a regular file is ever moved or deleted: a link or folder planted under
``objects/`` is reported and left alone.

Kinds of problem:

    missing_file       a row whose file is gone (a miss; fix: drop the row)
    orphan_file        a file without a row: a put killed between rename and commit, or a
                       manifest that lost rows (fix: register it from its metadata if valid,
                       else quarantine it)
    size_mismatch      the file's size differs from its row's (fix: quarantine, drop the row)
    unreadable_footer  no valid Parquet footer or entry metadata (fix: quarantine, drop the row)
    checksum_failure   ``deep``: a page fails its CRC or does not decode (fix: quarantine...)
    stale_temp         a temp file older than the grace period: a killed put or manifest
                       creation (fix: delete; see ``leftovers``, which GC uses too)
    stale_lock         a per-key lock file nobody holds, older than the grace period (fix: delete)
    view_link          ``views/`` (the links the stored SQL views read) disagrees with the
                       manifest: a crash between a link and its commit (fix: relink)
    orphan_row         a row of another per-key table (``entry_inputs``) whose entry is gone
                       (fix: delete it)

``stale_temp`` and ``stale_lock`` are leftovers: harmless, removable, and they do not make the
cache inconsistent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jules_cache.errors import InvalidInput, JulesCacheError
from jules_cache.fingerprints.keys import KEY_SCHEMA, KeyParts
from jules_cache.maintenance import leftovers
from jules_cache.maintenance.leftovers import DEFAULT_GRACE_SECONDS
from jules_cache.maintenance.removal import discard_files, drop_rows
from jules_cache.models import _ToDict
from jules_cache.query.views import (
    FileRow,
    LinkOwner,
    link_problems,
    refresh_views,
    view_published,
)
from jules_cache.storage import rootfs, sqlfiles
from jules_cache.storage.crash_points import crash_point
from jules_cache.storage.directory_objects import quarantine_file
from jules_cache.storage.layout import Layout
from jules_cache.storage.locks import file_lock
from jules_cache.storage.manifest import MIN_DATABASE_BYTES, Manifest, utc_now
from jules_cache.storage.result_files import (
    METADATA_KEY,
    READ_ERRORS,
    describe_result,
    entry_row,
    fsync_dir,
    read_every_page,
)

Progress = Callable[[int, int], None]  # (done, total)

MISSING_FILE = "missing_file"
ORPHAN_FILE = "orphan_file"
SIZE_MISMATCH = "size_mismatch"
UNREADABLE_FOOTER = "unreadable_footer"
CHECKSUM_FAILURE = "checksum_failure"
STALE_TEMP = "stale_temp"
STALE_LOCK = "stale_lock"
VIEW_LINK = "view_link"
ORPHAN_ROW = "orphan_row"
KINDS = (
    MISSING_FILE,
    ORPHAN_FILE,
    SIZE_MISMATCH,
    UNREADABLE_FOOTER,
    CHECKSUM_FAILURE,
    STALE_TEMP,
    STALE_LOCK,
    VIEW_LINK,
    ORPHAN_ROW,
)
LEFTOVER_KINDS = frozenset({STALE_TEMP, STALE_LOCK})

_RESULT_NAME = re.compile(r"([0-9a-f]{32})\.parquet")  # fullmatch only


@dataclass(frozen=True)
class Problem(_ToDict):
    """One thing ``check`` found; ``action`` is what ``fix`` did about it (None: nothing)."""

    kind: str
    path: str  # relative to the root
    key: str | None
    detail: str
    action: str | None = None


@dataclass(frozen=True)
class CheckReport(_ToDict):
    """What ``check`` compared, what it found (by kind) and what it repaired."""

    root: str
    entries: int  # manifest rows compared
    files: int  # result files found under objects/
    in_flight: int  # temp files younger than the grace period (puts in progress)
    quarantined: int  # files in <root>/quarantine/ (kept for inspection; safe to delete)
    deep: bool
    fixed: bool
    rebuilt_from: str | None  # where --rebuild moved the old manifest (None: no rebuild)
    problems: tuple[Problem, ...]
    kept_counters: bool = False  # a rebuild kept the old manifest's counters and view names

    @property
    def counts(self) -> dict[str, int]:
        """Problems per kind (every kind listed, zeros included)."""
        counts = dict.fromkeys(KINDS, 0)
        for problem in self.problems:
            counts[problem.kind] += 1
        return counts

    @property
    def consistent(self) -> bool:
        """True when manifest and files agree (leftovers aside), now that fixes are applied."""
        return all(p.kind in LEFTOVER_KINDS or p.action is not None for p in self.problems)

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"consistent": self.consistent, "counts": self.counts}


def run_check(
    layout: Layout,
    manifest: Manifest,
    *,
    fix: bool = False,
    deep: bool = False,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    rebuilt_from: str | None = None,
    progress: Progress | None = None,
) -> CheckReport:
    """Compare manifest and files; with ``fix`` repair what is found (see the module doc).

    ``progress(done, total)`` is called as orphan files are registered (a rebuild) and as
    ``deep`` reads files: the two steps that can take long.
    """
    if grace_seconds < 0:
        raise InvalidInput(f"grace_seconds must be >= 0, not {grace_seconds}")
    layout.require_real_areas(shards=True)
    problems: list[Problem] = []
    dropped: dict[str, LinkOwner] = {}  # rows of missing files: their links go after commit
    damaged: dict[str, LinkOwner] = {}  # rows of damaged files: quarantined after commit
    with manifest.write() if fix else manifest.read() as con:
        rows = manifest.execute(con, "check.sql", "entry_files").fetchall()
        files = _result_files(layout)
        file_count = len(files)
        for key, relative, size, *owner in rows:
            path = layout.root / relative
            if path not in files:
                problem = Problem(MISSING_FILE, relative, key, "the row's file does not exist")
                if fix:
                    dropped[key] = LinkOwner(*owner)
                    problem = _done(problem, "dropped row")
                problems.append(problem)
                continue
            del files[path]
            found = _inspect(layout, path, key, size)
            if found is not None:
                if fix and found.kind == MISSING_FILE:
                    dropped[key] = LinkOwner(*owner)
                    found = _done(found, "dropped row")
                elif fix:
                    damaged[key] = LinkOwner(*owner)
                    found = _done(found, "quarantined, row dropped")
                problems.append(found)
        for done, (path, key) in enumerate(files.items(), start=1):
            problems.append(_orphan(layout, manifest, con, path, key, fix, deep))
            if progress is not None:
                progress(done, len(files))
        problems += _orphan_rows(manifest, con, fix)
        if fix:
            drop_rows(manifest, con, [*dropped, *damaged])
    if dropped or damaged:
        with manifest.read() as con:
            discard_files(manifest, con, dropped)
            discard_files(manifest, con, damaged, quarantine=True)
    if deep:
        problems += _deep(layout, manifest, rows, problems, fix, progress)
    leftovers, in_flight = leftover_problems(layout, grace_seconds, fix)
    problems += leftovers
    if any(problem.action is not None and problem.key for problem in problems):
        with manifest.write() as con:  # rows were dropped or registered: relink the views
            refresh_views(con, layout)
    problems += _view_links(layout, manifest, fix)
    quarantine = layout.quarantine
    return CheckReport(
        root=str(layout.root),
        entries=len(rows),
        files=file_count,
        in_flight=in_flight,
        quarantined=sum(1 for _ in quarantine.iterdir()) if quarantine.is_dir() else 0,
        deep=deep,
        fixed=fix,
        rebuilt_from=rebuilt_from,
        problems=tuple(problems),
    )


def _orphan_rows(manifest: Manifest, con: Any, fix: bool) -> list[Problem]:
    """Rows of per-key tables whose entry is gone (deleted with it since ``removal``)."""
    found = manifest.execute(con, "removal.sql", "orphan_rows").fetchall()
    if found and fix:
        keys = {"keys": [key for _, key in found]}
        manifest.execute(con, "removal.sql", "delete_entry_inputs", keys)
    return [
        Problem(ORPHAN_ROW, table, key, "no entry has this key", "deleted" if fix else None)
        for table, key in found
    ]


REBUILT_SUFFIX = ".rebuilt"  # manifest.duckdb.rebuilt: a complete rebuild not yet swapped in
_log = logging.getLogger("jules_cache")


def rebuild(
    layout: Layout,
    lock_timeout: float,
    *,
    deep: bool = False,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    progress: Progress | None = None,
) -> CheckReport:
    """Rebuild ``manifest.duckdb`` from the result files' own metadata and swap it in.

    Every valid file is registered again; invalid ones are quarantined. When the old manifest
    is still readable, its counters, view names, GC history and each entry's hits, last access
    and compute time are kept (``kept_counters``): a rebuild of a healthy cache changes
    nothing a user sees. Otherwise hit counts restart at 0, last access is now and compute
    time is unknown (0). Works when the manifest is damaged or deleted; the old one is kept
    as ``manifest.duckdb.broken-<time>-<id>`` (``rebuilt_from``). The root's manifest lock
    is held throughout, and the new manifest is built under a temp name, completed as
    ``manifest.duckdb.rebuilt``, then renamed into place: a process killed at any point
    leaves the old manifest or the new one, and ``recover`` (run by every
    ``FeatureStore()``) finishes a swap that was cut short.
    """
    if grace_seconds < 0:
        raise InvalidInput(f"grace_seconds must be >= 0, not {grace_seconds}")
    with file_lock(layout.manifest_lock, lock_timeout):
        report = _rebuild_locked(layout, lock_timeout, deep, grace_seconds, progress)
    _refresh_catalog(layout, lock_timeout)
    return report


def recover(layout: Layout, lock_timeout: float) -> CheckReport | None:
    """Repair what a crash or a full disk can leave of the manifest, when that is safe.

    - ``manifest.duckdb.rebuilt`` exists: a rebuild completed but was killed before its swap;
      finish it.
    - the manifest is missing while result files exist, or is shorter than any DuckDB file
      (its creation never completed — a 0-byte or 4 KiB file): move it aside and rebuild it
      from the files.

    Decided under the exclusive manifest lock, which every jules_cache process takes before
    creating or opening the manifest, so a manifest being created is never mistaken for a
    broken one. A full-size manifest that fails to open (damaged or merely busy) is never
    touched here. Returns the rebuild's report, or None when nothing was needed.
    """
    ready = _ready_path(layout)
    if not ready.exists() and _looks_complete(layout):
        return None  # the common case: no lock, two stat calls
    with file_lock(layout.manifest_lock, lock_timeout):
        if ready.exists():
            moved = _swap_in(layout, ready)
            _log.warning("finished an interrupted manifest rebuild (old one: %s)", moved)
            report = None
        elif _looks_complete(layout) or (
            not layout.manifest.exists() and not any(layout.objects.glob("*/*.parquet"))
        ):
            return None  # healthy, or a new root (migrate creates its manifest)
        else:
            _log.warning(
                "manifest %s is missing or was never completely written: rebuilding it from "
                "the result files",
                layout.manifest,
            )
            report = _rebuild_locked(layout, lock_timeout, False, DEFAULT_GRACE_SECONDS, None)
    _refresh_catalog(layout, lock_timeout)
    return report


def _looks_complete(layout: Layout) -> bool:
    try:
        return layout.manifest.stat().st_size >= MIN_DATABASE_BYTES
    except FileNotFoundError:
        return False


def _ready_path(layout: Layout) -> Path:
    return layout.manifest.with_name(layout.manifest.name + REBUILT_SUFFIX)


def _rebuild_locked(
    layout: Layout,
    lock_timeout: float,
    deep: bool,
    grace_seconds: float,
    progress: Progress | None,
) -> CheckReport:
    """The rebuild, holding the root's manifest lock (see ``rebuild``)."""
    ready = _ready_path(layout)
    rootfs.unlink(layout.root, ready)  # an earlier rebuild's result: this one starts afresh
    # What killed creations or rebuilds left: none is in flight, they all hold this lock.
    for name, found in rootfs.listdir(layout.root, layout.tmp):
        if name.startswith("manifest.") and ".duckdb.tmp" in name and stat.S_ISREG(found.st_mode):
            rootfs.unlink(layout.root, layout.tmp / name)
    building = Manifest(
        layout, lock_timeout, locked=True, path=Manifest(layout, 0).new_temp_path("manifest")
    )
    try:
        building.migrate(create=True)
        crash_point("rebuild-started")
        kept = _keep_from_old(layout, building, "keep_counters")
        report = run_check(
            layout, building, fix=True, deep=deep, grace_seconds=grace_seconds, progress=progress
        )
        if kept:
            kept = _keep_from_old(layout, building, "keep_entry_stats")
        crash_point("rebuild-registered")
        rootfs.rename(layout.root, building.path, ready)
        fsync_dir(layout.root)
    finally:
        for leftover in (building.path, building.path.with_name(building.path.name + ".wal")):
            rootfs.unlink(layout.root, leftover)
    return dataclasses.replace(report, rebuilt_from=_swap_in(layout, ready), kept_counters=kept)


def _keep_from_old(layout: Layout, building: Manifest, statement: str) -> bool:
    """Copy what the files cannot tell from the old manifest into ``building``, if it opens.

    A damaged or foreign old manifest keeps nothing (the rebuild's purpose); all or nothing,
    in one transaction on ``building``. Returns whether it was copied.
    """
    if not layout.manifest.is_file():
        return False
    import duckdb

    try:
        with building.write(notify=False) as con:
            con.execute("DETACH DATABASE IF EXISTS rebuild_source")  # a failed earlier try's
            con.execute("ATTACH ? AS rebuild_source (READ_ONLY)", [str(layout.manifest)])
            try:
                building.execute(con, "check.sql", statement)
            finally:
                con.execute("DETACH rebuild_source")
    except (duckdb.Error, JulesCacheError) as exc:
        _log.warning(
            "the old manifest %s cannot be read (%s): hit counts, counters and view names "
            "start afresh",
            layout.manifest,
            _reason(exc),
        )
        return False
    return True


def _swap_in(layout: Layout, ready: Path) -> str | None:
    """Move the old manifest (and its WAL) aside, then rename ``ready`` into its place."""
    moved = None
    if layout.manifest.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = layout.root / f"{layout.manifest.name}.broken-{stamp}-{uuid.uuid4().hex[:8]}"
        rootfs.rename(layout.root, layout.manifest, target)
        moved = str(target)
        wal = layout.manifest.with_name(layout.manifest.name + ".wal")
        if wal.exists():  # never let the new manifest replay the old one's log
            rootfs.rename(layout.root, wal, target.with_name(target.name + ".wal"))
        crash_point("rebuild-moved-aside")
    rootfs.rename(layout.root, ready, layout.manifest)
    fsync_dir(layout.root)
    return moved


def _refresh_catalog(layout: Layout, lock_timeout: float) -> None:
    from jules_cache.query.catalog_file import refresh_quietly

    refresh_quietly(Manifest(layout, lock_timeout), 0.0, wait=True)


# -- the pieces ---------------------------------------------------------------------------------


def _view_links(layout: Layout, manifest: Manifest, fix: bool) -> list[Problem]:
    """Links of the stored SQL views (``views/``) that disagree with the manifest."""
    with manifest.write() if fix else manifest.read() as con:
        statement = sqlfiles.statement("catalog.sql", "catalog_files")
        rows = FileRow.from_rows(con.execute(statement, {"features": None}).fetchall())
        found = link_problems(layout, rows)
        if found and fix:
            refresh_views(con, layout)
    return [
        Problem(VIEW_LINK, _relative(layout, path), None, detail, "relinked" if fix else None)
        for path, detail in found
    ]


def _done(problem: Problem, action: str) -> Problem:
    return Problem(problem.kind, problem.path, problem.key, problem.detail, action)


def _relative(layout: Layout, path: Path) -> str:
    return path.relative_to(layout.root).as_posix()


def _result_files(layout: Layout) -> dict[Path, str | None]:
    """Every entry under ``objects/``, with the key its name claims (None: not a result name,
    or not a regular file in a real folder: such things are reported, never touched)."""
    files: dict[Path, str | None] = {}
    for name, found in rootfs.listdir(layout.root, layout.objects):
        folder = layout.objects / name
        if not stat.S_ISDIR(found.st_mode):
            files[folder] = None
            continue
        for child, entry in rootfs.listdir(layout.root, folder):
            match = _RESULT_NAME.fullmatch(child)
            regular = stat.S_ISREG(entry.st_mode)
            key = match.group(1) if match and regular and name == match.group(1)[:2] else None
            files[folder / child] = key
    return files


def _inspect(layout: Layout, path: Path, key: str, size: int) -> Problem | None:
    """The problem with an entry's file (size, footer, metadata), or None if it looks sound."""
    relative = _relative(layout, path)
    try:
        actual = path.stat().st_size
        if actual != size:
            return Problem(
                SIZE_MISMATCH, relative, key, f"{actual} bytes on disk, {size} in the manifest"
            )
        footer_entry(path, key)
    except FileNotFoundError:
        return Problem(MISSING_FILE, relative, key, "the file vanished during the check")
    except READ_ERRORS as exc:
        return Problem(UNREADABLE_FOOTER, relative, key, _reason(exc))
    return None


def footer_entry(path: Path, key: str | None) -> dict[str, Any]:
    """The entry metadata stored in the file's footer; ValueError if absent or not ``key``'s."""
    import pyarrow.parquet as pq  # not on import: a store that only hits never needs it

    metadata = pq.read_metadata(path).metadata or {}
    raw = metadata.get(METADATA_KEY.encode())
    if raw is None:
        raise ValueError(f"no {METADATA_KEY} metadata in the footer")
    entry = json.loads(raw)
    if not isinstance(entry, dict) or entry.get("key") != key:
        found = entry.get("key") if isinstance(entry, dict) else None
        raise ValueError(f"its metadata names key {found!r}, not {key!r}")
    parts = KeyParts(
        entry["feature"],
        entry["symbol"],
        entry["data_fingerprint"],
        entry["config_fingerprint"],
        entry["code_fingerprint"],
    )
    # A key of another key schema cannot be derived again here: name and metadata must agree.
    if entry.get("key_schema") == KEY_SCHEMA and parts.key() != key:
        raise ValueError("its metadata does not hash to its key")
    return entry


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:300]


def _orphan(
    layout: Layout,
    manifest: Manifest,
    con: Any,
    path: Path,
    key: str | None,
    fix: bool,
    deep: bool,
) -> Problem:
    """A file without a row: register it again if it is a valid result, else quarantine it.

    With ``deep`` its pages are verified first (the deep pass covers registered rows only).
    """
    relative = _relative(layout, path)
    if not stat.S_ISREG(os.lstat(path).st_mode):
        what = "a symbolic link" if path.is_symlink() else "not a regular file"
        return Problem(ORPHAN_FILE, relative, key, f"{what}: never followed or touched")
    try:
        if key is None:
            raise ValueError("not a result file name (objects/<k[:2]>/<key>.parquet)")
        entry = footer_entry(path, key)
        if deep:
            read_every_page(path)
        row = _entry_row(layout, path, entry)
    except FileNotFoundError:
        return Problem(ORPHAN_FILE, relative, key, "vanished during the check", "gone")
    except (*READ_ERRORS, KeyError, TypeError) as exc:
        problem = Problem(ORPHAN_FILE, relative, key, f"no row, and unusable: {_reason(exc)}")
        if not fix:
            return problem
        quarantine_file(layout, path)  # no row has its key (or it has none): a file action only
        return _done(problem, "quarantined")
    problem = Problem(ORPHAN_FILE, relative, key, "a valid result file without a manifest row")
    if not fix:
        return problem
    manifest.execute(con, "entries.sql", "insert_entry", row)
    return _done(problem, "registered")


def register_orphans(manifest: Manifest, con: Any, keys: list[str]) -> list[str]:
    """Register again the result files of ``keys`` that exist without a row (hits on files
    whose rm or GC was killed before it unlinked them); return the keys registered.

    Run inside the caller's exclusive transaction. A file that is not a valid result for its
    key is left to ``check`` (the hit that found it verified it, but it may be gone since).
    """
    layout = manifest.layout
    missing = manifest.execute(con, "check.sql", "keys_without_rows", {"keys": keys}).fetchall()
    registered = []
    for (key,) in missing:
        path = layout.result_path(key)
        try:
            row = _entry_row(layout, path, footer_entry(path, key))
            manifest.execute(con, "entries.sql", "insert_entry", row)
            view_published(con, layout, row["feature"], key, row["result_schema"], row["symbol"])
        except (*READ_ERRORS, KeyError, TypeError, JulesCacheError):
            continue
        registered.append(key)
    return registered


def _entry_row(layout: Layout, path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    stat = path.stat()
    created_at = datetime.fromtimestamp(stat.st_mtime, UTC).replace(tzinfo=None)
    return orphan_row(path, entry, layout.relative_result_path(entry["key"]), created_at)


def orphan_row(
    path: Path, entry: dict[str, Any], location: str, created_at: datetime
) -> dict[str, Any]:
    """The catalog row of a result file registered again, from its footer metadata
    (``footer_entry``) and its content, on either root.

    Hit counts are unknown and compute time is recorded as 0; the last access is now, so a
    rebuild never makes GC expire everything at once.
    """
    return entry_row(
        entry,
        location,
        describe_result(path, None),
        compute_seconds=0.0,
        created_at=created_at,
        last_accessed_at=utc_now(),
    )


def _deep(
    layout: Layout,
    manifest: Manifest,
    rows: list[tuple[str, str, int, str, str, str]],
    found: list[Problem],
    fix: bool,
    progress: Progress | None,
) -> list[Problem]:
    """Read every page of every sound entry file (no lock: the files are immutable)."""
    already = {p.key for p in found}
    failed: list[tuple[Problem, Path, int]] = []
    owners = {key: LinkOwner(*owner) for key, _, _, *owner in rows}
    for done, (key, relative, *_) in enumerate(rows, start=1):
        if progress is not None:
            progress(done, len(rows))
        if key in already:
            continue
        path = layout.root / relative
        try:
            inode = path.stat().st_ino
            read_every_page(path)
        except FileNotFoundError:
            continue  # deleted since (GC): nothing to read
        except READ_ERRORS as exc:
            failed.append((Problem(CHECKSUM_FAILURE, relative, key, _reason(exc)), path, inode))
    if not fix or not failed:
        return [problem for problem, _, _ in failed]
    fixed = []
    doomed: dict[str, LinkOwner] = {}
    with manifest.write() as con:
        for problem, path, inode in failed:
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_ino == inode:  # not replaced by a fresh put meanwhile
                    assert problem.key is not None
                    doomed[problem.key] = owners[problem.key]
                    fixed.append(_done(problem, "quarantined, row dropped"))
                    continue
            fixed.append(_done(problem, "already replaced"))
        drop_rows(manifest, con, list(doomed))
    with manifest.read() as con:
        discard_files(manifest, con, doomed, quarantine=True)
    return fixed


def leftover_problems(layout: Layout, grace_seconds: float, fix: bool) -> tuple[list[Problem], int]:
    """Stale temp files, and stale lock files nobody holds (``leftovers``); and the puts in
    flight. With ``fix`` each is removed if it is still stale (a held lock is never reported)."""
    found = leftovers.find(layout, grace_seconds)
    problems: list[Problem] = []
    for leftover in found.stale:
        relative = _relative(layout, leftover.path)
        if leftover.kind == leftovers.TEMP:
            problem = Problem(
                STALE_TEMP, relative, leftover.key, f"{leftover.age_seconds:.0f}s old"
            )
        else:
            problem = Problem(STALE_LOCK, relative, leftover.key, "not held")
        if not fix:
            if leftover.kind == leftovers.LOCK and not leftovers.is_free(leftover.path):
                continue
            problems.append(problem)
            continue
        try:
            outcome = leftovers.remove(layout, leftover, grace_seconds)
        except JulesCacheError:
            outcome = "left alone: not a regular file"
        if leftover.kind == leftovers.LOCK and outcome in (leftovers.IN_USE, leftovers.GONE):
            continue  # held (or taken and removed by someone else) since it was listed
        problems.append(_done(problem, outcome))
    return problems, found.in_flight


__all__ = [
    "DEFAULT_GRACE_SECONDS",  # from maintenance.leftovers, the one grace default
    "KINDS",
    "LEFTOVER_KINDS",
    "CheckReport",
    "Problem",
    "rebuild",
    "recover",
    "register_orphans",
    "run_check",
]
