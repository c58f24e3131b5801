"""``@store.feature``: a compute function as a cached feature, the way joblib.Memory is used.

    @store.feature(name="bars", version="2")
    def bars(ticks: pl.LazyFrame, config: dict) -> pl.LazyFrame: ...

    frame = bars("AAPL", ticks, {"freq": "1m"})            # store.get_or_compute(...)
    lazy = bars("AAPL", ticks, {"freq": "1m"}, lazy=True)  # a LazyFrame over the cached file
    result = bars.fetch("AAPL", ticks, {"freq": "1m"})     # a CacheResult (hit, key, ...)
    print(bars.explain("AAPL", ticks, {"freq": "5m"}))     # why it would miss
    bars.contains("AAPL", ticks, {"freq": "1m"})           # would it hit? (computes nothing)
    bars.clear()                                           # remove every entry of "bars"

``@store.feature(ignore=["verbose"])`` leaves those top-level config keys out of the key, as
joblib's ``ignore=`` does for arguments; ``@store.feature(expire="7d")`` makes each result a
miss (recomputed, replaced) 7 days after it was written, as diskcache's ``expire=``.

The key is the one ``get_or_compute`` gives the ORIGINAL function: the wrapper adds nothing to
it. A ``Feature`` referred to by other feature code is fingerprinted as the function it wraps
(``code_fingerprint`` asks ``fingerprint_stand_in``), never by its store, whose root, locks and
manifest differ between processes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

import polars as pl

from jules_cache import _arguments as arguments
from jules_cache.errors import InvalidInput
from jules_cache.fingerprints.code import feature_name
from jules_cache.models import CacheResult, Entry
from jules_cache.request import ComputeFunc

if TYPE_CHECKING:
    from jules_cache.explain import Explanation


class FeatureStore(Protocol):
    """What a feature needs of its store (``jules_cache.FeatureStore``)."""

    def fetch(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        ignore: Iterable[str] | None = None,
        expire: float | str | timedelta | None = None,
        lazy: bool,
    ) -> CacheResult[Any]: ...

    def explain(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        ignore: Iterable[str] | None = None,
    ) -> Explanation: ...

    def contains(
        self,
        symbol: str,
        data: Any,
        config: Any,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        ignore: Iterable[str] | None = None,
    ) -> bool: ...

    def clear(self, *, feature: str) -> list[Entry]: ...


class Feature:
    """A compute function bound to a store: call it as ``f(symbol, data, config, *, lazy)``.

    ``compute_func`` (also ``__wrapped__``) is the original function; ``__name__``,
    ``__qualname__``, ``__module__`` and ``__doc__`` are its own (``functools.wraps``).
    """

    # code_fingerprint describes a Feature by the function it wraps (see the module docstring)
    __jules_cache_stand_in__ = "compute_func"

    def __init__(
        self,
        store: FeatureStore,
        compute_func: ComputeFunc,
        *,
        name: str | None = None,
        version: str | None = None,
        ignore: Iterable[str] | None = None,
        expire: float | str | timedelta | None = None,
    ):
        if not callable(compute_func):
            raise InvalidInput(
                f"@store.feature decorates a function (lazy_frame, config) -> frame, not "
                f"{type(compute_func).__name__}: not callable"
            )
        _check_arguments(name, version)
        functools.update_wrapper(self, compute_func)
        self.store = store
        self.compute_func = compute_func
        self.name = name
        self.version = version
        # config keys left out of the key (sorted: a stable repr, and the set is the meaning)
        self.ignore = tuple(sorted(arguments.config_keys("ignore", ignore)))
        self.expire = arguments.expiry("expire", expire)  # seconds; None: never

    def __repr__(self) -> str:
        return f"<feature {feature_name(self.compute_func)} of {self.store!r}>"

    @overload
    def __call__(
        self, symbol: str, data: Any, config: Any, *, lazy: Literal[False] = False
    ) -> pl.DataFrame: ...

    @overload
    def __call__(
        self, symbol: str, data: Any, config: Any, *, lazy: Literal[True]
    ) -> pl.LazyFrame: ...

    @overload
    def __call__(
        self, symbol: str, data: Any, config: Any, *, lazy: bool
    ) -> pl.DataFrame | pl.LazyFrame: ...

    def __call__(
        self, symbol: str, data: Any, config: Any, *, lazy: bool = False
    ) -> pl.DataFrame | pl.LazyFrame:
        """``store.get_or_compute(symbol, data, config, compute_func, ...)``."""
        value: pl.DataFrame | pl.LazyFrame = self.fetch(symbol, data, config, lazy=lazy).value
        return value

    @overload
    def fetch(
        self, symbol: str, data: Any, config: Any, *, lazy: Literal[False] = False
    ) -> CacheResult[pl.DataFrame]: ...

    @overload
    def fetch(
        self, symbol: str, data: Any, config: Any, *, lazy: Literal[True]
    ) -> CacheResult[pl.LazyFrame]: ...

    @overload
    def fetch(self, symbol: str, data: Any, config: Any, *, lazy: bool) -> CacheResult[Any]: ...

    def fetch(self, symbol: str, data: Any, config: Any, *, lazy: bool = False) -> CacheResult[Any]:
        """``store.fetch(...)``: the value plus whether it was a hit, its key and path."""
        return self.store.fetch(
            symbol,
            data,
            config,
            self.compute_func,
            name=self.name,
            version=self.version,
            ignore=self.ignore,
            expire=self.expire,
            lazy=lazy,
        )

    def explain(self, symbol: str, data: Any, config: Any) -> Explanation:
        """``store.explain(...)``: whether this call would hit, and what differs if not."""
        return self.store.explain(
            symbol,
            data,
            config,
            self.compute_func,
            name=self.name,
            version=self.version,
            ignore=self.ignore,
        )

    def contains(self, symbol: str, data: Any, config: Any) -> bool:
        """``store.contains(...)``: whether this call would hit, nothing computed or read."""
        return self.store.contains(
            symbol,
            data,
            config,
            self.compute_func,
            name=self.name,
            version=self.version,
            ignore=self.ignore,
        )

    @property
    def feature_name(self) -> str:
        """The name entries of this feature are stored under (``name=``, else the function's
        module-qualified name): what ``clear``, ``rm --feature`` and SQL views go by."""
        return self.name or feature_name(self.compute_func)

    def clear(self) -> list[Entry]:
        """Remove every cached entry of this feature, on every symbol, config and code
        version (``store.clear(feature=...)``); return the entries removed."""
        return self.store.clear(feature=self.feature_name)


def decorate(
    store: FeatureStore,
    compute_func: ComputeFunc | None,
    *,
    name: str | None,
    version: str | None,
    ignore: Iterable[str] | None = None,
    expire: float | str | timedelta | None = None,
) -> Feature | Callable[[ComputeFunc], Feature]:
    """``FeatureStore.feature``: bare (``compute_func`` given) or with arguments."""
    if compute_func is not None:
        return Feature(
            store, compute_func, name=name, version=version, ignore=ignore, expire=expire
        )
    _check_arguments(name, version)  # a bad name or version fails at the decorator line
    ignore = tuple(arguments.config_keys("ignore", ignore))  # and so does a bad ignore
    expire = arguments.expiry("expire", expire)  # or a bad expire

    def decorator(func: ComputeFunc) -> Feature:
        return Feature(store, func, name=name, version=version, ignore=ignore, expire=expire)

    return decorator


def _check_arguments(name: str | None, version: str | None) -> None:
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise InvalidInput(f"@store.feature name must be a non-empty str, not {name!r}")
    if version is not None and not isinstance(version, str):
        raise InvalidInput(f"@store.feature version must be a str, not {version!r}")
