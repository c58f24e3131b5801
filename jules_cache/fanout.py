"""Fan one feature out over a Dask cluster: many symbols (or days) through one cache, one call.

    from jules_cache.fanout import compute_many
    frames = compute_many("data/feature_cache", make_bars,
                          {"AAPL": "ticks/AAPL.parquet", "MSFT": "ticks/MSFT.parquet"},
                          config={"freq": "1m"})

Each job is ``FeatureStore(root, **store_options).fetch(symbol, data, config, compute_func)``
run in a worker process of a ``dask.distributed`` cluster (a throwaway ``LocalCluster`` on
127.0.0.1 unless ``client=`` names one), so every job goes through the cache: a result some
process already computed is read, not recomputed, and what a worker computes is a hit for every
later call anywhere. The store is opened once per worker process and reused; after the run each
worker's hit counters are flushed so ``stats()`` sees them.

The key a worker uses must be the key the client would use, or a local ``get_or_compute`` after a
fan-out would miss. Data and config are fingerprinted by content on the worker (same bytes, same
key). Code is the hard part: cloudpickle ships a function defined in ``__main__``, a notebook or
inside another function BY VALUE, with no source, so the worker cannot fingerprint it; and a
function from an importable module is shipped BY NAME, so the worker runs ITS installed copy,
which may differ from the client's. So the client fingerprints the code (as a local call would),
and each worker checks, once per run, that what it will run is what that fingerprint describes:
the same config, the same versions of the third-party packages the code refers to, and the same
own digest for every function of your modules that it runs by name (``WorkerMismatch`` lists what
differs). Code shipped by value is the client's own code objects. The worker then uses the
client's code fingerprint (``fingerprints.code.adopt_fingerprint``) when it cannot reproduce it.

Requires ``pip install "jules-cache[shared]"`` (dask[distributed]); dask is imported only here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TextIO, overload

import polars as pl
import xxhash

from jules_cache import _fanout_worker
from jules_cache._fanout_worker import JobOutcome, Shipment
from jules_cache.errors import CacheWriteWarning, FanoutError, InvalidInput
from jules_cache.fingerprints.keys import validate_symbol
from jules_cache.options import StoreOptions
from jules_cache.roots import resolve_root
from jules_cache.store import FeatureStore

if TYPE_CHECKING:
    import distributed

    from jules_cache.store import ComputeFunc

_log = logging.getLogger("jules_cache")
_MAX_LISTED = 20  # failures named in a FanoutError message (all are in .failures)


@dataclass(frozen=True)
class JobFailure:
    """One failed job of a fan-out (``FanoutError.failures``)."""

    index: int
    symbol: str
    error: BaseException
    traceback: str  # the worker-side traceback, formatted

    def __str__(self) -> str:
        return f"#{self.index} {self.symbol}: {type(self.error).__name__}: {self.error}"


# --------------------------------------------------------------------------- the client side


@overload
def compute_many(
    root: str | os.PathLike[str],
    compute_func: ComputeFunc,
    jobs: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    config: Any,
    name: str | None = None,
    version: str | None = None,
    client: distributed.Client | None = None,
    n_workers: int | None = None,
    collect: Literal[True] = True,
    progress: bool | None = None,
    store_options: StoreOptions | Mapping[str, Any] | None = None,
) -> list[pl.DataFrame]: ...


@overload
def compute_many(
    root: str | os.PathLike[str],
    compute_func: ComputeFunc,
    jobs: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    config: Any,
    name: str | None = None,
    version: str | None = None,
    client: distributed.Client | None = None,
    n_workers: int | None = None,
    collect: Literal[False],
    progress: bool | None = None,
    store_options: StoreOptions | Mapping[str, Any] | None = None,
) -> list[JobOutcome]: ...


def compute_many(
    root: str | os.PathLike[str],
    compute_func: ComputeFunc,
    jobs: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    config: Any,
    name: str | None = None,
    version: str | None = None,
    client: distributed.Client | None = None,
    n_workers: int | None = None,
    collect: bool = True,
    progress: bool | None = None,
    store_options: StoreOptions | Mapping[str, Any] | None = None,
) -> list[pl.DataFrame] | list[JobOutcome]:
    """Compute ``compute_func`` for every ``(symbol, data)`` job on a Dask cluster, through the
    cache at ``root``; return the frames in job order (``collect=False``: a ``JobOutcome`` per
    job, and results stay in the cache only).

    Args:
        root: the cache root every worker opens with ``store_options``, read here as
            ``FeatureStore`` reads it (a relative local path is made absolute; an
            ``s3://`` root is passed as is; None means ``$JULES_CACHE_ROOT``...).
        compute_func: ``(lazy_frame, config) -> frame``, as for ``get_or_compute``, or a
            ``@store.feature`` (its function, name and version are used).
        jobs: ``{symbol: data}`` or an iterable of ``(symbol, data)`` pairs (a symbol may repeat,
            e.g. one job per day). ``data`` is what the worker reads: Parquet path(s), readable
            under the same name on every worker, are the cheap thing to send; frames (Polars,
            pyarrow, pandas) are scattered to the workers.
        config, name, version: as for ``get_or_compute``; one config for every job.
        client: a ``distributed.Client`` of an existing cluster, e.g.
            ``Client("tcp://scheduler:8786")``. None: start a ``LocalCluster`` of ``n_workers``
            spawned single-threaded worker processes on 127.0.0.1 (dashboard on a free
            127.0.0.1 port) and close it afterwards.
        progress: a progress line on stderr; None (default): only when stderr is a terminal.
        store_options: a ``StoreOptions`` (or a dict of ``FeatureStore`` keyword arguments)
            for the stores on the workers; checked here, before anything is sent.

    Raises:
        FingerprintError, InvalidInput: before anything is sent, as ``get_or_compute`` would.
        FanoutError: one or more jobs failed; it names every failed symbol with its error
            (``.failures``), the others are in the cache and in ``.results``.
    """
    func, name, version = _unwrap_feature(compute_func, name, version)
    root = _root_for_workers(root)
    options = _store_options(store_options)
    job_list = _job_list(jobs)
    _require(isinstance(collect, bool), f"collect must be True or False, not {collect!r}")
    _require(
        progress is None or isinstance(progress, bool),
        f"progress must be None, True or False, not {progress!r}",
    )
    _require(
        n_workers is None
        or (isinstance(n_workers, int) and not isinstance(n_workers, bool) and n_workers >= 1),
        f"n_workers must be a positive int, not {n_workers!r}",
    )
    _require(
        client is None or n_workers is None,
        "n_workers sizes the throwaway cluster started when client is None; size an existing "
        "cluster where it is started (e.g. `dask worker --nworkers`)",
    )
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InvalidInput(f"name must be a non-empty str, not {name!r}")
    if version is not None and not isinstance(version, str):
        raise InvalidInput(f"version must be a str, not {type(version).__name__}")
    _require_distributed()
    shipment = Shipment.make(func, name, version, config, root, options, collect)
    if not job_list:
        return []
    blob = _fanout_worker.dumps(shipment)
    token = xxhash.xxh3_128(blob).hexdigest()
    show = sys.stderr.isatty() if progress is None else progress
    bar = _Progress(shipment.feature, len(job_list), sys.stderr, enabled=show)
    try:
        with _client_for(client, n_workers, len(job_list)) as dask_client:
            results, failures = _run(dask_client, token, blob, shipment.feature, job_list, bar)
            _flush_workers(dask_client)
    finally:
        bar.close()
    if failures:
        raise _fanout_error(shipment.feature, failures, results, len(job_list)) from (
            failures[0].error
        )
    return results


def _unwrap_feature(
    compute_func: Any, name: str | None, version: str | None
) -> tuple[Any, str | None, str | None]:
    """A ``@store.feature`` is shipped as the function it wraps (its store stays here)."""
    from jules_cache.decorator import Feature

    if isinstance(compute_func, Feature):
        return compute_func.compute_func, name or compute_func.name, version or compute_func.version
    if not callable(compute_func):
        raise InvalidInput(
            f"compute_func must be callable, not {type(compute_func).__name__}; pass a "
            "function (lazy_frame, config) -> frame"
        )
    return compute_func, name, version


def _root_for_workers(root: Any) -> str:
    """The root as every worker must spell it (a worker's working directory need not be the
    client's): what ``FeatureStore(root)`` would open here."""
    if isinstance(root, FeatureStore):
        raise InvalidInput(
            "root must be a path or URL string, not a FeatureStore; pass the root the workers "
            "open (e.g. store.root)"
        )
    return resolve_root(root).location


def _store_options(options: StoreOptions | Mapping[str, Any] | None) -> StoreOptions:
    if isinstance(options, Mapping):
        _require("root" not in options, "store_options cannot set 'root': pass it first")
        options = dict(options)
    built = StoreOptions.build(options)
    _require(not built.read_only, "store_options cannot set 'read_only': a fan-out writes")
    return built


def _job_list(jobs: Any) -> list[tuple[str, Any]]:
    """``jobs`` as a list of validated ``(symbol, data)``; local relative paths made absolute."""
    if isinstance(jobs, Mapping):
        items = list(jobs.items())
    elif isinstance(jobs, str | bytes | pl.DataFrame | pl.LazyFrame) or not isinstance(
        jobs, Iterable
    ):
        raise InvalidInput(
            f"jobs must be a {{symbol: data}} dict or an iterable of (symbol, data) pairs, not "
            f"{type(jobs).__name__}"
        )
    else:
        items = list(jobs)
    checked = []
    for index, item in enumerate(items):
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise InvalidInput(f"job #{index} must be a (symbol, data) pair, not {item!r:.80}")
        symbol, data = item
        checked.append((validate_symbol(symbol), _data_for_workers(data)))
    return checked


def _data_for_workers(data: Any) -> Any:
    if isinstance(data, str | os.PathLike):
        text = os.fspath(data)
        return text if "://" in text or os.path.isabs(text) else os.path.abspath(text)
    if (
        isinstance(data, list | tuple)
        and data
        and all(isinstance(p, str | os.PathLike) for p in data)
    ):
        return [_data_for_workers(p) for p in data]
    return data


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidInput(message)


# --------------------------------------------------------------------------- running the jobs


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401  (brings cloudpickle)
    except ImportError as exc:
        raise InvalidInput(
            'compute_many needs dask.distributed: pip install "jules-cache[shared]"'
        ) from exc


@contextlib.contextmanager
def _client_for(
    client: distributed.Client | None, n_workers: int | None, jobs: int
) -> Iterator[distributed.Client]:
    """The caller's client, or a client of a throwaway local cluster closed afterwards."""
    import dask
    import distributed

    if client is not None:
        _require(
            isinstance(client, distributed.Client),
            f"client must be a distributed.Client, not {type(client).__name__}",
        )
        _require(
            not client.asynchronous,
            "client is asynchronous; compute_many blocks: pass a synchronous Client",
        )
        yield client
        return
    workers = n_workers or max(1, min(os.cpu_count() or 1, jobs))
    # Polars deadlocks in forked children: workers are spawned whatever the user's dask config.
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}):
        cluster = distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,  # Polars uses every core of its process already
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # dask's default listens on 0.0.0.0:8787
            # A worker whose heartbeat races the scheduler's shutdown logs a traceback at
            # ERROR after a run that succeeded; job errors reach the caller as FanoutError.
            silence_logs=logging.CRITICAL,
        )
    try:
        with distributed.Client(cluster, set_as_default=False) as local_client:
            yield local_client
    finally:
        cluster.close()


