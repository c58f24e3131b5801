"""Derive a cache key from everything a result depends on, and name the version of each part.

The key is a 128-bit BLAKE2b digest (32 hex chars) of the key-schema version, feature name,
symbol and the data, config and code fingerprints. Every fingerprint starts with the scheme
that made it (``xxh3_128:v1:<hex>``), so a change to how one part is computed is a new scheme
below: its digests, and so the keys made from them, never equal the old ones, and old entries
simply stop matching (a miss, never a wrong hit). ``KEY_SCHEMA`` is bumped only when the key
derivation itself changes. All the versions live here, one constant each.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from jules_cache.errors import InvalidInput

KEY_SCHEMA = 1  # how the parts below are combined into a key (``KeyParts.key``)
# v2: text and binary are hashed as Arrow views (``fingerprints.data._VarBinaryNode``), not as
# lengths + concatenated bytes; a v1 digest never equals a v2 one, so frame keys miss once.
DATA_SCHEME = "xxh3_128:v2"  # frames and tables, by content (``fingerprints.data``)
CONFIG_SCHEME = "xxh3_128:v1"  # the canonical config JSON (``fingerprints.config``)
# v2: dotted chains, imports in bodies, instances, class attributes, wrappers and containers are
# followed; a v1 digest never equals a v2 one, so entries keyed by v1 miss once.
CODE_SCHEME = "xxh3_128:v2"  # a compute function and what it reaches (``fingerprints.code``)
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
