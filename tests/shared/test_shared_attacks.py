"""Attacks on the shared backend's trust guarantees (a review of the s3:// root).

Each test reproduced a finding before its fix: two caches sharing one catalog schema, names that
pass a ``$`` check with a trailing newline, URL parts a parser drops, unbounded waits on a
stuck catalog session or a frozen S3 server, and removals that were not final.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import shared_backend
from shared_worker import moving_average, ticks

from jules_cache import FeatureStore, InvalidInput, LockTimeout, PartialRemoval, StoreError
from jules_cache.engine.shared import object_name
from jules_cache.errors import ServiceUnavailable
from jules_cache.storage.catalog import entries
from jules_cache.storage.postgres_catalog import PostgresCatalog
from jules_cache.storage.s3_objects import S3_WAIT_FLOOR, S3ObjectStore, parse_s3_url

pytestmark = [pytest.mark.shared, pytest.mark.attack]
MATCH_ALL = {"key": None, "feature": None, "symbol": None}  # match_entries: every entry


def _store(root: str, services, pg_schema: str, **options) -> FeatureStore:
    return FeatureStore(root, catalog=services.pg_dsn, catalog_schema=pg_schema, **options)


def _fetch(store: FeatureStore, seed: int = 1):
    return store.fetch("A", ticks(seed), {"window": 5}, moving_average, version="1")


# -- a catalog knows its root ------------------------------------------------------------------


def test_two_roots_on_one_catalog_schema_are_refused(services, s3_url, pg_schema):
    """s3://b/r/a and s3://b/r/ab on one schema: each GC would delete the other's results."""
    with _store(f"{s3_url}/a", services, pg_schema) as first:
        got = _fetch(first)
    with pytest.raises(InvalidInput) as refused:
        _store(f"{s3_url}/ab", services, pg_schema)
    message = str(refused.value)
    assert f"'{s3_url}/a'" in message and f"'{s3_url}/ab'" in message
    assert "catalog_schema" in message
    # The first cache is untouched, and reopening it (trailing slash or not) works.
    with _store(f"{s3_url}/a/", services, pg_schema) as again:
        assert _fetch(again).hit
        assert [entry.key for entry in again.entries()] == [got.key]


def test_a_catalog_binds_its_root_even_read_only(services, s3_url, pg_schema):
    with _store(f"{s3_url}/a", services, pg_schema):
        pass
    with pytest.raises(InvalidInput, match="catalog_schema"):
        _store(f"{s3_url}/b", services, pg_schema, read_only=True).entries()


# -- names are validated whole ------------------------------------------------------------------


@pytest.mark.parametrize("schema", ["victim\n", "victim\r\n", " victim", "victim "])
def test_a_schema_name_with_a_trailing_newline_is_refused(services, schema):
    with pytest.raises(InvalidInput, match="catalog schema"):
        PostgresCatalog(services.pg_dsn, schema=schema, root="s3://bucket/x")


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket\n/x",
        "s3://bucket/x\n",
        "s3://bucket/x\n/y",
        "s3://bucket/x\t",
        "s3://bucket/x y",
    ],
)
def test_a_root_with_whitespace_anywhere_is_refused(url):
    with pytest.raises(InvalidInput):
        parse_s3_url(url)


# -- URL parts a parser would drop --------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "part"),
    [("#team2", "fragment"), ("?v=2", "query"), (";p=1", "params"), ("/x?", "query")],
)
def test_a_root_with_a_query_fragment_or_params_is_refused(services, s3_url, suffix, part):
    with pytest.raises(InvalidInput, match=part):
        FeatureStore(f"{s3_url}/a{suffix}", catalog=services.pg_dsn)
    with pytest.raises(InvalidInput, match=part):
        S3ObjectStore(f"{s3_url}/a{suffix}")


@pytest.mark.parametrize("path", ["//x", "/x//y", "/./x", "/x/..", "/x/../y", "/x/%2e%2e"])
def test_a_root_with_empty_dot_or_encoded_parts_is_refused(path):
    with pytest.raises(InvalidInput):
        parse_s3_url(f"s3://bucket{path}")


def test_equal_roots_are_spelled_one_way():
    assert parse_s3_url("s3://bucket/a/b/") == parse_s3_url("s3://bucket/a/b") == ("bucket", "a/b")
    assert parse_s3_url("s3://bucket") == parse_s3_url("s3://bucket/") == ("bucket", "")


# -- every wait bounded by lock_timeout ---------------------------------------------------------


@contextlib.contextmanager
def _table_locked(services, schema: str, table: str) -> Iterator[None]:
    """Another client left inside a transaction holding ACCESS EXCLUSIVE on ``table``."""
    import psycopg

    with psycopg.connect(services.pg_dsn) as other:
        # Ended by the server after 20 s, so a test of an unbounded wait fails, not hangs.
        other.execute("SET idle_in_transaction_session_timeout = '20s'")
        other.commit()
        other.execute(f'LOCK TABLE "{schema}"."{table}" IN ACCESS EXCLUSIVE MODE')
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                other.rollback()


