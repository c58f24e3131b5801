"""The manifest: a DuckDB database file in the root, shared by every process on the machine.

DuckDB lets one process open a database file read-write, or several read-only — never both —
and ``connect()`` costs ~40 ms. So each process keeps ONE in-memory DuckDB instance and, for each
operation, takes our ``flock`` on ``manifest.lock``, ATTACHes the file, works in an explicit
transaction, and DETACHes (which also releases DuckDB's own file lock). Writers take the lock
exclusively; readers share it and attach read-only. Nothing holds the manifest across a compute.

The manifest is PRIVATE: a plain DuckDB session that opens it (even read-only) holds DuckDB's
file lock and stops every writer. SQL clients open ``<root>/catalog.duckdb`` instead
(``jules_cache.query.catalog_file``), a copy that is replaced atomically and never written in place.
When the file cannot be attached, the error says which of three things is wrong (``diagnose``):
busy (another program holds it: ``ManifestBusy`` naming it, after retrying up to the lock
timeout), not writable (permissions, read-only or immutable file) or damaged (only then is a
rebuild suggested). A new manifest is created under a temp name and renamed into place, so no
crash or full disk can leave a partial one at ``manifest.duckdb``.

DuckDB is imported on first use (~65 ms), and a store's manifest that looks sound is migrated
on its first use too (``open``): a cache hit never touches the manifest, so a new process
serving hits loads no DuckDB at all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jules_cache._process import on_fork
from jules_cache.errors import InvalidInput, ManifestBusy, ManifestDamaged, ManifestError
from jules_cache.storage import sqlfiles
from jules_cache.storage.crash_points import crash_point
from jules_cache.storage.layout import Layout
from jules_cache.storage.locks import file_lock

if TYPE_CHECKING:
    import duckdb

ALIAS = "manifest"
_log = logging.getLogger("jules_cache")

_guard = threading.RLock()  # one attach at a time per process: the connection is shared
_connection: duckdb.DuckDBPyConnection | None = None
_connection_pid: int | None = None
# DuckDB's messages for the three ways an ATTACH fails that a user must tell apart.
_BUSY = re.compile(r"Could not set lock on file|Conflicting lock", re.IGNORECASE)
_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")
_DAMAGED = re.compile(
    r"not a valid DuckDB database|corrupt|Serialization Error|checksum|INTERNAL Error",
    re.IGNORECASE,
)
_NOT_WRITABLE = re.compile(
    r"Permission denied|Read-only file system|Operation not permitted", re.IGNORECASE
)
_BUSY_POLL = 0.05
# The smallest valid DuckDB file: a file header and two database headers of 4 KiB each.
# Anything shorter was never completely written (a crash or a full disk while it was created).
MIN_DATABASE_BYTES = 3 * 4096
DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file


_inherited: list[Any] = []  # the parent's DuckDB, kept alive: closing it in a child crashes


@on_fork
def _forget_connection() -> None:
    """A forked child opens its own DuckDB and must not wait on a lock held in the parent."""
    global _connection, _guard
    _inherited.append(_connection)
    _connection = None
    _guard = threading.RLock()


def _process_connection() -> duckdb.DuckDBPyConnection:
    """The process's in-memory DuckDB, created on first use (and again after a fork)."""
    global _connection, _connection_pid
    if _connection is None or _connection_pid != os.getpid():
        import duckdb

        _connection = duckdb.connect(":memory:")
        _connection_pid = os.getpid()
    return _connection


def utc_now() -> datetime:
    """Now in UTC, naive, as the manifest stores times."""
    return datetime.now(UTC).replace(tzinfo=None)