def _run(
    client: distributed.Client,
    token: str,
    blob: bytes,
    feature: str,
    jobs: list[tuple[str, Any]],
    bar: _Progress,
) -> tuple[list[Any], list[JobFailure]]:
    """Submit every job, collect results as they finish; return (results, failures)."""
    from distributed import as_completed

    run = uuid.uuid4().hex[:8]
    tail = feature.rsplit(".", 1)[-1].strip("<>") or "feature"
    shipped = client.scatter(blob, hash=False)
    frames = [i for i, (_, data) in enumerate(jobs) if not _is_paths(data)]
    datas: list[Any] = [data for _, data in jobs]
    if frames:  # a frame inside a task would travel in the task graph: scatter it instead
        for i, future in zip(frames, client.scatter([datas[i] for i in frames], hash=False)):
            datas[i] = future
    futures = client.map(
        _fanout_worker.run_job,
        [token] * len(jobs),
        [shipped] * len(jobs),
        range(len(jobs)),
        [symbol for symbol, _ in jobs],
        datas,
        key=[f"{tail}-{run}-{i}" for i in range(len(jobs))],
        pure=False,
    )
    index_of = {future.key: i for i, future in enumerate(futures)}
    results: list[Any] = [None] * len(jobs)
    failures: list[JobFailure] = []
    try:
        for future in as_completed(futures, loop=client.loop):
            i = index_of[future.key]
            try:
                outcome, frame = future.result()
            except Exception as exc:
                text = "".join(traceback.format_exception(exc))
                failures.append(JobFailure(i, jobs[i][0], exc, text))
                bar.update(error=True)
            else:
                results[i] = frame if frame is not None else outcome
                bar.update(hit=outcome.hit)
            future.release()
    except BaseException:  # Ctrl-C included: finished jobs are in the cache, stop the rest
        client.cancel([f for f in futures if not f.done()])
        raise
    failures.sort(key=lambda failure: failure.index)
    return results, failures


