"""What a fan-out sends to each Dask worker, and what the worker does with it.

The client (:mod:`jules_cache.fanout`) pickles one ``Shipment`` per run: the compute function,
config, root, store options and the code fingerprint taken in the client. Each worker process
unpickles it once, checks that it would run the code that fingerprint describes (see
``_verify_here`` and the :mod:`jules_cache.fanout` docstring), and runs jobs through one
``FeatureStore`` per root and options, kept for the life of the process.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from jules_cache.errors import FingerprintError, InvalidInput, WorkerMismatch
from jules_cache.fingerprints.code import (
    CodeFingerprint,
    _package_version,
    adopt_fingerprint,
    code_fingerprint,
    feature_name,
)
from jules_cache.fingerprints.config import canonical_config
from jules_cache.models import _ToDict
from jules_cache.options import StoreOptions
from jules_cache.version import __version__

if TYPE_CHECKING:
    from jules_cache.store import FeatureStore


@dataclass(frozen=True)
class JobOutcome(_ToDict):
    """What one job did (``compute_many(..., collect=False)`` returns one per job, in order)."""

    index: int  # position in ``jobs``
    symbol: str
    hit: bool  # served from the cache (False: computed by this job, or by a racing process)
    stored: bool  # False when a computed result could not be written (see CacheWriteWarning)
    key: str
    seconds: float  # wall time of the job on its worker
    worker: str  # the worker's address


# ------------------------------------------------------------ what is sent (made in the client)


@dataclass(frozen=True)
class Shipment:
    """Everything a worker needs besides ``(symbol, data)``; pickled once per run."""

    func: Any
    feature: str
    name: str | None
    version: str | None
    config: Any
    root: str
    store_options: StoreOptions
    collect: bool
    fingerprint: CodeFingerprint  # taken in the client: the key a local call would use
    config_digest: str
    by_name: tuple[tuple[str, str, tuple[str, ...]], ...]  # (function, module, attribute path)
    library_version: str = __version__

    @classmethod
    def make(
        cls,
        func: Callable[..., Any],
        name: str | None,
        version: str | None,
        config: Any,
        root: str,
        options: StoreOptions,
        collect: bool,
    ) -> Shipment:
        """Fingerprint code and config here (errors surface before any cluster work)."""
        fingerprint = code_fingerprint(func, version)
        return cls(
            func=func,
            feature=name or feature_name(func),
            name=name,
            version=version,
            config=config,
            root=root,
            store_options=options,
            collect=collect,
            fingerprint=fingerprint,
            config_digest=canonical_config(config).digest,
            by_name=() if version is not None else shipped_by_name(fingerprint),
        )


def shipped_by_name(fingerprint: CodeFingerprint) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """The followed functions a worker may run from ITS copy of a module (cloudpickle pickles
    module-level code of importable modules by name): each as (name, module, attributes).

    ``__main__``, modules registered with ``cloudpickle.register_pickle_by_value`` and anything
    defined inside a function are shipped by value (the client's own code objects).
    """
    import cloudpickle

    by_value = {"__main__", "__mp_main__", *cloudpickle.list_registry_pickle_by_value()}
    found = []
    for qualified in sorted(fingerprint.functions):
        parts = qualified.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module = ".".join(parts[:cut])
            if module in sys.modules:
                break
        else:
            continue
        attrs = tuple(parts[cut:])
        top_by_value = any(module == m or module.startswith(m + ".") for m in by_value)
        if top_by_value or any(a.startswith("<") for a in attrs):
            continue
        found.append((qualified, module, attrs))
    return tuple(found)


def dumps(shipment: Shipment) -> bytes:
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps(shipment))
    except Exception as exc:
        raise InvalidInput(
            f"cannot send {shipment.feature} and its config to the workers: {type(exc).__name__}: "
            f"{exc}. The compute function, what it refers to and the config must be picklable "
            "(cloudpickle); keep open files, locks, connections and stores out of them"
        ) from exc


# --------------------------------------------------------------------------- the worker side

_here = threading.Lock()  # a worker may run several jobs at once (threads_per_worker > 1)
_shipments: OrderedDict[str, Shipment] = OrderedDict()  # verified, by token (most recent last)
_SHIPMENTS_KEPT = 16
_stores: dict[tuple[str, StoreOptions], FeatureStore] = {}


def run_job(
    token: str, blob: bytes, index: int, symbol: str, data: Any
) -> tuple[JobOutcome, pl.DataFrame | None]:
    """One job, in a worker process: fetch through this process's store of the root."""
    from distributed import get_worker

    worker = get_worker().address
    try:
        shipment = _shipment_here(token, blob, worker)
        store = _store_here(shipment.root, shipment.store_options)
        result = store.fetch(
            symbol,
            data,
            shipment.config,
            shipment.func,
            name=shipment.name,
            version=shipment.version,
            lazy=not shipment.collect,
        )
    except BaseException as exc:
        exc.add_note(f"jules_cache fan-out: job #{index} ({symbol}) on worker {worker}")
        raise
    outcome = JobOutcome(
        index, result.symbol, result.hit, result.stored, result.key, result.seconds, worker
    )
    return outcome, result.value if shipment.collect else None


def _shipment_here(token: str, blob: bytes, worker: str) -> Shipment:
    """The run's shipment, unpickled and checked once per worker process."""
    with _here:
        shipment = _shipments.get(token)
        if shipment is not None:
            _shipments.move_to_end(token)
            return shipment
        shipment = _loads(blob, worker)
        _verify_here(shipment, worker)
        _shipments[token] = shipment
        while len(_shipments) > _SHIPMENTS_KEPT:
            _shipments.popitem(last=False)
        return shipment


def _loads(blob: bytes, worker: str) -> Shipment:
    import cloudpickle

    try:
        shipment = cloudpickle.loads(blob)
    except Exception as exc:  # ImportError, or AttributeError: an older copy of your module
        raise WorkerMismatch(
            f"worker {worker} cannot load the compute function or its config: "
            f"{type(exc).__name__}: {exc}. Workers import your modules by name: install the "
            "same version of them on every worker (e.g. `pip install -e .` there, or "
            "client.upload_file('features.py')); functions defined in __main__ or a notebook "
            "are sent by value"
        ) from exc
    assert isinstance(shipment, Shipment)
    if shipment.library_version != __version__:
        raise WorkerMismatch(
            f"worker {worker} runs jules_cache {__version__}, the client {shipment.library_version}"
            ": install the same version everywhere (keys and file layout depend on it)"
        )
    return shipment


def _verify_here(shipment: Shipment, worker: str) -> None:
    """Raise ``WorkerMismatch`` unless this worker runs what the client's key describes; then
    make the store here use the client's code fingerprint for the shipped function."""
    problems = []
    if canonical_config(shipment.config).digest != shipment.config_digest:
        problems.append("the config has another canonical form here (a class that differs?)")
    fingerprint = shipment.fingerprint
    for package, version in sorted(fingerprint.packages.items()):
        here = _package_version(package)
        if here != version:
            problems.append(f"package {package} is {here} here, {version} in the client")
    seen: dict[str, str] = {}
    for qualified, module, attrs in shipment.by_name:
        if qualified not in seen:
            target = _resolve(module, attrs)
            if target is _UNAVAILABLE:
                continue  # not importable here: the job can only use a copy sent by value
            if target is _MISSING:
                problems.append(f"{qualified} does not exist in module {module} here")
                continue
            try:
                for other, digest in code_fingerprint(target).functions.items():
                    seen.setdefault(other, digest)
            except FingerprintError as exc:
                problems.append(f"{qualified} cannot be fingerprinted here ({exc})")
                continue
        if seen.get(qualified) != fingerprint.functions[qualified]:
            problems.append(f"{qualified} differs here from the client's (source or state)")
    if problems:
        raise WorkerMismatch(
            f"worker {worker} would run other code than the client fingerprinted for "
            f"{shipment.feature}, so its results would be stored under a key that does not "
            "describe them: " + "; ".join(problems) + ". Install the same code and package "
            "versions on every worker (or pass version=... to key the code by hand)"
        )
    try:
        here_digest = code_fingerprint(shipment.func, shipment.version).digest
    except FingerprintError:  # code sent by value has no source here
        here_digest = None
    if here_digest != fingerprint.digest and not adopt_fingerprint(
        shipment.func, shipment.version, fingerprint
    ):
        raise WorkerMismatch(
            f"worker {worker} cannot fingerprint {shipment.feature} (its code was sent without "
            "source) and cannot remember the client's fingerprint for it (the compute function "
            "is not weak-referenceable or not hashable): pass a plain function, or version=..."
        )


_UNAVAILABLE = object()
_MISSING = object()


def _resolve(module_name: str, attrs: tuple[str, ...]) -> Any:
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return _UNAVAILABLE
    target: Any = module
    for attr in attrs:
        target = getattr(target, attr, _MISSING)
        if target is _MISSING:
            return _MISSING
    return target


def _store_here(root: str, options: StoreOptions) -> FeatureStore:
    """This process's store of ``root`` with ``options`` (opened once: opening costs tens of
    ms and recovery work)."""
    from jules_cache.store import FeatureStore

    cache_key = (root, options)
    with _here:
        store = _stores.get(cache_key)
        if store is None:
            store = _stores[cache_key] = FeatureStore.from_options(root, options)
        return store


def flush_stores() -> int:
    """Run on every worker after a fan-out: write the counters of its stores (return count)."""
    with _here:
        stores = list(_stores.values())
    for store in stores:
        store.flush()
    return len(stores)