class Manifest:
    """Transactions on one root's ``manifest.duckdb`` under the root's manifest lock.

    ``path`` and ``locked`` serve a rebuild: it fills a new manifest under a temp name while
    it already holds the root's lock for the whole rebuild. A ``read_only`` manifest (of a
    read-only store) refuses ``write``/``migrate`` and creates no file: its shared lock opens
    an existing ``manifest.lock`` read-only. ``on_change`` (if set) is called
    after every committed ``write``, with the lock released (the store refreshes the SQL
    catalog file there); it must not raise.
    """

    def __init__(
        self,
        layout: Layout,
        lock_timeout: float,
        *,
        path: Path | None = None,
        locked: bool = False,
        read_only: bool = False,
    ):
        self.layout = layout
        self.read_only = read_only
        self.lock_timeout = lock_timeout
        self.path = path if path is not None else layout.manifest
        self.locked = locked
        self.on_change: Callable[[], None] | None = None
        # Run after the COMMIT of the current ``write``, still under its lock (``after_commit``).
        self._after_commit: list[Callable[[], None]] = []
        self._current = True  # False: migrate on first read/write (see ``open``)

    def open(self) -> None:
        """Make the manifest usable: migrate it now, or on first use if it looks sound.

        A missing, short, foreign or busy file is handled now, exactly as ``migrate`` does
        (created for a root without results, else ``ManifestError``/``ManifestBusy`` with the
        fix). A file that starts like a DuckDB database and that no other process holds open
        is migrated by the first ``read``/``write``: hits never get there, so a process serving
        hits never loads DuckDB.
        """
        try:
            with open(self.path, "rb") as handle:
                sound = handle.read(12)[8:12] == DUCKDB_MAGIC
        except FileNotFoundError:
            sound = False
        if sound and not self._held_elsewhere():
            self._current = False
            return
        try:
            self.migrate()
        except ManifestDamaged:
            self._current = False  # every later read/write says so again, with the fix
            raise

    def _held_elsewhere(self) -> bool:
        """Whether another process holds DuckDB's lock on the file (or it cannot be probed).

        DuckDB locks its database file with a POSIX record lock (``fcntl(F_SETLK)``) for as
        long as a session has it open. Probing takes the same kind of lock without waiting
        and drops it at once. POSIX drops ALL of a process's locks on a file when any of its
        descriptors is closed, so the probe runs only under ``_guard`` held for the first time
        by this thread: then no ATTACH of this process is open.
        """
        if getattr(_guard, "_is_owned", lambda: True)():
            return True  # inside one of our own attaches: let migrate decide
        with _guard:
            try:
                fd = os.open(self.path, os.O_RDWR)
            except OSError:
                return True  # missing, unwritable…: migrate says which
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            finally:
                os.close(fd)  # also releases the probe's lock
        return False

    def _ensure_current(self) -> None:
        if not self._current:
            self.migrate()

    def _lock(
        self, timeout: float, *, shared: bool = False
    ) -> contextlib.AbstractContextManager[None]:
        if self.locked:
            return contextlib.nullcontext()
        if self.read_only:
            if not self.layout.manifest_lock.exists():
                # No writer ever ran here; one that starts creates it, and DuckDB's own file
                # lock then makes our read-only ATTACH wait as for a busy manifest.
                return contextlib.nullcontext()
            return file_lock(self.layout.manifest_lock, timeout, shared=shared, create=False)
        return file_lock(self.layout.manifest_lock, timeout, shared=shared)

    def _refuse_write(self) -> None:
        if self.read_only:
            raise InvalidInput(
                f"manifest {self.path} is opened read-only (a read-only store): nothing may "
                "change it; use a FeatureStore opened without read_only=True"
            )

    @contextlib.contextmanager
    def write(
        self, *, wait: bool = True, notify: bool = True
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run the block in one transaction on the manifest, under the exclusive lock.

        The transaction commits when the block ends and rolls back if it raises. With
        ``wait=False`` a busy lock raises ``LockTimeout`` at once. ``notify=False`` skips
        ``on_change`` (a write of counts alone changes nothing a SQL client sees).
        """
        self._refuse_write()
        timeout = self.lock_timeout if wait else 0.0
        self._ensure_current()
        deadline = time.monotonic() + timeout
        with (
            _guard,
            self._lock(timeout),
            self._attached(read_only=False, deadline=deadline) as con,
        ):
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                self._after_commit.clear()
                con.execute("ROLLBACK")
                raise
            try:
                self._run(con, "COMMIT")
            except BaseException:
                self._after_commit.clear()
                raise
            actions, self._after_commit = self._after_commit, []
            for action in actions:
                action()
        if notify and self.on_change is not None:
            self.on_change()

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the current ``write`` block has committed, before its lock is
        released (so no other process sees the committed rows without what ``action`` did);
        dropped if the block rolls back. ``action`` must not raise."""
        self._after_commit.append(action)

    def restart(self, con: duckdb.DuckDBPyConnection) -> None:
        """Roll back the ``write`` block's transaction so far and begin a new one."""
        con.execute("ROLLBACK")
        con.execute("BEGIN TRANSACTION")

    @contextlib.contextmanager
    def read(self, *, wait: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """Attach the manifest read-only under the shared lock for the block.

        With ``wait=False`` a busy lock raises ``LockTimeout`` (a busy file ``ManifestBusy``)
        at once.
        """
        timeout = self.lock_timeout if wait else 0.0
        self._ensure_current()
        deadline = time.monotonic() + timeout
        with (
            _guard,
            self._lock(timeout, shared=True),
            self._attached(read_only=True, deadline=deadline) as con,
        ):
            yield con

    def copy_to(self, target: Path, *, wait: bool = True) -> int:
        """Copy the manifest file into ``target`` under the shared lock; return its mtime_ns.

        A consistent snapshot for the cost of a file copy (~10 ms for the 20 MB of 100k
        entries): work on the copy (the SQL catalog is built from one) then keeps no writer
        out. ``target`` keeps its mode if it exists (make it private: the manifest names
        features, symbols and configs). A log a killed writer left (``.wal``, committed but not
        yet in the file) is copied too, into a new file readable by its owner only. With
        ``wait=False`` a busy lock raises ``LockTimeout`` at once.
        """
        timeout = self.lock_timeout if wait else 0.0
        self._ensure_current()
        with self._lock(timeout, shared=True):
            if not self.path.exists():
                raise self._missing()
            mtime = os.stat(self.path).st_mtime_ns
            shutil.copyfile(self.path, target)
            log = self.path.with_name(self.path.name + ".wal")
            if log.exists():
                copy = target.with_name(target.name + ".wal")
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                os.close(os.open(copy, flags, 0o600))
                shutil.copyfile(log, copy)
        return mtime

    def migrate(self, *, create: bool = False) -> int:
        """Create the manifest if missing and apply pending migrations; return the version.

        A missing manifest is created only for a root without results (or with ``create``,
        as a rebuild does): otherwise it was lost, and a new empty one would hide every cached
        file from stats and GC (``FeatureStore()`` rebuilds it from the files first: see
        ``check.recover``). It is created and migrated under a temp name, then renamed into
        place. Feature views an earlier version stored in the manifest are dropped (they now
        live in the catalog file, and a view stored here costs every attach).
        """
        self._refuse_write()
        statements = sqlfiles.load("schema.sql")
        migrations = sorted(
            (int(name.removeprefix("migration_")), sql)
            for name, sql in statements.items()
            if name.startswith("migration_")
        )
        deadline = time.monotonic() + self.lock_timeout
        with _guard, self._lock(self.lock_timeout):
            if self.path.exists():
                with self._attached(read_only=False, deadline=deadline) as con:
                    version = self._migrate(con, statements, migrations)
                    self._drop_stored_views(con)
                self._current = True
                return version
            if not (create or not self._has_results()):
                raise self._missing()
            # Created whole under a temp name, then renamed: a crash or a full disk while it
            # is written leaves a temp file (removed by gc/check), never a partial manifest.
            new = self.new_temp_path("manifest")
            try:
                creating = Manifest(self.layout, self.lock_timeout, path=new, locked=True)
                with creating._attached(read_only=False, create=True, deadline=deadline) as con:
                    crash_point("manifest-creating")
                    version = self._migrate(con, statements, migrations)
                    self._run(con, f"CHECKPOINT {ALIAS}")
                os.replace(new, self.path)
            finally:
                for leftover in (new, new.with_name(new.name + ".wal")):
                    leftover.unlink(missing_ok=True)
            self._current = True
            return version

    def require_current(self) -> None:
        """Raise ``ManifestError`` if the manifest's schema is older than this version's (a
        read-only store cannot migrate it, and its queries would fail on missing columns)."""
        statements = sqlfiles.load("schema.sql")
        latest = max(
            (int(name.removeprefix("migration_")) for name in statements if "migration_" in name),
            default=0,
        )
        import duckdb

        with self.read() as con:
            try:
                row = con.execute(statements["current_version"]).fetchone()
            except duckdb.CatalogException:  # no schema_version table at all
                row = None
        version = int(row[0]) if row else 0
        if version < latest:
            raise ManifestError(
                f"manifest {self.path} has schema version {version}, this jules_cache needs "
                f"{latest}: open the root once with a writable FeatureStore (or any "
                "`jules-cache` command) to migrate it, then open it read-only"
            )

    def new_temp_path(self, what: str) -> Path:
        """A unique temp name for a whole DuckDB file written before it is renamed into place."""
        unique = f"{os.getpid()}.{uuid.uuid4().hex[:12]}"
        return self.layout.tmp / f"{what}.{unique}.duckdb.tmp"

    def _migrate(
        self,
        con: duckdb.DuckDBPyConnection,
        statements: dict[str, str],
        migrations: list[tuple[int, str]],
    ) -> int:
        self._run(con, statements["create_schema_version"])
        row = self._run(con, statements["current_version"]).fetchone()
        version = int(row[0]) if row else 0
        for number, sql in migrations:
            if number <= version:
                continue
            con.execute("BEGIN TRANSACTION")
            try:
                self._run(con, sql)
                applied = {"version": number, "applied_at": utc_now()}
                self._run(con, statements["record_version"], applied)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            version = number
        return version

    def _drop_stored_views(self, con: duckdb.DuckDBPyConnection) -> None:
        statements = sqlfiles.load("catalog.sql")
        views = self._run(con, statements["stored_views"]).fetchall()
        for schema, view in views:
            self._run(con, f'DROP VIEW IF EXISTS "{_quoted(schema)}"."{_quoted(view)}"')
        self._run(con, "DROP SCHEMA IF EXISTS jules_cache_parts CASCADE")

    def _has_results(self) -> bool:
        return any(self.layout.objects.glob("*/*.parquet"))

    def _rebuild_hint(self) -> str:
        return (
            f"the cached result files are intact: run `jules-cache --root "
            f"{str(self.layout.root)!r} check --rebuild` (or `store.check(rebuild=True)`) to "
            "rebuild the manifest from them"
        )

    def _missing(self) -> ManifestError:
        return ManifestError(
            f"manifest {self.path} is missing (deleted?); a new "
            f"FeatureStore({str(self.layout.root)!r}) rebuilds it from the result files, or "
            f"{self._rebuild_hint()}"
        )

    def diagnose(self, exc: BaseException) -> ManifestError:
        """Translate a failed ATTACH into busy / not writable / damaged, each with its fix."""
        text = str(exc)
        path = self.path
        if _BUSY.search(text):
            holder = _HOLDER.search(text)
            pid = int(holder.group("pid")) if holder else None
            program = holder.group("program") if holder else None
            who = f"{program} (pid {pid})" if holder else "another program"
            return ManifestBusy(
                f"manifest {path} is busy: {who} holds it open, so no process can write it "
                f"(nothing is damaged). Close that DuckDB session; for SQL open "
                f"{self.layout.root / 'catalog.duckdb'} instead (or use `jules-cache sql`), "
                "which never blocks the cache",
                pid,
                program,
            )
        errno_value = getattr(exc, "errno", None)
        if _NOT_WRITABLE.search(text) or errno_value in (errno.EACCES, errno.EROFS, errno.EPERM):
            return ManifestError(
                f"manifest {path} is not writable by this process ({text}): fix its "
                "permissions (or remove the immutable attribute, or mount the file system "
                "read-write); nothing is damaged, do not rebuild it"
            )
        if _DAMAGED.search(text):
            return ManifestDamaged(
                f"manifest {path} is damaged ({text}); {self._rebuild_hint()} (it moves the "
                "damaged file aside first)"
            )
        return ManifestError(f"cannot open manifest {path}: {text}")

    @contextlib.contextmanager
    def _attached(
        self, *, read_only: bool, create: bool = False, deadline: float = 0.0
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        con = _process_connection()
        path = str(self.path)
        if not create and not self.path.exists():
            # ATTACH would silently create an empty database: say what happened instead.
            raise self._missing()
        if not read_only and not create and not os.access(path, os.W_OK):
            # DuckDB opens a read-only or immutable file without complaint and fails later.
            raise self.diagnose(PermissionError(errno.EACCES, "Permission denied", path))
        import duckdb

        options = " (READ_ONLY)" if read_only else ""
        waiting = False
        while True:
            try:
                con.execute(f"ATTACH ? AS {ALIAS}{options}", [path])
                break
            except duckdb.Error as exc:
                error = self.diagnose(exc)
                if isinstance(error, ManifestBusy) and time.monotonic() < deadline:
                    if not waiting:  # say why this call seems to hang
                        _log.warning("%s; waiting up to %.0f s", error, self.lock_timeout)
                        waiting = True
                    time.sleep(_BUSY_POLL)  # an external session: wait for it like for a lock
                    continue
                raise error from exc
        try:
            con.execute(f"USE {ALIAS}")
            yield con
        finally:
            con.execute("USE memory")
            con.execute(f"DETACH {ALIAS}")

    def _run(
        self, con: duckdb.DuckDBPyConnection, sql: str, params: Any = None
    ) -> duckdb.DuckDBPyConnection:
        import duckdb  # loaded already: ``con`` is a DuckDB connection

        try:
            return con.execute(sql, params) if params is not None else con.execute(sql)
        except duckdb.Error as exc:
            raise ManifestError(f"manifest {self.path}: {exc}") from exc

    def execute(
        self, con: duckdb.DuckDBPyConnection, filename: str, name: str, params: Any = None
    ) -> duckdb.DuckDBPyConnection:
        """Run the named statement ``sql/<filename>:<name>`` on an attached manifest."""
        return self._run(con, sqlfiles.statement(filename, name), params)


def _quoted(identifier: str) -> str:
    return identifier.replace('"', '""')
