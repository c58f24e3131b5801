"""Derive a cache key from everything a result depends on, and name the version of each part.

The key is a 128-bit BLAKE2b digest (32 hex chars) of the key-schema version, feature name,
symbol and the data, config and code fingerprints. Every fingerprint starts with the scheme
that made it (``xxh3_128:v1:<hex>``), so a change to how one part is computed is a new scheme
below: its digests, and so the keys made from them, never equal the old ones, and old entries
simply stop matching (a miss, never a wrong hit). ``KEY_SCHEMA`` is bumped only when the key
derivation itself changes. All the versions live here, one constant each.

The libraries that execute a feature are part of its code fingerprint (:func:`engine_versions`):
Polars runs the plan and decodes Parquet inputs; pyarrow carries every pyarrow/pandas input and
every non-Polars result into Polars, and Polars' own ``to_pandas``/``to_numpy``/``to_arrow``
hand data to pyarrow, numpy and pandas. A frame method (``ticks.to_pandas().rolling(…)``)
reaches any of them without naming it, and the key must be known before the feature runs, so
the one exact rule is: all four, always (a library that is not installed counts as such).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from dataclasses import dataclass
from typing import Any

from jules_cache.errors import InvalidInput

KEY_SCHEMA = 1  # how the parts below are combined into a key (``KeyParts.key``)
# v2: text and binary are hashed as Arrow views (``fingerprints.data._VarBinaryNode``), not as
# lengths + concatenated bytes; a v1 digest never equals a v2 one, so frame keys miss once.
DATA_SCHEME = "xxh3_128:v2"  # frames and tables, by content (``fingerprints.data``)
# v2: a list or tuple of plain floats, ints or bools is one node hashed from a buffer.
CONFIG_SCHEME = "xxh3_128:v2"  # the canonical config encoding (``fingerprints.config``)
# v2: dotted chains, imports in bodies, instances, class attributes, wrappers and containers are
# followed; a v1 digest never equals a v2 one, so entries keyed by v1 miss once.
# v3: names resolved by Python's scoping rules (a parameter is not the global of its name) and
# the versions of ENGINE_LIBRARIES always included, also under ``version=``.
CODE_SCHEME = "xxh3_128:v3"  # a compute function and what it reaches (``fingerprints.code``)
# The libraries that execute every feature, whether or not its code names them (see above).
ENGINE_LIBRARIES = ("polars", "pyarrow", "numpy", "pandas")
FILE_BYTES_SCHEME = "xxh3_128"  # a Parquet input's raw bytes (``fingerprints.files``)
FOOTER_SCHEME = "parquet-footer:xxh3_128"  # a Parquet input's footer and size (``footer`` mode)
MAX_SYMBOL_LENGTH = 1024


@dataclass(frozen=True)
class KeyParts:
    """The components of a key, kept so the manifest (and ``explain``) can show each one."""

    feature: str
    symbol: str
    data_fingerprint: str
    config_fingerprint: str
    code_fingerprint: str

    def __post_init__(self) -> None:
        # Every part is hashed as UTF-8 and stored as text (manifest, file metadata): text
        # that has no UTF-8 form (a lone surrogate, e.g. from os.fsdecode) can be neither.
        require_utf8(self.feature, "feature name")
        require_utf8(self.symbol, "symbol")

    def key(self) -> str:
        payload = json.dumps(
            [
                KEY_SCHEMA,
                self.feature,
                self.symbol,
                self.data_fingerprint,
                self.config_fingerprint,
                self.code_fingerprint,
            ],
            ensure_ascii=False,
        )
        return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).hexdigest()


def engine_versions() -> dict[str, str | None]:
    """The installed version of each of ``ENGINE_LIBRARIES`` (None: not installed)."""
    return dict(_installed_engine())


@functools.cache
def _installed_engine() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for library in ENGINE_LIBRARIES:
        try:
            versions[library] = installed_version(library)
        except importlib.metadata.PackageNotFoundError:
            versions[library] = None
    return versions


def installed_version(distribution: str) -> str:
    """``importlib.metadata.version(distribution)``, reading only the metadata's headers.

    The full read parses the whole METADATA file as an e-mail, long description included
    (~5-10 ms for polars, on a process's first fingerprint); the ``Version`` header comes
    first, before the blank line that ends the headers. Raises ``PackageNotFoundError``.
    """
    found = importlib.metadata.distribution(distribution)
    text = found.read_text("METADATA") or found.read_text("PKG-INFO") or ""
    for line in text.splitlines():
        if not line:
            break  # end of the headers
        if line.startswith("Version:"):
            return line.removeprefix("Version:").strip()
    return found.version


def validate_symbol(symbol: Any) -> str:
    """Return ``symbol`` if it is a usable name, else raise ``InvalidInput`` saying why.

    Any non-empty text works (``BRK/B``, ``日本``, even ``../x``): symbols are never used in
    paths, only recorded in the manifest.
    """
    if not isinstance(symbol, str):
        raise InvalidInput(f"symbol must be a str, not {type(symbol).__name__}: {symbol!r}")
    require_utf8(symbol, "symbol")
    if not symbol.strip():
        raise InvalidInput("symbol is empty; pass the instrument's name, e.g. 'AAPL'")
    if "\x00" in symbol:
        raise InvalidInput(f"symbol {symbol!r} contains a NUL character; remove it")
    if len(symbol) > MAX_SYMBOL_LENGTH:
        raise InvalidInput(
            f"symbol is {len(symbol)} characters long; at most {MAX_SYMBOL_LENGTH} are allowed"
        )
    return symbol


def require_utf8(text: str, what: str) -> str:
    """Return ``text`` if it has a UTF-8 form, else raise ``InvalidInput`` naming ``what``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise InvalidInput(
            f"{what} {text!r} is not valid text: {bad!r} at position {exc.start} has no UTF-8 "
            "form (a lone surrogate, e.g. from a byte string decoded with surrogateescape); "
            "pass the real text"
        ) from None
    return text
