"""The objects of a shared cache: result files under ``s3://bucket/prefix`` on any S3 API server.

Objects are written once, straight to their final, key-derived name, with a conditional PUT
(``If-None-Match: *``): the server refuses a second writer (412), so no reader ever sees a
partial or replaced object, and no temp name or rename is needed. A missing object is a miss
(``get`` returns None). Objects are named relative to the prefix (``objects/ab/<key>.parquet``).

Where the server is and who we are come from the standard AWS settings, as boto3 reads them:

- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``: an S3-compatible server (MinIO, SeaweedFS,
  Ceph, ...), e.g. ``http://127.0.0.1:8333``; unset means AWS itself. Path-style addressing is
  used with a custom endpoint.
- ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``), or
  ``AWS_PROFILE`` and the rest of boto3's credential chain.
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (default ``us-east-1``).

Each can also be given to the constructor, which wins. One boto3 client per store, created on
first use and shared by threads (boto3 clients are thread-safe). Its botocore session is the
store's own (credentials resolved as boto3 would), but the service models it parses are shared
by every store of the process (``_data_loader``): a client on a fresh loader costs ~65 ms of
JSON parsing (~0.9 s each when 8 processes start at once on 2 cores, bench_shared.py), one on
the shared loader ~10 ms. Timestamps in responses are parsed by ``_parse_timestamp`` (ISO 8601
by ``datetime.fromisoformat``): dateutil's parser was half the CPU of listing objects for GC.

Hits GET with boto3, measured against pyarrow's S3FileSystem (benchmarks/bench_shared_raw.py,
SeaweedFS on 127.0.0.1, two runs): a 10k x 8 lz4 object (0.55 MB) 2.6-4.2 ms p50 with boto3
against 2.4-3.8 ms with pyarrow (within noise); a 1M-row object (55 MB) 93-112 ms against
125-126 ms. boto3 also answers a miss in one request (pyarrow HEADs first), and checks the CRC32
the PUT stored on every GET, so a corrupted object is an error, never a silently wrong frame
(that check costs ~0.5 ms at 10k rows, ~18 ms at 1M).

``arrow_filesystem()`` gives a pyarrow ``S3FileSystem`` on the same server and credentials, for
DuckDB/pyarrow datasets (filter and column pushdown).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlparse

from jules_cache.errors import InvalidInput, ServiceUnavailable, StoreError
from jules_cache.storage.objects import ObjectInfo

if TYPE_CHECKING:
    import polars as pl
    import pyarrow.fs

DEFAULT_REGION = "us-east-1"
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
LIST_THREADS = 16  # folders listed at once by list_each (the server does most of the work)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")  # fullmatch only
# AWS's "safe characters" for key names, plus '=' (hive-style folders); fullmatch only.
_PREFIX_PART = re.compile(r"[A-Za-z0-9!_.*'()=\-]+")
_EPOCH = datetime(1970, 1, 1)  # naive UTC, as listed times are
S3_WAIT_FLOOR = 6.0  # seconds: the least budget a call gets, however small lock_timeout is
# Error codes that mean "this store cannot be used as configured", not "this object failed".
_UNUSABLE = {
    "AccessDenied": "access denied: check the credentials' permissions on the bucket",
    "InvalidAccessKeyId": "unknown access key: check AWS_ACCESS_KEY_ID (or the profile)",
    "SignatureDoesNotMatch": "bad signature: check AWS_SECRET_ACCESS_KEY (or the profile)",
    "NoSuchBucket": "no such bucket: create it, or check the s3:// URL",
    "InvalidToken": "bad session token: refresh the credentials",
    "ExpiredToken": "expired session token: refresh the credentials",
}
# pyarrow's names for those codes (aws-sdk-cpp's S3Errors), and for the server not answering.
_ARROW_CODE = re.compile(r"AWS Error ([A-Z_]+)")
_ARROW_UNUSABLE = {
    "ACCESS_DENIED": "AccessDenied",
    "INVALID_ACCESS_KEY_ID": "InvalidAccessKeyId",
    "SIGNATURE_DOES_NOT_MATCH": "SignatureDoesNotMatch",
    "NO_SUCH_BUCKET": "NoSuchBucket",
    "INVALID_CLIENT_TOKEN_ID": "InvalidToken",
    "EXPIRED_TOKEN": "ExpiredToken",
}
_ARROW_UNREACHABLE = {
    "NETWORK_CONNECTION",
    "REQUEST_TIMEOUT",
    "SERVICE_UNAVAILABLE",
    "SLOW_DOWN",
    "INTERNAL_FAILURE",
}
_SERVER_TROUBLE = {"InternalError", "ServiceUnavailable", "SlowDown", "503", "500", "502", "504"}
_CONNECT_ADVICE = (
    "Check that the server is running and reachable from this host, and AWS_ENDPOINT_URL "
    "(or endpoint_url=)"
)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix``); the prefix may be empty.

    The whole string is matched, never a parser's view of it: ``urlparse`` drops ``#...``,
    ``?...`` and ``;...`` and strips newlines and tabs, so ``s3://b/r/a#team2`` would be another
    cache's ``s3://b/r/a``. Refused with ``InvalidInput``: any of those, whitespace, ``%``
    escapes, and empty, ``.`` or ``..`` prefix parts. One trailing ``/`` is allowed (the same
    root).
    """
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise InvalidInput(f"{url!r} is not an s3://bucket[/prefix] URL")
    for mark, part in (("#", "a fragment"), ("?", "a query"), (";", "params")):
        if mark in url:
            raise InvalidInput(
                f"the s3:// root {url!r} has {part} ({mark}...), which URL parsers silently "
                "drop: name the bucket and prefix only, e.g. s3://bucket/team2/cache"
            )
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise InvalidInput(
            f"{bucket!r} in {url!r} is not a valid S3 bucket name (3-63 lowercase letters, "
            "digits, '.', '-')"
        )
    prefix = prefix.removesuffix("/")
    for part in prefix.split("/") if prefix else ():
        if part in (".", "..") or not _PREFIX_PART.fullmatch(part):
            raise InvalidInput(
                f"the prefix of {url!r} has the part {part!r}: use non-empty parts of letters, "
                "digits and !-_.*'()= (no '.' or '..', spaces, '%' escapes or '//')"
            )
    return bucket, prefix


