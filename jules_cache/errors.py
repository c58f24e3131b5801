"""The one exception hierarchy of jules_cache (all exported from ``jules_cache``).

    JulesCacheError
     ├── FingerprintError   (also TypeError)    an input has no stable, exact fingerprint
     ├── LockTimeout        (also TimeoutError) a lock was not acquired in time
     ├── ManifestError                          the manifest database is missing, damaged or busy
     │    ├── ManifestBusy                      another program holds the manifest file open
     │    └── ManifestDamaged                   not a readable database: check(rebuild=True)
     ├── StoreError                             storage failed (a miss raises it in strict mode)
     │    ├── PartialRemoval                    entries removed, some files could not be deleted
     │    └── ServiceUnavailable                a shared cache's PostgreSQL or S3 is unreachable
     ├── GCError                                a GC run failed (``.report`` says what it did)
     ├── InvalidInput       (also ValueError)   a bad argument: symbol, data, setting, result
     ├── UnsafePath                             a link or foreign file inside the root: untouched
     ├── QueryError                             an SQL query was refused or failed
     ├── FanoutError                            jobs of a cluster fan-out failed (``.failures``
     │                                          names each symbol; ``.results`` the others)
     ├── WorkerMismatch                         a worker's code, packages or config differ from
     │                                          the client's: the job is refused
     ├── ForkedProcess      (also RuntimeError) used in a child forked from a threaded process
     └── CorruptEntry                           not raised: a damaged cached file is quarantined
                                                and recomputed (kept so old ``except`` clauses
                                                still import)

Warnings: CacheWriteWarning (a UserWarning) when a result is returned but not stored.

Foreign errors (duckdb, OS, psycopg, botocore) are translated where they happen, with
``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: every module imports this one
    from pathlib import Path

    from jules_cache.models import Entry, GCReport


class JulesCacheError(Exception):
    """Base class of every error jules_cache raises on purpose."""


class FingerprintError(JulesCacheError, TypeError):
    """An input (data, config or code) cannot be fingerprinted exactly.

    The message names the offending path, e.g. ``config['windows'][2]``.
    """


class LockTimeout(JulesCacheError, TimeoutError):
    """A lock was not acquired within its timeout."""

    def __init__(self, lock_path: str, timeout: float, holder_pid: int | None = None):
        self.lock_path = lock_path
        self.timeout = timeout
        self.holder_pid = holder_pid
        holder = f" (held by pid {holder_pid})" if holder_pid else ""
        super().__init__(
            f"timed out after {timeout:g}s waiting for lock {lock_path}{holder}; "
            "another process is using the cache — retry later or raise lock_timeout"
        )


class ManifestError(JulesCacheError):
    """The manifest database cannot be opened, read or migrated."""


class ManifestDamaged(ManifestError):
    """``manifest.duckdb`` is not a readable DuckDB database. The result files are intact:
    ``store.check(rebuild=True)`` (``jules-cache check --rebuild``) rebuilds it from them; until
    then a store still opens and serves hits, but stores nothing new."""


class ManifestBusy(ManifestError):
    """Another program (e.g. a DuckDB shell) holds ``manifest.duckdb`` open past the timeout.

    Nothing is damaged: close that session. ``holder_pid``/``holder_program`` name it when
    DuckDB says who it is.
    """

    def __init__(self, message: str, holder_pid: int | None, holder_program: str | None):
        super().__init__(message)
        self.holder_pid = holder_pid
        self.holder_program = holder_program


class StoreError(JulesCacheError):
    """The cache's storage failed: a result could not be written (raised by a miss only with
    strict=True), a file, the manifest or a service refused an operation (an ``OSError`` or a
    storage library's error, translated where storage is implemented: ``__cause__`` is it),
    or (``PartialRemoval``) entries could not be removed whole."""


class PartialRemoval(StoreError):
    """``remove`` could not remove every entry whole (``engine.removal``).

    ``removed`` lists the entries removed; ``not_deleted`` the objects whose entries were kept
    (still listed and served: a path or an ``s3://`` URL) and the files removed entries left
    (SQL view links).
    """

    def __init__(self, message: str, removed: Sequence[Entry], not_deleted: Sequence[Path | str]):
        super().__init__(message)
        self.removed = removed
        self.not_deleted = not_deleted


class ServiceUnavailable(StoreError):
    """A service of a shared cache (the PostgreSQL catalog or the S3 object store) cannot be
    reached or refused the request: ``service`` names it, ``address`` says where (never with a
    password), and the message says what to check."""

    def __init__(self, service: str, address: str, problem: str, advice: str):
        self.service = service
        self.address = address
        super().__init__(f"{service} at {address} is unavailable: {problem}. {advice}")


class GCError(JulesCacheError):
    """A GC run failed part-way; ``report`` (a ``GCReport``) says what it did delete."""

    def __init__(self, message: str, report: GCReport):
        super().__init__(message)
        self.report = report


class CorruptEntry(JulesCacheError):
    """A cached file is truncated, unreadable or does not match its manifest row."""


class InvalidInput(JulesCacheError, ValueError):
    """An argument is unusable: a bad symbol, unsupported data, a bad setting or result."""


class UnsafePath(JulesCacheError):
    """Something inside the root is a symbolic link, not a regular file or folder, or on another
    device: the library refuses to follow or touch it (see ``jules_cache.storage.rootfs``)."""


class QueryError(JulesCacheError):
    """An SQL query over the cache was refused (not read-only) or failed; says what to fix."""


class FanoutError(JulesCacheError):
    """Jobs of a ``compute_many`` fan-out failed; the others finished and are in the cache.

    ``failures`` holds one ``JobFailure`` (index, symbol, error, worker, traceback text) per
    failed job, in job order; ``results`` is the full list the call would have returned, with
    None where a job failed.
    """

    def __init__(self, message: str, failures: list[object], results: list[object]):
        super().__init__(message)
        self.failures = failures
        self.results = results


class WorkerMismatch(JulesCacheError):
    """A worker sees other code, package versions or config than the client that sent the job.

    Its result would be stored under the client's key without being what that key describes (a
    false hit for everyone later), so the job is refused. Install the same code and packages on
    every worker, or pass ``version=`` to key the code by an explicit version.
    """


class ForkedProcess(JulesCacheError, RuntimeError):
    """The store is used in a child forked from a process that ran threads: use ``spawn``."""


class CacheWriteWarning(UserWarning):
    """A computed result was returned but could not be stored in the cache."""