def test_a_stuck_catalog_session_never_blocks_a_hit(services, s3_url, pg_schema):
    with _store(s3_url, services, pg_schema, lock_timeout=2, hit_flush_seconds=0) as store:
        _fetch(store)
        store.flush()
        with _table_locked(services, pg_schema, "entries"):
            for _ in range(3):  # every hit is due a flush; each must give up at once
                started = time.monotonic()
                assert _fetch(store).hit
                assert time.monotonic() - started < 1.0
        store.flush()  # the counts kept in memory are written once the lock is gone
        assert store.entries()[0].hit_count == 3


def test_a_flush_waits_for_the_background_flush_holding_the_counts(
    services, s3_url, pg_schema, monkeypatch
):
    """A hit's background flush has taken every count out of memory and not yet put them back
    (the catalog was busy): ``flush`` waits for it instead of finding nothing to write. It
    returned at once, and the test above read a hit count of 0 under load."""
    with _store(s3_url, services, pg_schema, lock_timeout=2, hit_flush_seconds=0) as store:
        _fetch(store)
        store.flush()
        catalog = shared_backend(store).catalog
        write = catalog.flush_counts
        taken, go_on = threading.Event(), threading.Event()

        def busy_for_a_while(**counts):
            if counts["wait"]:
                return write(**counts)
            taken.set()  # the counts are out of memory, in this background flush
            go_on.wait(10)
            raise LockTimeout("the catalog's entries (a client holds them)", 0.0)

        monkeypatch.setattr(catalog, "flush_counts", busy_for_a_while)
        assert _fetch(store).hit
        assert taken.wait(10)
        release = threading.Timer(0.2, go_on.set)
        release.start()
        try:
            store.flush()
            assert store.entries()[0].hit_count == 1
        finally:
            go_on.set()
            release.cancel()


def test_a_frozen_catalog_session_never_blocks_a_hit(services, s3_url, pg_schema):
    """The server process of the store's own session stops answering (SIGSTOP: no error, no
    timeout the server could enforce): hits go on; the counts land once it answers again."""
    with _store(s3_url, services, pg_schema, lock_timeout=2, hit_flush_seconds=0) as store:
        _fetch(store)
        store.flush()
        backend_pid = shared_backend(store).catalog._connection.info.backend_pid
        os.kill(backend_pid, signal.SIGSTOP)
        thaw = threading.Timer(20, os.kill, (backend_pid, signal.SIGCONT))  # fail, never hang
        thaw.start()
        try:
            for _ in range(3):
                started = time.monotonic()
                assert _fetch(store).hit
                assert time.monotonic() - started < 1.0
        finally:
            thaw.cancel()
            os.kill(backend_pid, signal.SIGCONT)
        store.flush()
        assert store.entries()[0].hit_count == 3


def test_a_thread_waiting_for_a_frozen_session_times_out(services, s3_url, pg_schema):
    """The background flush is stuck on a stopped server process: another call of the same
    store waits for the connection no longer than a statement may run, then LockTimeout."""
    with _store(s3_url, services, pg_schema, lock_timeout=1, hit_flush_seconds=0) as store:
        _fetch(store)
        store.flush()
        backend_pid = shared_backend(store).catalog._connection.info.backend_pid
        os.kill(backend_pid, signal.SIGSTOP)
        thaw = threading.Timer(30, os.kill, (backend_pid, signal.SIGCONT))  # fail, never hang
        thaw.start()
        try:
            assert _fetch(store).hit  # its flush blocks on the stopped server
            time.sleep(0.2)
            started = time.monotonic()
            with pytest.raises(LockTimeout, match="catalog connection"):
                store.entries()
            assert time.monotonic() - started < 1 + 5 + 3
        finally:
            thaw.cancel()
            os.kill(backend_pid, signal.SIGCONT)


def test_a_child_forked_during_a_background_flush_can_use_the_catalog(services, s3_url, pg_schema):
    """The flush thread holds the catalog's connection lock when the process forks: the child
    gets fresh locks and its own connection instead of waiting for ever."""
    with _store(s3_url, services, pg_schema, lock_timeout=2, hit_flush_seconds=0) as store:
        got = _fetch(store)
        store.flush()
        catalog = shared_backend(store).catalog
        backend_pid = catalog._connection.info.backend_pid
        os.kill(backend_pid, signal.SIGSTOP)
        try:
            assert _fetch(store).hit  # starts a flush that blocks on the stopped server
            deadline = time.monotonic() + 10
            while catalog._lock.acquire(blocking=False):  # until the flush thread holds it
                catalog._lock.release()
                assert time.monotonic() < deadline, "the background flush never started"
                time.sleep(0.01)
            child = os.fork()
            if child == 0:  # pragma: no cover - the child reports by its exit status
                signal.alarm(20)  # a hang ends the child with SIGALRM, failing the test
                try:  # nothing may escape into the parent's pytest
                    listed = entries(catalog, "match_entries", {**MATCH_ALL, "key": got.key})
                    os._exit(0 if [entry.key for entry in listed] == [got.key] else 1)
                finally:
                    os._exit(2)
            _, status = os.waitpid(child, 0)
        finally:
            os.kill(backend_pid, signal.SIGCONT)
        assert os.waitstatus_to_exitcode(status) == 0


