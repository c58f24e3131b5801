"""The building blocks of a shared cache against real servers: S3 objects (SeaweedFS) with
conditional PUT, and the PostgreSQL catalog with its cross-process advisory key locks.

Processes are spawned (never forked: Polars deadlocks in forked children); each holds its own
connections, as separate hosts would.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import signal
import socket
import time
from datetime import timedelta

import polars as pl
import pytest
from helpers import catalog_key as _key
from helpers import catalog_row as _row
from helpers import join_all
from helpers import naive_utc_now as _now

from jules_cache.errors import (
    InvalidInput,
    LockTimeout,
    ManifestError,
    ServiceUnavailable,
    StoreError,
)
from jules_cache.storage.catalog import entries
from jules_cache.storage.postgres_catalog import PostgresCatalog, lock_id
from jules_cache.storage.s3_objects import S3ObjectStore, parse_s3_url

pytestmark = pytest.mark.shared
ROOT = "s3://bucket/test"  # the root the catalogs of these tests are bound to (as conftest's)

SPAWN = multiprocessing.get_context("spawn")
JOIN_TIMEOUT = 120
ALL = {"feature": None, "symbol": None, "since": None}  # list_entries: every entry


def _closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- S3 objects -------------------------------------------------------------------------------


def test_conditional_put_refuses_a_second_writer(objects):
    name = "objects/ab/" + "ab" * 16 + ".parquet"
    assert objects.put_if_absent(name, b"first", metadata={"jules-key": "ab" * 16})
    assert not objects.put_if_absent(name, b"second writer")
    assert objects.get(name) == b"first"
    info = objects.head(name)
    assert info is not None
    assert (info.size, info.metadata) == (5, {"jules-key": "ab" * 16})


def test_conditional_put_from_a_file(objects, tmp_path):
    source = tmp_path / "result.parquet"
    source.write_bytes(b"x" * 100_000)
    assert objects.put_if_absent("objects/cd/file", source)
    assert not objects.put_if_absent("objects/cd/file", str(source))
    assert objects.get("objects/cd/file") == b"x" * 100_000


def _put_racer(store: S3ObjectStore, name: str, worker: int, barrier, results) -> None:
    barrier.wait()
    results.put((worker, store.put_if_absent(name, f"written by {worker}".encode())))


def test_racing_processes_one_conditional_put_wins(objects):
    name = "objects/ef/raced"
    barrier, results = SPAWN.Barrier(6), SPAWN.Queue()
    processes = [
        SPAWN.Process(target=_put_racer, args=(objects, name, worker, barrier, results))
        for worker in range(6)
    ]
    for process in processes:
        process.start()
    outcomes = dict(results.get(timeout=JOIN_TIMEOUT) for _ in processes)
    assert join_all(processes, JOIN_TIMEOUT) == [0] * 6
    winners = [worker for worker, wrote in outcomes.items() if wrote]
    assert len(winners) == 1, outcomes
    assert objects.get(name) == f"written by {winners[0]}".encode()


def test_a_missing_object_is_none(objects):
    assert objects.get("objects/00/missing.parquet") is None
    assert objects.head("objects/00/missing.parquet") is None


def test_list_is_scoped_to_the_prefix_and_delete_removes(objects, services):
    sibling = S3ObjectStore(objects.url + "x", endpoint_url=services.s3_endpoint)  # t-...x
    try:
        assert sibling.put_if_absent("objects/aa/other", b"not mine")
        for i in range(3):
            assert objects.put_if_absent(f"objects/{i:02x}/k{i}", b"z" * (i + 1))
        assert objects.put_if_absent("locks/k0", b"")
        listed = list(objects.list())
        assert [(name, size) for name, size, _ in listed] == [
            ("locks/k0", 0),
            ("objects/00/k0", 1),
            ("objects/01/k1", 2),
            ("objects/02/k2", 3),
        ]
        assert all(abs(when - _now()) < timedelta(minutes=10) for _, _, when in listed)
        assert [name for name, _, _ in objects.list("objects/")] == [
            "objects/00/k0",
            "objects/01/k1",
            "objects/02/k2",
        ]
        objects.delete(["objects/00/k0", "objects/01/k1", "objects/ff/never-existed"])
        assert [name for name, _, _ in objects.list()] == ["locks/k0", "objects/02/k2"]
        assert sibling.get("objects/aa/other") == b"not mine"
    finally:
        sibling.delete(name for name, _, _ in sibling.list())


def test_listing_folders_in_parallel_gives_what_list_gives(objects, services):
    sibling = S3ObjectStore(objects.url + "x", endpoint_url=services.s3_endpoint)  # t-...x
    try:
        assert sibling.put_if_absent("objects/01/theirs", b"not mine")
        for i in range(40):
            assert objects.put_if_absent(f"objects/{i % 5:02x}/k{i:03d}", b"z" * i)
        assert objects.put_if_absent("objects/01/deeper/k", b"d")
        assert objects.put_if_absent("objects/k-outside", b"")
        folders = [f"objects/{i:02x}/" for i in range(256)]
        expected = [item for folder in folders for item in objects.list(folder)]
        assert len(expected) == 41
        assert list(objects.list_each(reversed(folders))) == expected  # same sizes and times
        assert list(objects.list_frame(folders).iter_rows()) == expected
        assert list(objects.list_each([])) == []
        assert objects.list_frame([]).columns == ["name", "size", "last_modified"]
        with pytest.raises(InvalidInput, match="folder"):
            list(objects.list_each(["objects/0"]))
    finally:
        sibling.delete(name for name, _, _ in sibling.list())


def test_delete_in_batches_of_a_thousand(objects):
    names = [f"objects/{i % 256:02x}/n{i}" for i in range(1_005)]
    for name in names:
        objects.put_if_absent(name, b"")
    objects.delete(names)
    assert list(objects.list()) == []


def test_endpoint_and_credentials_come_from_the_standard_aws_variables(services, s3_url):
    assert os.environ["AWS_ENDPOINT_URL"] == services.s3_endpoint
    store = S3ObjectStore(s3_url)  # nothing but the environment
    assert store.endpoint_url == services.s3_endpoint
    assert store.put_if_absent("objects/aa/env", b"ok")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get("objects/aa/env") == b"ok"


def test_a_key_pair_in_the_environment_lists_without_making_the_client(
    services, s3_url, monkeypatch
):
    store = S3ObjectStore(s3_url)  # credentials from the environment, as boto3's chain finds them
    assert store.put_if_absent("objects/aa/env", b"ok")
    fresh = S3ObjectStore(s3_url)
    assert [name for name, _, _ in fresh.list_each(["objects/aa/"])] == ["objects/aa/env"]
    assert fresh._client is None  # no botocore client (nor its imports) for a listing
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(ServiceUnavailable, match="bad signature"):
        list(S3ObjectStore(s3_url).list_each(["objects/aa/"]))


def test_arrow_filesystem_reads_a_parquet_object_with_pushdown(objects):
    import pyarrow.dataset as ds

    frame = pl.DataFrame({"symbol": ["AAPL", "MSFT"] * 500, "x": range(1_000)})
    buffer = io.BytesIO()
    frame.write_parquet(buffer, row_group_size=100)
    assert objects.put_if_absent("objects/12/frame.parquet", buffer.getvalue())
    dataset = ds.dataset(
        objects.arrow_path("objects/12/frame.parquet"),
        filesystem=objects.arrow_filesystem(),
        format="parquet",
    )
    table = dataset.to_table(columns=["x"], filter=ds.field("symbol") == "MSFT")
    assert table.column("x").to_pylist() == list(range(1, 1_000, 2))


def test_stores_share_parsed_service_models_and_keep_their_arrow_filesystem(objects, s3_url):
    other = S3ObjectStore(s3_url + "-other")
    assert other.get("objects/00/none") is None  # both clients made
    assert objects.get("objects/00/none") is None
    loader = objects._session.get_component("data_loader")
    assert other._session.get_component("data_loader") is loader
    assert objects.arrow_filesystem() is objects.arrow_filesystem()


@pytest.mark.parametrize(
    "value",
    [
        "2024-03-01T12:00:00.000Z",  # ListObjectsV2
        "2024-03-01T12:00:00Z",
        "2024-03-01T12:00:00.123456+02:00",
        "Fri, 01 Mar 2024 12:00:00 GMT",  # Last-Modified header
        "1709294400",  # epoch seconds: never read as a basic-format ISO date
    ],
)
def test_response_timestamps_parse_as_botocore_parses_them(value):
    utils = pytest.importorskip(
        "botocore.utils", reason='botocore is not installed (pip install "jules-cache[shared]")'
    )
    parse_timestamp = utils.parse_timestamp

    from jules_cache.storage.s3_objects import _parse_timestamp

    assert _parse_timestamp(value) == parse_timestamp(value)


@pytest.mark.parametrize(
    "name", ["", "/abs", "a/../b", "a//b", "./a", "a\\b"], ids=lambda n: repr(n)
)
def test_bad_object_names_are_refused(objects, name):
    with pytest.raises(InvalidInput):
        objects.get(name)


@pytest.mark.parametrize("url", ["s3:/x", "http://bucket/p", "s3://B/p", "s3://bucket/a/../b"])
def test_bad_s3_urls_are_refused(url):
    with pytest.raises(InvalidInput, match="s3"):
        parse_s3_url(url)


def test_s3_down_is_service_unavailable_naming_it(s3_url):
    port = _closed_port()
    store = S3ObjectStore(s3_url, endpoint_url=f"http://127.0.0.1:{port}", lock_timeout=1)
    for call in (
        lambda: store.get("objects/aa/x"),
        lambda: store.put_if_absent("a", b""),
        lambda: list(store.list_each([f"objects/{i:02x}/" for i in range(256)])),
    ):
        with pytest.raises(ServiceUnavailable) as raised:
            call()
        message = str(raised.value)
        assert raised.value.service == "S3"
        assert f"127.0.0.1:{port}" in message
        assert "AWS_ENDPOINT_URL" in message  # says what to check


def test_refused_credentials_and_missing_bucket_are_service_unavailable(services, s3_url):
    stranger = S3ObjectStore(
        s3_url, endpoint_url=services.s3_endpoint, access_key="nobody", secret_key="wrong"
    )
    with pytest.raises(ServiceUnavailable, match="access key"):
        stranger.get("objects/aa/x")
    with pytest.raises(ServiceUnavailable, match="access key"):
        list(stranger.list_each(["objects/aa/"]))
    missing = S3ObjectStore("s3://no-such-bucket-here/p", endpoint_url=services.s3_endpoint)
    with pytest.raises(ServiceUnavailable, match="no such bucket"):
        missing.put_if_absent("objects/aa/x", b"")
    with pytest.raises(ServiceUnavailable, match="no such bucket"):  # never "no objects"
        list(missing.list_each(["objects/aa/"]))


# -- the PostgreSQL catalog: rows ---------------------------------------------------------------


# -- the PostgreSQL catalog: schema -------------------------------------------------------------


def _migrator(dsn: str, schema: str, barrier, results) -> None:
    barrier.wait()
    with PostgresCatalog(dsn, schema=schema, root=ROOT) as catalog:
        results.put(catalog.migrate())


def test_first_connections_racing_migrate_once(services, pg_schema):
    barrier, results = SPAWN.Barrier(6), SPAWN.Queue()
    processes = [
        SPAWN.Process(target=_migrator, args=(services.pg_dsn, pg_schema, barrier, results))
        for _ in range(6)
    ]
    for process in processes:
        process.start()
    versions = [results.get(timeout=JOIN_TIMEOUT) for _ in processes]
    assert join_all(processes, JOIN_TIMEOUT) == [0] * 6
    with PostgresCatalog(services.pg_dsn, schema=pg_schema, root=ROOT) as catalog:
        applied = catalog.read("schema.sql", "current_version")
        rows = catalog._run("count", lambda c: c.execute("SELECT count(*) FROM schema_version"))
        assert versions == [applied[0][0]] * 6
        assert rows.fetchone() == (applied[0][0],)  # each migration recorded once


def test_a_catalog_newer_than_the_library_is_refused(services, catalog, pg_schema):
    catalog.migrate()
    catalog.write("schema.sql", "record_version", {"version": 99, "applied_at": _now()})
    newer = PostgresCatalog(services.pg_dsn, schema=pg_schema, root=ROOT)
    with pytest.raises(ManifestError, match="upgrade jules_cache"):
        entries(newer, "list_entries", ALL)
    newer.close()


def test_schema_names_are_plain_identifiers(services):
    with pytest.raises(InvalidInput, match="schema"):
        PostgresCatalog(services.pg_dsn, schema='x"; DROP TABLE entries; --', root=ROOT)


# -- advisory key locks ---------------------------------------------------------------------------


def _hold_forever(catalog: PostgresCatalog, key: str, ready) -> None:
    with catalog.key_lock(key, timeout=10):
        ready.set()
        time.sleep(600)


def test_a_killed_holders_lock_passes_to_the_next_process(catalog):
    key = _key(42)
    ready = SPAWN.Event()
    holder = SPAWN.Process(target=_hold_forever, args=(catalog, key, ready))
    holder.start()
    try:
        assert ready.wait(JOIN_TIMEOUT)
        with pytest.raises(LockTimeout) as raised, catalog.key_lock(key, timeout=0.3):
            pass
        message = str(raised.value)
        assert key in message
        assert f"pid {holder.pid}" in message  # the holder's application name
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(JOIN_TIMEOUT)
        with catalog.key_lock(key, timeout=10):  # the server freed it with the session
            pass
    finally:
        if holder.is_alive():
            holder.kill()


def test_lock_ids_are_per_cache_and_signed_64_bit():
    assert lock_id("a", "k") != lock_id("b", "k")
    ids = [lock_id("jules_cache", _key(i)) for i in range(2_000)]
    assert len(set(ids)) == len(ids)
    assert all(-(2**63) <= i < 2**63 for i in ids)
    assert min(ids) < 0 < max(ids)


# -- the PostgreSQL catalog: service down, connection lost -------------------------------------


def test_postgres_down_is_service_unavailable_naming_it():
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[shared]'")
    port = _closed_port()
    catalog = PostgresCatalog(
        f"postgresql://jules:sekrit-pw@127.0.0.1:{port}/cache", root=ROOT, lock_timeout=2
    )
    with pytest.raises(ServiceUnavailable) as raised:
        entries(catalog, "list_entries", ALL)
    message = str(raised.value)
    assert raised.value.service == "PostgreSQL"
    assert f"127.0.0.1:{port}/cache" in message
    assert "sekrit-pw" not in message
    assert "running and reachable" in message
    with pytest.raises(ServiceUnavailable), catalog.key_lock(_key(1), timeout=1):
        pass


def test_a_wrong_password_is_service_unavailable(services):
    dsn = services.pg_dsn.replace("@", "x@", 1)  # append to the password
    with pytest.raises(ServiceUnavailable, match="password authentication failed"):
        entries(PostgresCatalog(dsn, root=ROOT), "list_entries", ALL)


def _terminate_sessions(dsn: str, application_name: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        ).fetchall()
    return len(rows)


def test_a_lost_connection_is_replaced_without_losing_or_doubling_writes(services, pg_schema):
    name = f"jules_cache test {pg_schema}"
    catalog = PostgresCatalog(services.pg_dsn, schema=pg_schema, root=ROOT, application_name=name)
    catalog.publish(_row(_key(1)))
    assert _terminate_sessions(services.pg_dsn, catalog.application_name) == 1
    assert [e.key for e in entries(catalog, "list_entries", ALL)] == [_key(1)]  # reconnects
    assert _terminate_sessions(services.pg_dsn, catalog.application_name) == 1
    catalog.flush_counts(hits={_key(1): (1, _now())})  # BEGIN failed: retried once
    (entry,) = entries(catalog, "list_entries", ALL)
    assert entry.hit_count == 1
    assert _terminate_sessions(services.pg_dsn, catalog.application_name) == 1
    with catalog.key_lock(_key(2), timeout=5):
        pass
    catalog.close()


def test_catalog_errors_that_are_not_the_service_are_manifest_errors(catalog):
    with pytest.raises(ManifestError, match="publish failed"):
        catalog.publish(_row(_key(1), rows="not a number"))
    assert entries(catalog, "list_entries", ALL) == []  # rolled back, connection still usable
    with pytest.raises(StoreError):  # ServiceUnavailable is a StoreError (strict mode)
        raise ServiceUnavailable("S3", "x", "y", "z")
