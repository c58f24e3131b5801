"""The manifest: a DuckDB database file in the root, shared by every process on the machine.

DuckDB lets one process open a database file read-write, or several read-only — never both —
and ``connect()`` costs ~40 ms. So each process keeps ONE in-memory DuckDB instance and, for each
operation, takes our ``flock`` on ``manifest.lock``, ATTACHes the file, works in an explicit
transaction, and DETACHes (which also releases DuckDB's own file lock). Writers take the lock
exclusively; readers share it and attach read-only. Nothing holds the manifest across a compute.

DuckDB is imported on first use (~65 ms), and an existing, healthy-looking manifest is migrated on
first use too: a cache hit never touches the manifest, so a new process serving hits needs no
DuckDB at all.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import sqlfiles
from .errors import ManifestError
from .layout import Layout
from .locks import file_lock

if TYPE_CHECKING:
    import duckdb

ALIAS = "manifest"
DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file

_guard = threading.RLock()  # one attach at a time per process: the connection is shared
_connection: duckdb.DuckDBPyConnection | None = None
_connection_pid: int | None = None


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
    """Transactions on one root's ``manifest.duckdb`` under the root's manifest lock."""

    def __init__(self, layout: Layout, lock_timeout: float):
        self.layout = layout
        self.lock_timeout = lock_timeout
        self._current = False  # migrated by this object (or found to need it on first use)

    def open(self) -> None:
        """Make the manifest usable: create or migrate it now, or on first use if it looks sound.

        A missing, empty or foreign file is handled now, exactly as ``migrate`` does (created
        for a root without results, else ``ManifestError`` with the fix). A file that starts
        like a DuckDB database is migrated by the first ``read``/``write``: hits never get there.
        """
        try:
            with open(self.layout.manifest, "rb") as handle:
                sound = handle.read(12)[8:12] == DUCKDB_MAGIC
        except FileNotFoundError:
            sound = False
        if not sound:
            self.migrate()

    def _ensure_current(self) -> None:
        if not self._current:
            self.migrate()

    @contextlib.contextmanager
    def write(self, *, wait: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run the block in one transaction on the manifest, under the exclusive lock.

        The transaction commits when the block ends and rolls back if it raises. With
        ``wait=False`` a busy lock raises ``LockTimeout`` at once.
        """
        timeout = self.lock_timeout if wait else 0.0
        self._ensure_current()
        with (
            _guard,
            file_lock(self.layout.manifest_lock, timeout),
            self._attached(read_only=False) as con,
        ):
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self._run(con, "COMMIT")

    def restart(self, con: duckdb.DuckDBPyConnection) -> None:
        """Roll back the ``write`` block's transaction so far and begin a new one."""
        con.execute("ROLLBACK")
        con.execute("BEGIN TRANSACTION")

    @contextlib.contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Attach the manifest read-only under the shared lock for the block."""
        self._ensure_current()
        with (
            _guard,
            file_lock(self.layout.manifest_lock, self.lock_timeout, shared=True),
            self._attached(read_only=True) as con,
        ):
            yield con

    def migrate(self, *, create: bool = False) -> int:
        """Create the manifest if missing and apply pending migrations; return the version.

        A missing manifest is created only for a root without results (or with ``create``,
        as ``check --rebuild`` does): otherwise it was lost, and a new empty one would hide
        every cached file from stats and GC, so ``ManifestError`` says how to rebuild it.
        """
        statements = sqlfiles.load("schema.sql")
        migrations = sorted(
            (int(name.removeprefix("migration_")), sql)
            for name, sql in statements.items()
            if name.startswith("migration_")
        )
        with (
            _guard,
            file_lock(self.layout.manifest_lock, self.lock_timeout),
            self._attached(read_only=False, create=create or self._may_create()) as con,
        ):
            self._run(con, statements["create_schema_version"])
            version = self._run(con, statements["current_version"]).fetchone()[0]
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
        self._current = True
        return version

    def _may_create(self) -> bool:
        """A missing manifest may be created only in a root without results (an existing one
        needs no scan of ``objects/``, which takes ~1 s per 100k files)."""
        if self.layout.manifest.exists():
            return False
        return not any(self.layout.objects.glob("*/*.parquet"))

    def _rebuild_hint(self) -> str:
        return (
            f"the cached result files are intact: run `jules-cache --root "
            f"{str(self.layout.root)!r} check --rebuild` to rebuild the manifest from them"
        )

    @contextlib.contextmanager
    def _attached(
        self, *, read_only: bool, create: bool = False
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        con = _process_connection()
        path = str(self.layout.manifest)
        if not create and not self.layout.manifest.exists():
            # ATTACH would silently create an empty database: say what happened instead.
            raise ManifestError(f"manifest {path} is missing (deleted?); {self._rebuild_hint()}")
        options = " (READ_ONLY)" if read_only else ""
        import duckdb

        try:
            con.execute(f"ATTACH ? AS {ALIAS}{options}", [path])
        except duckdb.Error as exc:
            raise ManifestError(
                f"cannot open manifest {path} ({exc}); if it is damaged, "
                f"{self._rebuild_hint()} (it moves the damaged file aside first)"
            ) from exc
        try:
            con.execute(f"USE {ALIAS}")
            yield con
        finally:
            con.execute("USE memory")
            con.execute(f"DETACH {ALIAS}")

    def _run(
        self, con: duckdb.DuckDBPyConnection, sql: str, params: Any = None
    ) -> duckdb.DuckDBPyConnection:
        import duckdb  # already loaded: a connection exists

        try:
            return con.execute(sql, params) if params is not None else con.execute(sql)
        except duckdb.Error as exc:
            raise ManifestError(f"manifest {self.layout.manifest}: {exc}") from exc

    def execute(
        self, con: duckdb.DuckDBPyConnection, filename: str, name: str, params: Any = None
    ) -> duckdb.DuckDBPyConnection:
        """Run the named statement ``sql/<filename>:<name>`` on an attached manifest."""
        return self._run(con, sqlfiles.statement(filename, name), params)
