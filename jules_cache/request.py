"""One call's request: its key, its inputs, and the identity stored with its result.

The façade builds a ``Request`` per call (fingerprinting every input) and hands it to the
storage backend on a miss; the backend writes ``file_metadata`` into the result's own footer, so
a catalog can be rebuilt from the results alone and every read can check the key it got.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from jules_cache.fingerprints.inputs import InputFile
from jules_cache.fingerprints.keys import KEY_SCHEMA, KeyParts, engine_versions
from jules_cache.models import CacheResult
from jules_cache.version import __version__

ComputeFunc = Callable[[pl.LazyFrame, Any], Any]

# The library's one logger (README: Logging). DEBUG: one line per hit / miss / compute /
# publish; INFO: computes longer than ``log_compute_seconds`` and GC summaries.
log = logging.getLogger("jules_cache")


@dataclass(frozen=True)
class Request:
    """One call's key and everything needed to compute and publish it on a miss."""

    parts: KeyParts
    key: str
    location: Any  # where the result lives: a Path (local root) or an s3:// URL (shared)
    frame: pl.LazyFrame
    data_method: str
    config: Any
    config_json: str
    code_version: str | None
    code_functions: dict[str, str]
    code_unfollowed: tuple[str, ...]
    files: tuple[InputFile, ...]
    compute_func: ComputeFunc
    lazy: bool
    started: float
    expire: float | None = None  # seconds an entry written for this call stays fresh
    # When the entry written for this call expires (epoch seconds): fixed at write time
    # (``written``), so the file's footer and the catalog row carry the same instant.
    expires_at: float | None = None

    def result(
        self, value: pl.DataFrame | pl.LazyFrame, *, hit: bool = False, stored: bool = True
    ) -> CacheResult[Any]:
        seconds = time.perf_counter() - self.started
        if hit:
            log_event("hit", self, seconds)
        parts = self.parts
        return CacheResult(
            value, hit, self.key, self.location, parts.feature, parts.symbol, seconds, stored
        )

    def written(self) -> Request:
        """This request as its result is written: with its expiry counted from now."""
        if self.expire is None:
            return self
        return dataclasses.replace(self, expires_at=time.time() + self.expire)

    def file_metadata(self) -> dict[str, Any]:
        """The entry's identity, stored in the file so the catalog can be rebuilt from it
        (and its expiry, so a hit can refuse an expired file without the catalog)."""
        parts = self.parts
        metadata = {
            "key": self.key,
            "key_schema": KEY_SCHEMA,
            "feature": parts.feature,
            "symbol": parts.symbol,
            "data_fingerprint": parts.data_fingerprint,
            "data_method": self.data_method,
            "config_fingerprint": parts.config_fingerprint,
            "config_json": self.config_json,
            "code_fingerprint": parts.code_fingerprint,
            "code_version": self.code_version,
            "code_functions": self.code_functions,
            "library_versions": library_versions(),
        }
        if self.expires_at is not None:  # files that never expire keep the footer they had
            metadata["expires_at"] = self.expires_at
        return metadata


def log_event(event: str, request: Request, seconds: float) -> None:
    """One DEBUG line: ``<event> feature=… symbol=… key=<8 hex> ms=…``; nothing is formatted
    (not even the key prefix) unless DEBUG is on for the ``jules_cache`` logger."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s feature=%s symbol=%s key=%s ms=%.1f",
            event,
            request.parts.feature,
            request.parts.symbol,
            request.key[:8],
            seconds * 1000,
        )


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that shaped a result file (recorded in every entry): the
    engine versions its key was made with (``explain`` compares them), duckdb and ours."""
    return {**_other_versions(), **engine_versions()}


@functools.cache
def _other_versions() -> dict[str, str]:
    from importlib import metadata as importlib_metadata  # ~15 ms: only when publishing

    try:
        duckdb = importlib_metadata.version("duckdb")
    except importlib_metadata.PackageNotFoundError:
        duckdb = "unknown"
    return {"jules_cache": __version__, "duckdb": duckdb}
