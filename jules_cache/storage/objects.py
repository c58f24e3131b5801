"""The objects seam: where a cache's result files live, for an engine that keeps their rows
in a catalog. Two kinds answer it: ``s3_objects.S3ObjectStore`` (an ``s3://`` prefix) and
``directory_objects.DirectoryObjects`` (a local root's directory, or one many hosts mount).

Objects are immutable and named by their key (``objects/ab/<key>.parquet``): written once with
put-if-absent, read whole, listed with their size and age (for GC and check), deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD says about one object."""

    name: str
    size: int
    last_modified: datetime  # naive UTC, as the catalog's times
    etag: str
    metadata: dict[str, str] = field(default_factory=dict)


class ObjectStore(Protocol):
    """Result files by name (see the module). Errors are the package's own: ``StoreError``,
    ``ServiceUnavailable``, ``UnsafePath``."""

    location: str  # how the objects' home is shown in messages

    def where(self, name: str) -> Path | str:
        """Where object ``name`` is, for the caller: a path, or an ``s3://`` URL."""

    def path(self, name: str) -> Path | None:
        """Object ``name`` as a local file a hit opens in place (and scans lazily), or None
        when its bytes must be fetched (``get``)."""

    def new_temp_path(self, key: str) -> Path:
        """A new local file to write ``key``'s result to before ``put_if_absent``."""

    def discard_temp(self, temp: Path) -> None:
        """Delete a temp file ``new_temp_path`` made (after a failure); never raises."""

    def put_if_absent(self, name: str, data: Path) -> bool:
        """Publish the written file ``data`` as ``name`` unless it exists; whether it did."""

    def get(self, name: str) -> bytes | None:
        """The content of object ``name``, or None if there is none."""

    def head(self, name: str) -> ObjectInfo | None:
        """Size and time of object ``name``, or None if there is none."""

    def delete(self, names: list[str], *, quarantine: bool = False) -> None:
        """Delete objects (a missing one is not an error). ``quarantine`` (damaged objects):
        keep them for inspection where the store has room for that, out of the cache."""

    def list_frame(self, folders: Iterable[str]) -> pl.DataFrame:
        """``name``, ``size``, ``last_modified`` of the objects in ``folders``, by name."""

    def arrow_filesystem(self) -> Any:
        """The ``pyarrow.fs`` file system SQL reads objects through."""

    def arrow_path(self, name: str = "") -> str:
        """How ``arrow_filesystem`` spells object ``name`` (or the objects' home)."""

    def close(self) -> None:
        """Release what is held between calls (the store stays usable)."""