def _is_paths(data: Any) -> bool:
    return isinstance(data, str) or (
        isinstance(data, list) and all(isinstance(p, str) for p in data)
    )


def _flush_workers(client: distributed.Client) -> None:
    """Write every worker's in-memory hit/miss counters, so ``stats()`` sees this run."""
    answers = client.run(_fanout_worker.flush_stores, on_error="return")
    for worker, answer in sorted(answers.items()):
        if isinstance(answer, BaseException):
            warnings.warn(
                f"jules_cache: worker {worker} could not record its hits in the manifest "
                f"({type(answer).__name__}: {answer}); the results are stored",
                CacheWriteWarning,
                stacklevel=3,
            )


def _fanout_error(
    feature: str, failures: list[JobFailure], results: list[Any], total: int
) -> FanoutError:
    listed = "\n".join(f"  {failure}" for failure in failures[:_MAX_LISTED])
    more = len(failures) - _MAX_LISTED
    if more > 0:
        listed += f"\n  ... and {more} more"
    finished = total - len(failures)
    message = (
        f"{len(failures)} of {total} jobs of {feature} failed"
        + (f" (the other {finished} are in the cache)" if finished else "")
        + f"; .failures has each error with its worker traceback:\n{listed}"
    )
    return FanoutError(message, list(failures), results)


