"""The catalog of a shared cache: its entries and counters in PostgreSQL, reached by every host.

It plays the part ``manifest.duckdb`` plays for a local root: the same tables
(``sql/postgres/schema.sql``; times are naive UTC ``timestamp`` columns, as there), statements
in ``sql/postgres/*.sql``, the same statement names as there (``storage.catalog.Catalog``).
It also provides the cross-host single flight: ``key_lock`` holds a PostgreSQL session advisory
lock per key.

One connection per catalog, in autocommit mode, guarded by a lock so threads share it (a wait
for it is bounded too; a forked child gets fresh locks and its own connection); each write is
one short transaction. The catalog is bound to its cache's root (``catalog_root``, written in
the migration transaction): a store of another root is refused with ``InvalidInput``.
Settings made on connect, and why:

- ``connect_timeout`` (the store's ``lock_timeout``, within 3-10 s): an unreachable host fails
  fast with ``ServiceUnavailable``.
- ``lock_timeout`` (the store's) and ``statement_timeout`` (5 s more): a client left inside a
  transaction holding a lock made every call wait without end; now a lock wait ends as
  ``LockTimeout`` and any statement as ``ServiceUnavailable``. A hit's count flush sets both
  far lower for its transaction (``SET LOCAL``) and runs off the hit path.
- client TCP keepalives (``keepalives_idle=10``, ``keepalives_interval=5``,
  ``keepalives_count=3``) and ``tcp_user_timeout=30000``: a dead server is noticed in ~25 s
  rather than the kernel's two hours.
- the same on the server side, per session (``tcp_keepalives_*``, ``tcp_user_timeout``): when a
  host vanishes without closing its connection (power loss, network partition), the server
  drops its session -- and the advisory locks it held -- after ~25-30 s of silence. A process
  that dies on a live host closes its socket, and its locks go at once (measured: ~3 ms).
- ``idle_in_transaction_session_timeout=60s``: a client frozen inside a transaction cannot
  hold row locks for ever.
- ``search_path`` = the cache's schema, ``TimeZone=UTC``, ``application_name`` naming the host
  and pid, so a lock timeout can say who holds the key.

Session advisory locks need a real session: a pooler in transaction mode (PgBouncer's default)
breaks them; connect directly or through session-mode pooling. If the connection is lost while
a lock is held, the lock is gone with it: single flight is then best effort (two hosts may
compute the same key), which is safe because objects are written with a conditional PUT and
the catalog row is the truth.

psycopg is imported on first use, so a process that never opens a shared cache never loads it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import xxhash

from jules_cache.errors import InvalidInput, LockTimeout, ManifestError, ServiceUnavailable
from jules_cache.fingerprints.inputs import input_rows
from jules_cache.storage import sqlfiles
from jules_cache.storage.catalog import CatalogChanges, Rows, Run
from jules_cache.storage.crash_points import crash_point

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

SQL_FOLDER = "postgres"
DEFAULT_SCHEMA = "jules_cache"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # fullmatch only: '$' passes "x\n"
# Client side (libpq) and server side (GUCs, per session) dead-peer detection; see the module.
_CLIENT_SETTINGS = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
_SERVER_SETTINGS = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "30000",
    "idle_in_transaction_session_timeout": "60s",
    "TimeZone": "UTC",
}
_ADVICE = (
    "Check that the server is running and reachable from this host, and the catalog DSN "
    "(host, port, database, user, password)"
)
_STATEMENT_SLACK = 5.0  # seconds a statement may run beyond lock_timeout (statement_timeout)
_CONNECT_FLOOR = 3.0  # seconds: the least connect_timeout, however small lock_timeout is
_NO_WAIT_LOCK_MS = 1  # a hit's count flush: give up at once on a busy row (0 would mean never)
_NO_WAIT_STATEMENT_MS = 1000
_LOCK_POLL_FIRST = 0.001  # seconds; doubles up to _LOCK_POLL_MAX, with jitter
_LOCK_POLL_MAX = 0.05
_TRANSACTION_RETRIES = 3
# PostgreSQL type OIDs -> Arrow types, for copies of catalog tables (others are inferred).
_ARROW_TYPES: dict[int, Any] = {}  # on deadlock or serialization failure


# Bookkeeping for changes_since (schema.sql migrations 4 and 5): never copied for SQL.
_BOOKKEEPING = frozenset({"row_deletions", "row_deletions_pruned"})
_XMIN_HORIZON = 1 << 30  # transactions; an older snapshot position is read afresh


def lock_id(schema: str, name: str) -> int:
    """The 64-bit advisory lock number of ``name`` (a key, or e.g. ``"migrate"``) in a cache.

    A signed bigint, as PostgreSQL takes it; the schema is part of it, so two caches in one
    database never contend.
    """
    unsigned = xxhash.xxh3_64_intdigest(f"{schema}\0{name}".encode())
    return unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned


def _arrow_types() -> None:
    import pyarrow as pa

    _ARROW_TYPES.update(
        {
            16: pa.bool_(),
            20: pa.int64(),
            21: pa.int16(),
            23: pa.int32(),
            25: pa.string(),
            700: pa.float32(),
            701: pa.float64(),
            1043: pa.string(),
            1114: pa.timestamp("us"),
        }
    )


def _statement(filename: str, name: str) -> str:
    return sqlfiles.statement(f"{SQL_FOLDER}/{filename}", name)


class PostgresCatalog:
    """A shared cache's catalog in PostgreSQL schema ``schema`` of the database ``dsn`` names.

    ``dsn`` is a libpq connection string or URI (``postgresql://user:pw@host:5432/db``);
    libpq's PG* environment variables and ``~/.pgpass`` apply as usual. Settings given in the
    DSN (e.g. ``keepalives_idle``) win over the defaults above. The schema is created and
    migrated on first use. Errors: ``ServiceUnavailable`` when the server cannot be reached or
    the connection is lost, ``ManifestError`` when a statement fails, ``LockTimeout`` from
    ``key_lock``.
    """

    def __init__(
        self,
        dsn: str,
        *,
        root: str,
        schema: str = DEFAULT_SCHEMA,
        lock_timeout: float = 600.0,
        application_name: str | None = None,
    ):
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise InvalidInput(
                f"catalog schema {schema!r} is not a plain lowercase identifier "
                "(letters, digits, _; at most 63)"
            )
        if not isinstance(root, str) or not root.strip("/"):
            raise InvalidInput(f"a catalog needs the root of its cache, not {root!r}")
        self.dsn = dsn
        self.schema = schema
        self.root = root.rstrip("/")
        self.lock_timeout = float(lock_timeout)
        self.connect_timeout = min(10.0, max(_CONNECT_FLOOR, self.lock_timeout))
        self.application_name = application_name or _default_application_name()
        self.address = _address(dsn)
        self._lock = threading.RLock()  # one statement or transaction at a time on the connection
        self._held: set[int] = set()  # key locks this process holds (a session's locks stack)
        self._held_changed = threading.Condition()
        self._connection: psycopg.Connection[Any] | None = None
        self._pid = os.getpid()
        self._migrated = False
        self._finalizer: weakref.finalize[..., PostgresCatalog] | None = None
        _catalogs.add(self)

    def __repr__(self) -> str:
        return f"PostgresCatalog({self.address!r}, schema={self.schema!r})"

    # Picklable (for Dask and spawned processes): the connection is not; it is made anew.
    def __getstate__(self) -> dict[str, Any]:
        return {
            "dsn": self.dsn,
            "root": self.root,
            "schema": self.schema,
            "lock_timeout": self.lock_timeout,
            "application_name": None,  # the new process names itself
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    # -- connection --------------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError as exc:
            raise ImportError(
                f"a PostgreSQL catalog needs psycopg ({exc}): pip install 'jules-cache[shared]'"
            ) from exc

        try:
            given = conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError as exc:
            raise InvalidInput(f"bad PostgreSQL catalog DSN: {exc}") from None
        settings: dict[str, Any] = {k: v for k, v in _CLIENT_SETTINGS.items() if k not in given}
        if "connect_timeout" not in given:
            settings["connect_timeout"] = max(1, round(self.connect_timeout))
        if "application_name" not in given:
            settings["application_name"] = self.application_name[:63]
        # Every wait of a statement ends: a lock wait after lock_timeout (LockTimeout), any
        # statement a little later (0 would mean "wait for ever" to PostgreSQL).
        waits = {
            "lock_timeout": f"{max(1, round(self.lock_timeout * 1000))}ms",
            "statement_timeout": f"{round((self.lock_timeout + _STATEMENT_SLACK) * 1000)}ms",
        }
        server = {**_SERVER_SETTINGS, **waits, "search_path": self.schema}
        # Ours first, then the DSN's own options (which win), except the schema we must use.
        options = " ".join(f"-c {name}={value}" for name, value in server.items())
        if given.get("options"):
            options = f"{options} {given['options']} -c search_path={self.schema}"
        settings["options"] = options
        try:
            connection = psycopg.connect(self.dsn, autocommit=True, **settings)
        except psycopg.Error as exc:
            raise self._unavailable("cannot connect", exc) from exc
        return connection

    def _connected(self) -> psycopg.Connection[Any]:
        """The open connection, made (and the schema migrated) if there is none or it broke.

        Call with ``self._lock`` held.
        """
        connection = self._connection
        if connection is not None and self._pid != os.getpid():
            # Forked: the socket belongs to the parent; never touch it (a close would end the
            # parent's session). Keep the object alive so its finalizer does nothing here.
            _abandoned.append(connection)
            connection = self._connection = None
            self._held.clear()
            self._pid = os.getpid()
        if connection is not None and (connection.closed or connection.broken):
            with contextlib.suppress(Exception):
                connection.close()
            connection = self._connection = None
        if connection is None:
            connection = self._connect()
            self._connection = connection
            if self._finalizer is not None:
                self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _close_quietly, connection, os.getpid())
        if not self._migrated:
            self._migrate(connection)
            self._migrated = True
        return connection

    def _reset_after_fork(self) -> None:
        """In a forked child: fresh locks (another thread -- e.g. a background count flush --
        may have held them at the fork, and would never release them here) and no
        connection (the socket is the parent's session: never touched, never closed)."""
        self._lock = threading.RLock()
        self._held = set()
        self._held_changed = threading.Condition()
        if self._connection is not None:
            _abandoned.append(self._connection)
            self._connection = None
        self._pid = os.getpid()

    def close(self) -> None:
        """Close the connection (releasing every advisory lock it held); reopened on next use."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
                self._finalizer = None
            self._connection = None

    def __enter__(self) -> PostgresCatalog:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- errors ------------------------------------------------------------------------------------

    def _unavailable(self, problem: str, exc: BaseException) -> ServiceUnavailable:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ServiceUnavailable("PostgreSQL", self.address, f"{problem} ({detail})", _ADVICE)

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Translate psycopg's errors (the one place): a lost connection is the service being
        unavailable; any other failure is a statement of the catalog failing."""
        import psycopg

        try:
            yield
        except psycopg.errors.LockNotAvailable as exc:  # lock_timeout: a client holds a lock
            where = (
                f"on the catalog at {self.address} (schema {self.schema}) during {what}; "
                "a client holds it (see pg_stat_activity)"
            )
            raise LockTimeout(where, self.lock_timeout) from exc
        except psycopg.errors.QueryCanceled as exc:  # statement_timeout
            problem = f"{what} ran past statement_timeout ({exc})"
            raise ServiceUnavailable(
                "PostgreSQL", self.address, problem, "Check the server's load and locks"
            ) from exc
        except psycopg.Error as exc:
            connection = self._connection
            if connection is None or connection.closed or connection.broken:
                self._connection = None
                raise self._unavailable(f"connection lost during {what}", exc) from exc
            raise ManifestError(
                f"PostgreSQL catalog at {self.address} (schema {self.schema}): {what} failed: {exc}"
            ) from exc

    def _take_connection(self, what: str, wait: bool = True) -> None:
        """Hold the connection (other threads of this process use it too): at once or not at
        all without ``wait``, else for as long as another thread's statement may run."""
        timeout = self.lock_timeout + _STATEMENT_SLACK
        if not (self._lock.acquire(timeout=timeout) if wait else self._lock.acquire(False)):
            where = f"the PostgreSQL catalog connection of this process ({what})"
            raise LockTimeout(where, timeout if wait else 0.0)

    @contextlib.contextmanager
    def _holding(self, what: str) -> Iterator[None]:
        self._take_connection(what)
        try:
            yield
        finally:
            self._lock.release()

    def _live(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.broken and self._pid == os.getpid()

    def _run(
        self, what: str, body: Callable[[psycopg.Connection[Any]], T], *, idempotent: bool = False
    ) -> T:
        """Run ``body`` on the connection in autocommit mode (each statement commits).

        An ``idempotent`` body (a read, a lock attempt) that finds the connection lost -- the
        server restarted, or ended the session -- is run once more on a new connection.
        """
        with self._holding(what):
            reused = self._live()
            try:
                with self._translated(what):
                    return body(self._connected())
            except ServiceUnavailable:
                if not (idempotent and reused) or self._live():
                    raise  # a live connection: the server answered (e.g. statement_timeout)
            with self._translated(what):
                return body(self._connected())

    def _transact(
        self,
        what: str,
        body: Callable[[psycopg.Connection[Any]], T],
        *,
        idempotent: bool = False,
        wait: bool = True,
    ) -> T:
        """Run ``body`` in one transaction.

        Retried whole on a deadlock or serialization failure (PostgreSQL rolled it back:
        nothing of it was applied), and once on a new connection when the old one turns out
        lost before the transaction began (or at any point, for an ``idempotent`` body).
        ``wait=False`` raises ``LockTimeout`` at once if another thread of this process is
        using the connection.
        """
        import psycopg

        retried_connection = False
        for attempt in range(_TRANSACTION_RETRIES):
            began = False
            reused = self._live()

            def begun(connection: psycopg.Connection[Any]) -> T:
                nonlocal began
                began = True
                return body(connection)

            self._take_connection(what, wait)
            try:
                with self._translated(what):
                    connection = self._connected()
                    with connection.transaction():
                        return begun(connection)
            except ServiceUnavailable:
                if retried_connection or not reused or (began and not idempotent) or self._live():
                    raise
                retried_connection = True
            except ManifestError as exc:
                retry = isinstance(exc.__cause__, psycopg.errors.TransactionRollback)
                if not retry or attempt == _TRANSACTION_RETRIES - 1:
                    raise
            finally:
                self._lock.release()
            time.sleep(random.uniform(0.001, 0.02) * (attempt + 1))  # connection not held
        raise AssertionError("unreachable")

    # -- statements --------------------------------------------------------------------------------

    def write(self, filename: str, name: str, params: Mapping[str, Any] | None = None) -> Rows:
        """Run one named statement of ``sql/postgres/<filename>`` on its own (autocommit);
        return its rows (empty for statements that return none)."""
        return self._run(name, lambda connection: _statement_in(connection, filename, name, params))

    def read(self, filename: str, name: str, params: Mapping[str, Any] | None = None) -> Rows:
        """Like ``write``, for a statement that only reads: run again on a new connection if
        the old one turns out lost."""

        def body(connection: psycopg.Connection[Any]) -> Rows:
            return _statement_in(connection, filename, name, params)

        return self._run(name, body, idempotent=True)

    @contextlib.contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[Run]:
        """One transaction for several named statements: yields ``run(filename, name,
        params=None) -> rows``; commits at the end of the block, rolls back on an exception.
        ``lock`` names an advisory transaction lock taken first (one such block at a time
        across hosts).

        Holds the connection for the whole block: keep it short (never across a compute).
        """
        with self._holding("transaction"), self._translated("transaction"):
            connection = self._connected()
            with connection.transaction():
                run = functools.partial(_statement_in, connection)
                if lock is not None:
                    run("locks.sql", "xact_lock", {"lock": lock_id(self.schema, lock)})
                yield run

    # -- schema ------------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Create the schema and apply pending migrations now (else done on first use);
        return the schema version."""
        with self._holding("migration"), self._translated("migration"):
            connection = self._connected()
            return self._migrate(connection)

    def _migrate(self, connection: psycopg.Connection[Any]) -> int:
        """Bring the schema up to date and bind it to this catalog's root; concurrent first
        connections wait on an advisory transaction lock, then find the work done.

        Raises ``InvalidInput`` when the schema belongs to another root.
        """
        from psycopg import sql

        statements = sqlfiles.load(f"{SQL_FOLDER}/schema.sql")
        migrations = sorted(
            int(name.removeprefix("migration_"))
            for name in statements
            if name.startswith("migration_")
        )
        latest = migrations[-1]
        bound: tuple[Any, ...] | None = None
        with contextlib.suppress(Exception), connection.transaction():
            # Fast path: already up to date and bound (no lock, no DDL). Fails on a new schema.
            (version,) = connection.execute(statements["current_version"]).fetchone() or (0,)
            if version == latest:
                bound = connection.execute(statements["bound_root"]).fetchone()
        if bound is not None:
            self._check_root(bound[0])
            return latest
        with connection.transaction():
            connection.execute(
                _statement("locks.sql", "xact_lock"), {"lock": lock_id(self.schema, "migrate")}
            )
            create = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            connection.execute(create)
            connection.execute(statements["create_schema_version"])
            (version,) = connection.execute(statements["current_version"]).fetchone() or (0,)
            if version > latest:
                raise ManifestError(
                    f"the catalog schema {self.schema!r} at {self.address} is at version "
                    f"{version}, newer than this jules_cache knows ({latest}): upgrade "
                    "jules_cache on this host"
                )
            for number in migrations:
                if number > version:
                    connection.execute(statements[f"migration_{number}"])
                    params = {"version": number, "applied_at": datetime.now(UTC)}
                    connection.execute(statements["record_version"], params)
            params = {"root": self.root, "bound_at": datetime.now(UTC)}
            connection.execute(statements["bind_root"], params)
            (root,) = connection.execute(statements["bound_root"]).fetchone() or ("",)
            self._check_root(root)  # another root's catalog: nothing of this is committed
        return latest

    def _check_root(self, bound: str) -> None:
        if bound != self.root:
            raise InvalidInput(
                f"the catalog schema {self.schema!r} at {self.address} belongs to the cache "
                f"{bound!r}, not to {self.root!r}: two caches on one schema would delete each "
                "other's results. Pick another catalog_schema (or $JULES_CACHE_CATALOG_SCHEMA) "
                "for this root"
            )

    # -- single flight across hosts ----------------------------------------------------------------

    @contextlib.contextmanager
    def key_lock(self, key: str, timeout: float) -> Iterator[None]:
        """Hold ``key``'s advisory lock for the block: one holder per key across every host
        and thread using this catalog.

        Polls ``pg_try_advisory_lock`` with backoff (1 ms doubling to 50 ms), releasing the
        shared connection between polls. Raises ``LockTimeout`` naming the key and, when the
        server says, the holder (its application name: host and pid).
        """
        number = lock_id(self.schema, key)
        deadline = time.monotonic() + timeout
        # A session's advisory locks stack: the server would let two threads of this process
        # both "acquire" the key. So threads first queue here, in-process.
        with self._held_changed:
            while number in self._held:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockTimeout(self._lock_description(key, None), timeout)
                self._held_changed.wait(remaining)
            self._held.add(number)
        try:
            session = self._acquire(key, number, deadline, timeout)
            try:
                yield
            finally:
                self._release(number, session)
        finally:
            with self._held_changed:
                self._held.discard(number)
                self._held_changed.notify_all()

    def _acquire(self, key: str, number: int, deadline: float, timeout: float) -> object:
        """Poll until the server grants the lock; return the connection (session) holding it."""
        statement = _statement("locks.sql", "try_lock")
        delay = _LOCK_POLL_FIRST
        while True:

            def attempt(connection: psycopg.Connection[Any]) -> object | None:
                row = connection.execute(statement, {"lock": number}).fetchone()
                return connection if row and row[0] else None

            session = self._run("lock", attempt, idempotent=True)
            if session is not None:
                return session
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(self._lock_description(key, number), timeout)
            time.sleep(min(remaining, delay * random.uniform(0.5, 1.0)))
            delay = min(delay * 2, _LOCK_POLL_MAX)

    def _release(self, number: int, session: Any) -> None:
        """Unlock on the session that holds the lock; if that session is gone (connection
        lost or replaced), the server released the lock with it already."""
        import psycopg

        with self._lock:
            connection = self._connection
            if connection is not session or connection is None or connection.broken:
                return
            with contextlib.suppress(psycopg.Error):
                connection.execute(_statement("locks.sql", "unlock"), {"lock": number})

    def _lock_description(self, key: str, number: int | None) -> str:
        where = f"key {key} (PostgreSQL advisory lock at {self.address}, schema {self.schema}"
        if number is None:
            return f"{where}; held by another thread of this process)"
        unsigned = number & ((1 << 64) - 1)
        params = {"classid": unsigned >> 32, "objid": unsigned & 0xFFFFFFFF}
        try:
            rows = self.read("locks.sql", "lock_holder", params)
        except (ManifestError, ServiceUnavailable):
            rows = Rows()
        if not rows:
            return f"{where})"
        application, client, backend_pid, age = rows[0]
        return (
            f"{where}; held by {application or 'an unnamed client'!r} from "
            f"{client or 'a local socket'}, server pid {backend_pid}, connected {age} ago)"
        )

    # -- entries -----------------------------------------------------------------------------------

    def publish(
        self,
        row: Mapping[str, Any],
        *,
        input_method: str | None = None,
        input_files: Sequence[Any] = (),
    ) -> None:
        """Insert or replace ``row`` (an ``entry_row``) and its input files, in one transaction.

        ``input_files`` are ``InputFile``-like (path, size, mtime_ns, inode, ctime_ns,
        digest), recorded with ``input_method`` ('file-bytes' or 'footer').
        """
        params = dict(row)
        params.setdefault("code_functions", None)
        inputs = None
        if input_files:
            inputs = input_rows(row["key"], input_method or "", input_files)

        def body(connection: psycopg.Connection[Any]) -> None:
            connection.execute(_statement("entries.sql", "upsert_entry"), params)
            if inputs is not None:
                key = {"key": row["key"]}
                connection.execute(_statement("entries.sql", "delete_entry_inputs"), key)
                connection.execute(_statement("entries.sql", "insert_entry_inputs"), inputs)
            crash_point("commit")

        self._transact("publish", body, idempotent=True)

    # -- counters ----------------------------------------------------------------------------------

    def flush_counts(
        self,
        *,
        hits: Mapping[str, tuple[int, datetime]] | None = None,
        misses: int = 0,
        calls: Mapping[str, tuple[str, str, int, int]] | None = None,
        wait: bool = True,
    ) -> None:
        """Add counts kept in memory, in one transaction: ``hits`` {key: (count, last access)}
        onto the entries, ``misses`` onto the cache-wide counter, ``calls`` {key: (feature,
        symbol, hits, misses)} onto the per-feature/symbol counters.

        ``wait=False`` (a hit's flush) gives up at once with ``LockTimeout`` when a lock it
        needs is held -- by a client of the catalog or another thread of this process: a hit
        never waits on a count flush.

        Flushes from all hosts are serialised by an advisory transaction lock (so new symbols
        get distinct ordinals) and lock entry rows in key order (so they never deadlock with
        each other or with deletes).
        """
        hits = dict(hits or {})
        calls = dict(calls or {})
        if not hits and not misses and not calls:
            return

        def body(connection: psycopg.Connection[Any]) -> None:
            def run(filename: str, name: str, params: Mapping[str, Any]) -> None:
                connection.execute(_statement(filename, name), params)

            if not wait:  # SET LOCAL: this transaction only
                connection.execute(f"SET LOCAL lock_timeout = {_NO_WAIT_LOCK_MS}")
                connection.execute(f"SET LOCAL statement_timeout = {_NO_WAIT_STATEMENT_MS}")
            run("locks.sql", "xact_lock", {"lock": lock_id(self.schema, "flush")})
            if hits:
                keys = sorted(hits)
                run("entries.sql", "lock_entries", {"keys": keys})
                params = {
                    "keys": keys,
                    "hits": [hits[key][0] for key in keys],
                    "times": [hits[key][1] for key in keys],
                }
                run("entries.sql", "flush_hits", params)
            if misses:
                run("entries.sql", "bump_counter", {"name": "misses", "delta": misses})
            if calls:
                rows = [calls[key] for key in sorted(calls)]
                run("entries.sql", "number_symbols", {"symbols": sorted({r[1] for r in rows})})
                params = {
                    "keys": sorted(calls),
                    "features": [r[0] for r in rows],
                    "symbols": [r[1] for r in rows],
                    "hits": [r[2] for r in rows],
                    "misses": [r[3] for r in rows],
                }
                run("entries.sql", "count_calls", params)

        self._transact("counter flush", body, wait=wait)

    # -- removal and GC --------------------------------------------------------------------------

    def delete_entries(
        self, keys: Sequence[str], last_accessed: Sequence[datetime | None] | None = None
    ) -> list[tuple[str, str]]:
        """Delete the rows of ``keys`` (and their input rows) in one transaction; return the
        (key, feature) pairs really deleted.

        With ``last_accessed`` (one per key, as GC planned them), a row accessed since is
        spared; None deletes unconditionally. For rows whose object was found gone
        (dangling); an entry with its object goes through ``drop_entries``.
        """
        keys = list(keys)
        if not keys:
            return []
        times = list(last_accessed) if last_accessed is not None else [None] * len(keys)
        if len(times) != len(keys):
            raise InvalidInput(f"{len(keys)} keys but {len(times)} last-access times")

        def body(connection: psycopg.Connection[Any]) -> list[tuple[str, str]]:
            connection.execute(_statement("entries.sql", "lock_entries"), {"keys": sorted(keys)})
            params = {"keys": keys, "last_accessed": times}
            deleted = _rows(connection.execute(_statement("removal.sql", "delete_entries"), params))
            gone = {"keys": [key for key, _ in deleted]}
            connection.execute(_statement("removal.sql", "delete_entry_inputs"), gone)
            return [(key, feature) for key, feature in deleted]

        return self._transact("delete", body)

    def drop_entries(
        self,
        keys: Sequence[str],
        delete_objects: Callable[[list[str]], list[str]],
        last_accessed: Sequence[datetime | None] | None = None,
    ) -> list[str]:
        """Delete the objects of ``keys`` (``delete_objects``) and then the rows of those that
        went, in one transaction holding the rows; return those keys. Hold the keys' locks.

        An object that could not be deleted keeps its row: an entry is never reported gone
        while its object is still served. If the commit fails after objects went, rows
        without their objects are left: misses, which GC collects as dangling. With
        ``last_accessed`` (GC's plan), a row accessed since is spared and its object untouched.
        A deadlock retry runs the whole body again (deleting an object twice is harmless).
        """
        if not keys:
            return []
        times = list(last_accessed) if last_accessed is not None else [None] * len(keys)

        def body(connection: psycopg.Connection[Any]) -> list[str]:
            def run(filename: str, name: str, params: Mapping[str, Any]) -> Rows:
                return _rows(connection.execute(_statement(filename, name), params))

            run("entries.sql", "lock_entries", {"keys": sorted(keys)})
            params = {"keys": list(keys), "last_accessed": times}
            removable = {key for (key,) in run("removal.sql", "removable", params)}
            if not removable:
                return []
            gone = set(delete_objects([key for key in keys if key in removable]))
            chosen = [(key, time) for key, time in zip(keys, times, strict=True) if key in gone]
            params = {"keys": [key for key, _ in chosen], "last_accessed": [t for _, t in chosen]}
            deleted = [key for key, _feature in run("removal.sql", "delete_entries", params)]
            run("removal.sql", "delete_entry_inputs", {"keys": deleted})
            return deleted

        return self._transact("delete", body)

    def changes_since(
        self, since: int | None, *, exclude: frozenset[str] = frozenset()
    ) -> CatalogChanges:
        """What changed in the catalog's tables since the snapshot whose ``watermark`` was
        ``since`` (None: everything), read in one REPEATABLE READ transaction.

        A table is given whole (``replaced``) on the first call, when it was truncated, or when
        it has no deletion triggers (schema.sql migration_4); otherwise only its rows written by
        a transaction at or after ``since`` (``changed``, found by xmin) and the keys deleted
        since (``deleted``). ``since`` is a snapshot's oldest running transaction, not its
        newest, so a writer that began before a snapshot and committed after it is read again
        next time, never skipped; rows read twice are simply replaced again.
        """
        from psycopg import sql

        if not _ARROW_TYPES:
            _arrow_types()
        excluded = exclude | _BOOKKEEPING

        def body(connection: psycopg.Connection[Any]) -> CatalogChanges:
            schema = {"schema": self.schema}
            asked: list[tuple[str, Mapping[str, Any] | None]] = [
                ("position", None),
                ("pruned_through", None),
                ("tables", schema),
                ("primary_keys", schema),
                ("tracked_tables", schema),
            ] + ([("deletions_since", {"since": since})] if since is not None else [])
            # One round trip for these (a query's snapshot paid one per statement).
            with connection.pipeline():
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursors = {
                    name: connection.execute(_statement("snapshot.sql", name), params)
                    for name, params in asked
                }
                rows: dict[str, list[Any]] = {
                    name: cursor.fetchall() for name, cursor in cursors.items()
                }
            watermark, next_id = rows["position"][0]
            names = [row[0] for row in rows["tables"] if row[0] not in excluded]
            keys = {table: tuple(columns) for table, columns in rows["primary_keys"]}
            tracked = {row[0] for row in rows["tracked_tables"]}
            # xmin is 32 bits and wraps: compared by age, exact while since is < 2^31 old. A
            # position ahead of the server's (a cluster restored from a dump) is not trusted.
            # Notes it needs dropped by GC (tidy): the tables are read whole instead.
            (pruned_through,) = rows["pruned_through"][0]
            fresh = (
                since is None
                or not 0 <= next_id - since <= _XMIN_HORIZON
                or since <= pruned_through
            )
            deleted: dict[str, list[tuple[str, ...]]] = {}
            if not fresh:
                for table, values in rows["deletions_since"]:
                    if values is None:
                        tracked.discard(table)  # truncated: copied whole
                    else:
                        deleted.setdefault(table, []).append(tuple(values))
            replaced, changed = {}, {}
            incremental = [name for name in names if not fresh and name in tracked and name in keys]
            since_xid = {"since": str((since or 0) % (1 << 32))}
            newer = sql.SQL(" WHERE age(xmin) <= age(%(since)s::text::xid)")
            touched = set(deleted)
            if incremental:  # one round trip finds the tables with new rows
                probe = sql.SQL(" UNION ALL ").join(
                    sql.SQL("SELECT {} WHERE EXISTS (SELECT FROM {}{})").format(
                        sql.Literal(name), sql.Identifier(name), newer
                    )
                    for name in incremental
                )
                touched.update(row[0] for row in connection.execute(probe, since_xid))
            for name in names:  # names come from the server's own listing
                everything = sql.SQL("SELECT * FROM {}").format(sql.Identifier(name))
                if name not in incremental:
                    replaced[name] = _arrow_table(connection.execute(everything))
                elif name in touched:
                    changed[name] = _arrow_table(connection.execute(everything + newer, since_xid))
            return CatalogChanges(
                watermark=int(watermark),
                replaced=replaced,
                changed=changed,
                deleted={name: deleted.get(name, []) for name in changed},
                keys={name: keys[name] for name in changed},
            )

        return self._transact("snapshot", body, idempotent=True)

    def tidy(self, older_than: float) -> None:
        """Drop the deletion notes older than ``older_than`` seconds (``changes_since`` reads
        whole the tables of a snapshot older than the newest note dropped)."""
        self.write("snapshot.sql", "prune_deletions", {"older_than": older_than})


# -- helpers ---------------------------------------------------------------------------------------

_abandoned: list[Any] = []  # connections inherited over a fork: never closed by the child
_catalogs: weakref.WeakSet[PostgresCatalog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for catalog in list(_catalogs):
        catalog._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _arrow_table(cursor: psycopg.Cursor[Any]) -> Any:
    """A query's rows as a ``pyarrow.Table`` with the columns' own types (even when empty)."""
    import pyarrow as pa

    columns = list(cursor.description or ())
    rows = cursor.fetchall()
    return pa.table(
        {
            column.name: pa.array([row[i] for row in rows], _ARROW_TYPES.get(column.type_code))
            for i, column in enumerate(columns)
        }
    )


def _rows(cursor: psycopg.Cursor[Any]) -> Rows:
    if cursor.description is None:
        return Rows()
    return Rows(cursor.fetchall(), [column.name for column in cursor.description])


def _statement_in(
    connection: psycopg.Connection[Any],
    filename: str,
    name: str,
    params: Mapping[str, Any] | None = None,
) -> Rows:
    return _rows(connection.execute(_statement(filename, name), params))


def _close_quietly(connection: Any, pid: int) -> None:
    if os.getpid() == pid:
        with contextlib.suppress(Exception):
            connection.close()


def _default_application_name() -> str:
    """Who this process is, for pg_stat_activity and lock timeouts (pid first: the server
    keeps 63 bytes)."""
    return f"jules_cache pid {os.getpid()} on {socket.gethostname()}"


def _address(dsn: str) -> str:
    """``host:port/database`` of a DSN, never its password (for messages)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(dsn)
    except Exception:  # psycopg missing or a malformed DSN: connect() reports it
        return "(unparsed DSN)"
    host = parts.get("host") or parts.get("hostaddr") or os.environ.get("PGHOST", "localhost")
    port = parts.get("port") or os.environ.get("PGPORT", "5432")
    database = parts.get("dbname") or os.environ.get("PGDATABASE", "")
    return f"{host}:{port}/{database}"
