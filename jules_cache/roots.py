"""Where a cache lives: the one reading of a root, for the API, the CLI and the fan-out.

A root is a local directory or a URL whose scheme names a storage pairing (``SCHEMES``, as
pyiceberg's ``load_file_io`` picks a ``FileIO`` by scheme). No root given means
``$JULES_CACHE_ROOT``, else ``$FEATURE_STORE_PATH`` (older setups), else the user cache
directory. A scheme not in the table is refused, never read as a relative directory name.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jules_cache.errors import InvalidInput

ROOT_VARIABLES = ("JULES_CACHE_ROOT", "FEATURE_STORE_PATH")
# scheme -> what a root of it is (the storage it opens is chosen by FeatureStore)
SCHEMES = {"s3": "shared: S3 objects with a PostgreSQL catalog (pip install 'jules-cache[shared]')"}
CLAIM_NAME = "catalog.json"  # in a directory whose catalog is PostgreSQL: which one
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://.*", re.DOTALL)


@dataclass(frozen=True)
class Root:
    """A resolved root: ``scheme`` is ``"file"`` (``location`` an absolute path) or a key of
    ``SCHEMES`` (``location`` the URL as given, without a trailing slash)."""

    scheme: str
    location: str

    @property
    def shared(self) -> bool:
        return self.scheme != "file"

    def path(self) -> Path:
        """A local root's directory (absolute, symlinks resolved)."""
        return Path(self.location)


def resolve_root(root: Any = None) -> Root:
    """Read ``root`` (a path, a URL, or None for the environment's or the default root).

    Raises ``InvalidInput`` for anything that is not a path or URL string, an empty root, a
    NUL character, or a URL scheme jules_cache does not store to.
    """
    if root is None:
        root = next(
            (os.environ[name] for name in ROOT_VARIABLES if os.environ.get(name)),
            None,
        )
        if root is None:
            import platformdirs

            root = platformdirs.user_cache_dir("jules_cache")
    if isinstance(root, bytes) or not isinstance(root, str | os.PathLike):
        raise InvalidInput(
            f"root must be a path or URL string, not {type(root).__name__} {root!r}; e.g. "
            "FeatureStore('data/feature_cache') or FeatureStore('s3://bucket/prefix')"
        )
    text = os.fspath(root)
    if not isinstance(text, str) or not text:
        raise InvalidInput("root must not be empty; give a directory or s3://bucket/prefix")
    if "\0" in text:
        raise InvalidInput(f"root {text!r} contains a NUL character; give a real path or URL")
    url = _URL.fullmatch(text)
    if url is None:
        return Root("file", str(Path(text).expanduser().resolve()))
    scheme = url["scheme"].lower()
    if scheme not in SCHEMES:
        known = "; ".join(f"{name}:// ({what})" for name, what in SCHEMES.items())
        raise InvalidInput(
            f"root {text!r}: jules_cache cannot store to {scheme}:// roots; use a local "
            f"directory or {known}"
        )
    return Root(scheme, text.rstrip("/"))


def claimed_catalog(root: Path) -> str | None:
    """The PostgreSQL catalog a directory belongs to, if its ``catalog.json`` names one
    (``storage.directory_objects``): such a root is opened with that catalog, never as a
    local cache with a manifest of its own."""
    try:
        found = json.loads((root / CLAIM_NAME).read_text())
    except (OSError, ValueError):
        return None
    catalog = found.get("catalog") if isinstance(found, dict) else None
    return catalog if isinstance(catalog, str) else None


__all__ = ["ROOT_VARIABLES", "SCHEMES", "Root", "claimed_catalog", "resolve_root"]