def canonical_s3_url(url: str) -> str:
    """The one spelling of a root (``s3://bucket/prefix``, no trailing ``/``): what a catalog
    records and compares."""
    bucket, prefix = parse_s3_url(url)
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def s3_timeouts(lock_timeout: float) -> tuple[float, float, int]:
    """(connect timeout, read timeout, attempts) for one call of a store whose waits are
    bounded by ``lock_timeout``: ``attempts * (connect + read)`` never exceeds
    ``max(lock_timeout, S3_WAIT_FLOOR)``. botocore's defaults (60 s read, 3 attempts) held a
    call for minutes on a frozen server. The read timeout bounds each wait for bytes, not a
    whole transfer, so a large object still downloads."""
    budget = max(lock_timeout, S3_WAIT_FLOOR)
    attempts = 3 if budget >= 30 else 2
    per_attempt = budget / attempts
    connect = min(5.0, max(1.0, per_attempt / 3))
    read = min(60.0, per_attempt - connect)
    return connect, read, attempts


class S3ObjectStore:
    """The objects under one ``s3://bucket/prefix``.

    ``lock_timeout`` bounds each call's wait, retries included (``s3_timeouts``).

    Errors: ``ServiceUnavailable`` when the server cannot be reached, refuses the credentials
    or the bucket is missing; ``StoreError`` when one request fails otherwise;
    ``InvalidInput`` for a bad URL or object name.
    """

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        lock_timeout: float = 600.0,
    ):
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = canonical_s3_url(url)
        self.location = self.url
        self.endpoint_url = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        self.region = (
            region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or DEFAULT_REGION
        )
        self._credentials = (access_key, secret_key, session_token)
        self.lock_timeout = lock_timeout
        self.connect_timeout, self.read_timeout, self.attempts = s3_timeouts(lock_timeout)
        endpoint = self.endpoint_url.rstrip("/") if self.endpoint_url else "AWS S3"
        self.address = f"{endpoint}/{self.bucket}"
        self._client_lock = threading.Lock()
        self._client: Any = None
        self._client_pid = 0
        self._session: Any = None  # the client's botocore session
        self._arrow_fs: tuple[tuple[Any, ...], Any] | None = None  # (identity, filesystem)
        self._temp_dir: str | None = None  # this process's results before their PUT

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.url!r}, endpoint_url={self.endpoint_url!r})"

    # Picklable (Dask, spawned processes): the client is made anew where it is used.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_client_lock"] = None
        state["_session"] = None
        state["_arrow_fs"] = None
        state["_temp_dir"] = None  # the sender's, never the receiver's to delete
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client_lock = threading.Lock()

    # -- names -------------------------------------------------------------------------------------

    def key_of(self, name: str) -> str:
        """The S3 key of object ``name`` (relative to the prefix)."""
        if not name or name.startswith("/") or "\\" in name:
            raise InvalidInput(f"object name {name!r} must be a relative '/'-separated path")
        if any(part in ("", ".", "..") for part in name.split("/")):
            raise InvalidInput(f"object name {name!r} has an empty, '.' or '..' part")
        return f"{self.prefix}/{name}" if self.prefix else name

    def _name_of(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def where(self, name: str) -> str:
        """The ``s3://`` URL of object ``name``."""
        return f"{self.url}/{name}"

    def path(self, name: str) -> None:
        """No object is a local file: a hit GETs its bytes."""
        return None

    def new_temp_path(self, key: str) -> Path:
        """A new file in this process's private local folder: results are written there,
        then PUT."""
        if self._temp_dir is None or not os.path.isdir(self._temp_dir):
            self._temp_dir = tempfile.mkdtemp(prefix="jules_cache-shared-")
        fd, name = tempfile.mkstemp(prefix=f"{key}.", suffix=".parquet", dir=self._temp_dir)
        os.close(fd)
        return Path(name)

    def discard_temp(self, temp: Path) -> None:
        with contextlib.suppress(OSError):
            temp.unlink()

    def close(self) -> None:
        """Remove this process's local temp folder (the client stays)."""
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def arrow_path(self, name: str = "") -> str:
        """``bucket/prefix/name``: how ``arrow_filesystem()`` spells object ``name`` (or the
        prefix itself when ``name`` is empty)."""
        key = self.key_of(name) if name else self.prefix
        return f"{self.bucket}/{key}" if key else self.bucket

    # -- clients -----------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """This store's boto3 S3 client (made on first use; again after a fork)."""
        if self._client is None or self._client_pid != os.getpid():
            with self._client_lock:
                if self._client is None or self._client_pid != os.getpid():
                    self._client = self._make_client()
                    self._client_pid = os.getpid()
        return self._client

    def _make_client(self) -> Any:
        try:
            import botocore.session
            from botocore.config import Config
        except ImportError as exc:
            raise ImportError(
                f"an s3:// cache needs boto3 ({exc}): pip install 'jules-cache[shared]'"
            ) from exc

        access_key, secret_key, session_token = self._credentials
        session = botocore.session.get_session()
        session.register_component("data_loader", _data_loader(session))
        session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=_parse_timestamp
        )
        self._session = session
        config = Config(
            region_name=self.region,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"mode": "standard", "total_max_attempts": self.attempts},
            tcp_keepalive=True,
            max_pool_connections=32,  # threads of one process (e.g. a Dask worker) share it
            s3={"addressing_style": "path"} if self.endpoint_url else None,
        )
        return session.create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=session_token,
            config=config,
        )

    def arrow_filesystem(self) -> pyarrow.fs.S3FileSystem:
        """A pyarrow ``S3FileSystem`` on the same server, region and credentials (for pyarrow
        datasets and DuckDB); paths are ``arrow_path(name)``.

        The credentials are the client's (boto3's chain, resolved once, refreshed by botocore
        when they expire); a key pair in the environment, the chain's first answer, is taken
        without botocore (a GC listing then never makes the client: ~0.25 s of imports). The
        filesystem is kept and handed out again while they are the same: making one per SQL
        query cost ~6 ms, and a kept one reuses its connections.
        """
        access_key, secret_key, session_token = self._credentials
        if access_key is None and secret_key is None:
            access_key, secret_key, session_token = _environment_credentials()
        if access_key is None or secret_key is None:
            with self._translated("resolve credentials for", self.url):
                self.client  # noqa: B018 - makes the session whose credentials are used
                found = self._session.get_credentials()
                if found is not None:
                    frozen = found.get_frozen_credentials()
                    access_key, secret_key = frozen.access_key, frozen.secret_key
                    session_token = frozen.token
        identity = (os.getpid(), access_key, secret_key, session_token)
        kept = self._arrow_fs
        if kept is not None and kept[0] == identity:
            return kept[1]
        made = self._make_arrow_filesystem(access_key, secret_key, session_token)
        self._arrow_fs = (identity, made)
        return made

    def _make_arrow_filesystem(
        self, access_key: str | None, secret_key: str | None, session_token: str | None
    ) -> pyarrow.fs.S3FileSystem:
        import pyarrow.fs

        options: dict[str, Any] = {"region": self.region}
        if access_key is not None and secret_key is not None:
            options.update(access_key=access_key, secret_key=secret_key)
            if session_token:
                options["session_token"] = session_token
        else:
            options["anonymous"] = True  # no credentials anywhere: public buckets only
        if self.endpoint_url:
            parsed = urlparse(self.endpoint_url)
            options.update(
                endpoint_override=parsed.netloc + parsed.path.rstrip("/"),
                scheme=parsed.scheme or "https",
            )
        return pyarrow.fs.S3FileSystem(
            connect_timeout=self.connect_timeout,
            request_timeout=self.read_timeout,
            retry_strategy=pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=self.attempts),
            **options,
        )

    # -- errors ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, what: str, where: str) -> Iterator[None]:
        """Translate botocore's errors (the one place): unreachable, refused credentials, a
        missing bucket or a failing server are the service being unavailable; anything else
        is this request failing."""
        from botocore import exceptions as boto

        try:
            yield
        except (boto.NoCredentialsError, boto.PartialCredentialsError) as exc:
            raise ServiceUnavailable(
                "S3",
                self.address,
                f"no credentials ({exc})",
                "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
            ) from exc
        except (boto.HTTPClientError, boto.ConnectionError) as exc:
            raise ServiceUnavailable(
                "S3", self.address, f"cannot {what} {where} ({exc})", _CONNECT_ADVICE
            ) from exc
        except boto.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "?"))
            message = error.get("Message") or str(exc)
            if code in _UNUSABLE:
                raise ServiceUnavailable(
                    "S3", self.address, f"{_UNUSABLE[code]} ({code}: {message})", "Fix and retry"
                ) from exc
            if code in _SERVER_TROUBLE:
                raise ServiceUnavailable(
                    "S3",
                    self.address,
                    f"the server failed to {what} {where} ({code}: {message})",
                    "Check the server's health and logs",
                ) from exc
            raise StoreError(f"S3 could not {what} {where}: {code}: {message}") from exc
        except boto.BotoCoreError as exc:
            raise StoreError(f"S3 could not {what} {where}: {exc}") from exc

    # -- objects -----------------------------------------------------------------------------------

    def put_if_absent(
        self,
        name: str,
        data: bytes | str | os.PathLike[str],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> bool:
        """Write object ``name`` unless it exists; True if this call wrote it.

        ``data`` is the content (bytes) or a local file's path. Uses ``If-None-Match: *``:
        when another writer got there first the server answers 412 and this returns False,
        leaving that writer's object as it is. ``metadata`` becomes x-amz-meta-* headers.
        """
        from botocore.exceptions import ClientError

        key = self.key_of(name)
        extra: dict[str, Any] = {"Metadata": dict(metadata)} if metadata else {}
        with contextlib.ExitStack() as stack:
            body: bytes | IO[bytes]
            if isinstance(data, (bytes, bytearray, memoryview)):
                body = bytes(data)
            else:
                body = stack.enter_context(open(Path(data), "rb"))
            with self._translated("write", f"{self.bucket}/{key}"):
                try:
                    self.client.put_object(
                        Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*", **extra
                    )
                except ClientError as exc:
                    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                    code = exc.response.get("Error", {}).get("Code")
                    # 412: it exists. 409: another conditional write of it is in flight
                    # (AWS); either way someone else is writing this object.
                    if status in (409, 412) or code in (
                        "PreconditionFailed",
                        "ConditionalRequestConflict",
                    ):
                        return False
                    raise
        return True

    def get(self, name: str) -> bytes | None:
        """The content of object ``name``, or None if there is none (a miss)."""
        from botocore.exceptions import ClientError

        key = self.key_of(name)
        with self._translated("read", f"{self.bucket}/{key}"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            with contextlib.closing(response["Body"]) as body:
                return bytes(body.read())

    def head(self, name: str) -> ObjectInfo | None:
        """Size, time, ETag and user metadata of object ``name``, or None if there is none."""
        from botocore.exceptions import ClientError

        key = self.key_of(name)
        with self._translated("inspect", f"{self.bucket}/{key}"):
            try:
                response = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
        return ObjectInfo(
            name=name,
            size=int(response["ContentLength"]),
            last_modified=_naive_utc(response["LastModified"]),
            etag=str(response.get("ETag", "")).strip('"'),
            metadata=dict(response.get("Metadata") or {}),
        )

    def delete(self, names: Iterable[str], *, quarantine: bool = False) -> None:
        """Delete objects (a missing one is not an error), 1000 per request. A damaged object
        (``quarantine``) is deleted too: a bucket has no room of the cache's to keep it in.

        Raises ``StoreError`` listing the objects the server refused to delete.
        """
        keys = [self.key_of(name) for name in names]
        failed: list[str] = []
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            request = {"Objects": [{"Key": key} for key in batch], "Quiet": True}
            with self._translated("delete objects in", f"{self.bucket}/{self.prefix}"):
                response = self.client.delete_objects(Bucket=self.bucket, Delete=request)
            failed += [
                f"{self._name_of(error['Key'])} ({error.get('Code')}: {error.get('Message')})"
                for error in response.get("Errors", [])
            ]
        if failed:
            shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if failed[5:] else "")
            raise StoreError(f"S3 at {self.address} did not delete {len(failed)} objects: {shown}")

    def list(self, prefix: str = "") -> Iterator[tuple[str, int, datetime]]:
        """(name, size, last_modified as naive UTC) of every object whose name starts with
        ``prefix``, in name order."""
        if prefix and (prefix.startswith("/") or ".." in prefix.split("/")):
            raise InvalidInput(f"list prefix {prefix!r} must be relative, without '..'")
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        if self.prefix and not prefix:
            full = f"{self.prefix}/"
        where = f"{self.bucket}/{full}"
        with self._translated("list", where):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    yield (
                        self._name_of(item["Key"]),
                        int(item["Size"]),
                        _naive_utc(item["LastModified"]),
                    )

    def list_each(
        self, folders: Iterable[str], *, threads: int = LIST_THREADS
    ) -> Iterator[tuple[str, int, datetime]]:
        """What ``list`` gives for each of ``folders`` (``"objects/ab/"``: names ending in
        ``/``), all of it in name order, the folders listed in parallel (``list_frame``).
        Objects whose name ends in ``/`` (folder markers) are not objects here."""
        for names, sizes, micros in self._list_folders(folders, threads):
            for name, size, micro in sorted(zip(names, sizes, micros, strict=True)):
                yield name, size, _EPOCH + timedelta(microseconds=micro)

    def list_frame(self, folders: Iterable[str], *, threads: int = LIST_THREADS) -> pl.DataFrame:
        """``list_each`` as columns (``name``, ``size``, ``last_modified``: naive UTC
        microseconds), in name order: no Python object per listed object.

        GC lists 256 ``objects/xx/`` folders. One boto3 paginator spent 5.9 s of a 100k-object
        GC plan parsing XML in Python; pyarrow's ``S3FileSystem`` lists in C++ on ``threads``
        threads, each call bounded as a boto3 call is (``s3_timeouts``), and the first
        failure cancels the folders not yet started. A datetime, a tuple and a dict entry per
        object then cost as much CPU again, so the columns stay columns; polars rather than
        ``pyarrow.array`` makes them, which would import pandas (benchmarks/bench_shared_list.py,
        bench_shared_gc_plan.py).
        """
        import polars as pl

        names: builtins.list[str] = []
        sizes: builtins.list[int] = []
        micros: builtins.list[int] = []
        for folder_names, folder_sizes, folder_micros in self._list_folders(folders, threads):
            names += folder_names
            sizes += folder_sizes
            micros += folder_micros
        frame = pl.DataFrame(
            {
                "name": pl.Series(names, dtype=pl.String),
                "size": pl.Series(sizes, dtype=pl.Int64),
                "last_modified": pl.Series(micros, dtype=pl.Int64).cast(pl.Datetime("us")),
            }
        )
        return frame.sort("name")

    def _list_folders(
        self, folders: Iterable[str], threads: int
    ) -> Iterator[tuple[builtins.list[str], builtins.list[int], builtins.list[int]]]:
        """(names, sizes, microseconds since the epoch) of each folder, folders in name order
        (objects within one folder in the server's order)."""
        from concurrent.futures import ThreadPoolExecutor

        chosen = sorted(set(folders))
        for folder in chosen:
            if not folder.endswith("/") or folder == "/":
                raise InvalidInput(f"list_each takes folder names ending in '/', not {folder!r}")
            self.key_of(folder.removesuffix("/"))  # refuses '..', absolute and empty parts
        if not chosen:
            return
        filesystem = self.arrow_filesystem()
        # A pool per call: none is inherited by a forked child, none outlives the listing.
        pool = ThreadPoolExecutor(min(threads, len(chosen)), thread_name_prefix="jules-list")
        try:
            futures = [pool.submit(self._list_folder, filesystem, f) for f in chosen]
            for future in futures:
                yield future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _list_folder(
        self, filesystem: pyarrow.fs.S3FileSystem, folder: str
    ) -> tuple[builtins.list[str], builtins.list[int], builtins.list[int]]:
        import pyarrow.fs

        path = self.arrow_path(folder.removesuffix("/"))
        # Not allow_not_found: it answers [] for a missing bucket too, which GC would read as
        # "every object is gone". A missing folder raises FileNotFoundError; a bucket, OSError.
        selector = pyarrow.fs.FileSelector(path, recursive=True)
        try:
            with self._translated_arrow("list", f"{path}/"):
                found = filesystem.get_file_info(selector)
        except FileNotFoundError:
            return [], [], []
        file = pyarrow.fs.FileType.File
        found = [info for info in found if info.type == file]
        start = len(self.bucket) + 1 + (len(self.prefix) + 1 if self.prefix else 0)
        return (
            [info.path[start:] for info in found],
            [info.size for info in found],
            [info.mtime_ns // 1000 for info in found],
        )

    @contextlib.contextmanager
    def _translated_arrow(self, what: str, where: str) -> Iterator[None]:
        """Translate pyarrow's S3 errors (``OSError`` naming "AWS Error <CODE>") as
        ``_translated`` does botocore's; a missing path (FileNotFoundError) passes through."""
        try:
            yield
        except FileNotFoundError:
            raise
        except OSError as exc:
            message = str(exc)
            found = _ARROW_CODE.search(message)
            code = found.group(1) if found else ""
            if code in _ARROW_UNUSABLE:
                raise ServiceUnavailable(
                    "S3",
                    self.address,
                    f"{_UNUSABLE[_ARROW_UNUSABLE[code]]} ({message})",
                    "Fix and retry",
                ) from exc
            if code in _ARROW_UNREACHABLE:
                raise ServiceUnavailable(
                    "S3", self.address, f"cannot {what} {where} ({message})", _CONNECT_ADVICE
                ) from exc
            raise StoreError(f"S3 could not {what} {where}: {message}") from exc


_loader: Any = None
_loader_lock = threading.Lock()


def _data_loader(session: Any) -> Any:
    """The process's botocore data loader (service models, endpoints), made from the first
    session's data path; its parsed files are cached, so later clients skip the JSON."""
    global _loader
    with _loader_lock:
        if _loader is None:
            from botocore.loaders import create_loader

            _loader = create_loader(session.get_config_variable("data_path"))
        return _loader


def _environment_credentials() -> tuple[str | None, str | None, str | None]:
    """The key pair boto3's credential chain takes first (its environment provider), or
    Nones when the environment has no complete pair (the chain then goes on)."""
    access_key = os.environ.get("AWS_ACCESS_KEY_ID") or None
    secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY") or None
    if access_key is None or secret_key is None:
        return None, None, None
    token = os.environ.get("AWS_SECURITY_TOKEN") or os.environ.get("AWS_SESSION_TOKEN")
    return access_key, secret_key, token or None


def _parse_timestamp(value: str) -> datetime:
    """An S3 response's timestamp: ISO 8601 (listings) the fast way, others (RFC 1123 headers)
    as botocore parses them."""
    if len(value) > 10 and value[4] == "-" and value[10] == "T":  # 2024-03-01T12:00:00.000Z
        with contextlib.suppress(ValueError):
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)  # type: ignore[no-any-return]


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)