def test_a_stuck_catalog_session_makes_a_miss_time_out(services, s3_url, pg_schema):
    with _store(s3_url, services, pg_schema, lock_timeout=2, strict=True) as store:
        _fetch(store)
        with _table_locked(services, pg_schema, "entries"):
            started = time.monotonic()
            with pytest.raises(StoreError) as failed:
                store.fetch("A", ticks(2), {"window": 5}, moving_average, version="1")
            assert time.monotonic() - started < 2 * 2 + 5  # publish, then its clean-up check
        assert isinstance(failed.value.__cause__, LockTimeout)


def test_a_stuck_catalog_session_makes_remove_time_out(services, s3_url, pg_schema):
    with _store(s3_url, services, pg_schema, lock_timeout=1) as store:
        _fetch(store)
        with _table_locked(services, pg_schema, "entries"):
            started = time.monotonic()
            with pytest.raises(LockTimeout):
                store.remove(symbol="A")
            assert time.monotonic() - started < 1 + 5


@contextlib.contextmanager
def _frozen_s3(services) -> Iterator[None]:
    """SIGSTOP the SeaweedFS process of these tests' services (SIGCONT on the way out)."""
    pid_file = Path(services.state_dir) / "weed" / "pid"
    if not pid_file.is_file():
        pytest.skip("the S3 server was not started by this test run: cannot freeze it")
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        stat = Path(f"/proc/{pid}/stat")
        deadline = time.monotonic() + 10
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":  # not stopped yet
            assert time.monotonic() < deadline, "the S3 server did not stop"
            time.sleep(0.01)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_frozen_s3_server_fails_a_call_within_the_lock_timeout(services, s3_url, pg_schema):
    with _store(s3_url, services, pg_schema, lock_timeout=2) as store:
        got = _fetch(store)
        objects = shared_backend(store).objects
        with _frozen_s3(services):
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable, match="S3"):
                objects.get(object_name(got.key))
            elapsed = time.monotonic() - started
        assert elapsed < S3_WAIT_FLOOR + 3  # lock_timeout (floored at a few seconds) plus slack


def test_s3_timeouts_and_retries_fit_the_lock_timeout(s3_url):
    for lock_timeout in (0.0, 2.0, 30.0, 600.0):
        store = S3ObjectStore(s3_url, lock_timeout=lock_timeout)
        config = store.client.meta.config
        attempts = config.retries["total_max_attempts"]
        budget = max(lock_timeout, S3_WAIT_FLOOR)  # a floor of a few seconds
        assert attempts * (config.connect_timeout + config.read_timeout) <= budget
        assert config.read_timeout > 0 and config.connect_timeout > 0


# -- removal is final ---------------------------------------------------------------------------


def test_remove_never_reports_gone_what_is_still_served(services, s3_url, pg_schema):
    """Another host holds the key's lock: rm must not say "removed" and leave the object."""
    with _store(s3_url, services, pg_schema, lock_timeout=1) as store:
        got = _fetch(store)
        other = PostgresCatalog(services.pg_dsn, schema=pg_schema, root=store.root)
        entered, leave = threading.Event(), threading.Event()

        def hold() -> None:
            with other.key_lock(got.key, 5):
                entered.set()
                leave.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert entered.wait(10)
            with pytest.raises((PartialRemoval, LockTimeout)) as refused:
                store.remove(key=got.key)
        finally:
            leave.set()
            holder.join()
            other.close()
        if isinstance(refused.value, PartialRemoval):
            assert refused.value.removed == []
        # The truth: still listed, still served; a retry then removes it for good.
        assert [entry.key for entry in store.entries()] == [got.key]
        assert _fetch(store).hit
        assert [entry.key for entry in store.remove(key=got.key)] == [got.key]
        assert shared_backend(store).objects.head(object_name(got.key)) is None
        assert store.entries() == []


def test_remove_says_which_objects_it_could_not_delete(services, s3_url, pg_schema, monkeypatch):
    with _store(s3_url, services, pg_schema) as store:
        got = _fetch(store)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # S3 unreachable from here
    with _store(s3_url, services, pg_schema, lock_timeout=2) as cut_off:
        with pytest.raises(PartialRemoval) as partial:
            cut_off.remove(key=got.key)
        assert partial.value.removed == []
        assert [str(name) for name in partial.value.not_deleted] == [
            shared_backend(cut_off).result_location(got.key)
        ]
        assert [entry.key for entry in cut_off.entries()] == [got.key]  # still there


def test_a_hit_counted_before_remove_does_not_bring_the_entry_back(services, s3_url, pg_schema):
    """Regression guard: a local hit flush re-registers a row-less file; a shared one must not
    (flush_hits only updates rows)."""
    with _store(s3_url, services, pg_schema, hit_flush_seconds=3600) as store:
        _fetch(store)
        assert _fetch(store).hit  # counted in memory, not flushed
        assert len(store.remove(symbol="A")) == 1
        store.flush()
        assert store.entries() == []