# --------------------------------------------------------------------------- progress


class _Progress:
    """One status line on stderr: redrawn in place on a terminal, else a new line per 10%."""

    _WIDTH = 24

    def __init__(self, feature: str, total: int, stream: TextIO, *, enabled: bool):
        self.label = feature.rsplit(".", 1)[-1]
        self.total = total
        self.stream = stream
        self.enabled = enabled and total > 0
        self.tty = self.enabled and _isatty(stream)
        self.done = self.hits = self.misses = self.errors = 0
        self.started = time.monotonic()
        self._last_drawn = 0.0  # on a terminal: when the line was last redrawn
        self._last_tenth = -1  # elsewhere: the last 10% step printed
        self._closed = False
        self._draw(force=True)

    def update(self, *, hit: bool = False, error: bool = False) -> None:
        self.done += 1
        if error:
            self.errors += 1
        elif hit:
            self.hits += 1
        else:
            self.misses += 1
        self._draw(force=self.done == self.total)

    def close(self) -> None:
        if self.enabled and not self._closed:
            self._closed = True
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()

    def _draw(self, *, force: bool) -> None:
        if not self.enabled or self._closed:
            return
        now = time.monotonic()
        tenth = self.done * 10 // self.total
        if not force and (now - self._last_drawn < 0.1 if self.tty else tenth == self._last_tenth):
            return
        self._last_drawn, self._last_tenth = now, tenth
        filled = self._WIDTH * self.done // self.total
        line = (
            f"{self.label} [{'#' * filled}{'.' * (self._WIDTH - filled)}] "
            f"{self.done}/{self.total}  hits {self.hits}  computed {self.misses}  "
            f"errors {self.errors}  {now - self.started:.1f}s"
        )
        self.stream.write(f"\r{line}" if self.tty else f"{line}\n")
        self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


__all__ = ["JobFailure", "JobOutcome", "compute_many"]
