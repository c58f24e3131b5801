"""Turn what a caller passes as ``data`` into a LazyFrame plus its exact content fingerprint.

Everything is fingerprinted by its decoded content, so the same table gives the same key
whatever library, chunking or container it came in: a Polars, pyarrow or pandas frame, a
LazyFrame (collected first: its content, not its plan, is what the features depend on), or
Parquet path(s). A path list is decoded in bounded batches (``files.hash_parquet_content``) and
gets exactly the digest of ``pl.read_parquet(paths)``; the digest is memoised by what ``stat()``
says of every file (a ``DigestMemo``: ``storage.file_digests``), so a repeat call on an
unchanged 10 GB tick file costs a ``stat()`` per file and a memo lookup, not a re-read. The
opt-in ``footer`` mode keys a file by its Parquet footer alone (weaker; see
``files.parquet_footer_digest``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import polars as pl
import xxhash

from jules_cache.errors import FingerprintError, InvalidInput
from jules_cache.fingerprints.files import (
    PARQUET_MAGIC,
    ContentDigests,
    hash_parquet_content,
    parquet_footer_digest,
    scan_parquet_files,
    stat_signature,
)
from jules_cache.fingerprints.keys import DATA_SCHEME

if TYPE_CHECKING:  # pyarrow and the hashing code load on the first fingerprint, not on import
    import pyarrow as pa

FingerprintMode = Literal["content", "footer"]


class DigestMemo(Protocol):
    """Where file digests are remembered by ``stat()`` (``storage.file_digests``)."""

    def get_or_compute(
        self, paths: Sequence[Path], method: str, hasher: Callable[[Sequence[Path]], str]
    ) -> str: ...


@dataclass(frozen=True)
class InputFile:
    """One Parquet input as ``stat()`` saw it when its digest was taken."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int
    digest: str


def input_rows(key: str, method: str, files: Sequence[InputFile]) -> dict[str, Any]:
    """The ``insert_entry_inputs`` parameters (manifest or catalog): one list per column."""
    return {
        "key": key,
        "method": method,
        "positions": list(range(len(files))),
        "paths": [f.path for f in files],
        "sizes": [f.size for f in files],
        "mtimes": [f.mtime_ns for f in files],
        "inodes": [f.inode for f in files],
        "ctimes": [f.ctime_ns for f in files],
        "digests": [f.digest for f in files],
    }


@dataclass(frozen=True)
class PreparedData:
    """The input as the compute function will see it, and what the key records about it."""

    frame: pl.LazyFrame
    fingerprint: str
    method: str  # 'frame', 'file-content' or 'footer' (entries from before: 'file-bytes')
    files: tuple[InputFile, ...] = ()


def prepare_data(
    data: Any, *, mode: FingerprintMode, threads: int | None, memo: DigestMemo
) -> PreparedData:
    """Fingerprint ``data`` and wrap it as a LazyFrame for ``compute_func``.

    ``threads`` (hashing threads, as in ``fingerprint_table``) applies to frames, whose size
    the caller knows. Files always hash on every usable core: their decoded size is unknown
    until decoded, decoding costs far more than a thread hop, and a one-leaf input never hops.
    """
    import pyarrow as pa

    from jules_cache.fingerprints.data import as_arrow, fingerprint_table, require_supported

    if isinstance(data, (str, os.PathLike)) or _is_path_list(data):
        return _prepare_files(data, mode, memo)
    if isinstance(data, pl.LazyFrame):
        data = data.collect()
    if isinstance(data, pl.DataFrame):
        table = as_arrow(data)  # refuses dtypes without an exact Arrow form
        frame = data
    elif isinstance(data, (pa.Table, pa.RecordBatch)) or _is_pandas_frame(data):
        table = as_arrow(data)
        _require_unique_names(table.column_names, "data has")
        require_supported(table.schema)  # before Polars sees it: its errors name no column
        frame = to_polars(table, lambda message: FingerprintError(f"data {message}"))
    else:
        raise InvalidInput(_unsupported(data))
    _require_rows(table.num_columns, table.num_rows)
    return PreparedData(frame.lazy(), fingerprint_table(table, threads=threads), "frame")


def _prepare_files(data: Any, mode: FingerprintMode, memo: DigestMemo) -> PreparedData:
    paths = [Path(data)] if isinstance(data, (str, os.PathLike)) else [Path(p) for p in data]
    if not paths:
        raise InvalidInput("data is an empty list of paths; pass at least one Parquet file")
    for path in paths:
        _require_parquet_file(path)
    frame = scan_parquet_files(paths)
    if mode == "footer":
        return _prepare_footers(paths, frame)
    # The memo method names the scheme: a new DATA_SCHEME never reuses an old digest.
    text = memo.get_or_compute(
        paths,
        f"file-content:{DATA_SCHEME}",
        lambda files: hash_parquet_content(files).to_text(),
    )
    content = ContentDigests.from_text(text)
    files = tuple(_input_file(p, d) for p, d in zip(paths, content.files, strict=True))
    return PreparedData(frame, content.digest, "file-content", files)


def _prepare_footers(paths: list[Path], frame: pl.LazyFrame) -> PreparedData:
    digest = xxhash.xxh3_128()
    files = []
    for path in paths:
        file_digest = parquet_footer_digest(path)
        digest.update(f"{len(file_digest)}:{file_digest};".encode())
        files.append(_input_file(path, file_digest))
    return PreparedData(frame, f"files-footer:v1:{digest.hexdigest()}", "footer", tuple(files))


def _input_file(path: Path, digest: str) -> InputFile:
    resolved, size, mtime_ns, inode, ctime_ns = stat_signature(path)
    return InputFile(str(resolved), size, mtime_ns, inode, ctime_ns, digest)


def to_polars(table: pa.Table, error: Callable[[str], Exception]) -> pl.DataFrame:
    """Convert ``table`` to Polars; if it cannot, raise ``error(message)`` naming the columns."""
    import pyarrow as pa  # loaded already: ``table`` is a pyarrow Table

    # What pl.from_arrow raises for a type it cannot hold; some types make it panic (a Rust
    # panic surfaces as PanicException, a BaseException), e.g. decimal256 or a union in a struct.
    _CONVERSION_ERRORS = (
        pl.exceptions.PolarsError,
        pl.exceptions.PanicException,
        pa.ArrowException,
        ValueError,
        TypeError,
    )
    try:
        converted = pl.from_arrow(table)
    except _CONVERSION_ERRORS as exc:
        bad = []
        for field, column in zip(table.schema, table.columns, strict=True):
            try:
                pl.from_arrow(pa.table({field.name: column}))
            except _CONVERSION_ERRORS:
                bad.append(f"column {field.name!r} (type {field.type})")
        if not bad:
            raise error(f"a table Polars cannot take: {type(exc).__name__}: {exc}") from exc
        raise error(
            f"{', '.join(bad)}: Polars cannot hold this Arrow type; cast it to a type Polars "
            "supports or drop it"
        ) from exc
    return converted if isinstance(converted, pl.DataFrame) else converted.to_frame()


def _require_unique_names(columns: list[Any], what: str) -> None:
    if len(set(columns)) != len(columns):
        duplicates = sorted({str(c) for c in columns if columns.count(c) > 1})
        raise InvalidInput(
            f"{what} duplicate column names {duplicates}; give every column a unique name"
        )


def _is_path_list(data: Any) -> bool:
    return (
        isinstance(data, Sequence)
        and not isinstance(data, (str, bytes))
        and all(isinstance(item, (str, os.PathLike)) for item in data)
    )


def _is_pandas_frame(value: Any) -> bool:
    return type(value).__module__.startswith("pandas") and hasattr(value, "columns")


def _require_parquet_file(path: Path) -> None:
    if not path.exists():
        raise InvalidInput(f"data file {path} does not exist; pass an existing Parquet file")
    if not path.is_file():
        raise InvalidInput(f"data path {path} is not a file; pass Parquet file paths")
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(4)
        handle.seek(max(size - 4, 0))
        tail = handle.read(4)
    if size < 12 or head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        raise InvalidInput(f"data file {path} is not a Parquet file (no PAR1 magic bytes)")


def _require_rows(columns: int, rows: int) -> None:
    if columns == 0:
        raise InvalidInput("data has no columns; pass the tick data the feature is computed from")
    if rows == 0:
        raise InvalidInput(
            "data has no rows; there is nothing to compute features from — check the "
            "filter or date range that produced it"
        )


def _unsupported(data: Any) -> str:
    return (
        f"data of type {type(data).__name__} is not supported; pass a polars DataFrame or "
        "LazyFrame, a pyarrow Table, a pandas DataFrame, or Parquet path(s)"
    )


def as_result_frame(result: Any, feature: str) -> pl.DataFrame | pl.LazyFrame:
    """Accept what ``compute_func`` returned: a Polars frame, a pyarrow Table or pandas frame."""
    if isinstance(result, (pl.DataFrame, pl.LazyFrame)):
        return result
    if result is None:
        raise InvalidInput(
            f"compute function {feature} returned None; return a polars LazyFrame or "
            "DataFrame, a pyarrow Table or a pandas DataFrame"
        )
    arrow = sys.modules.get("pyarrow")  # a pyarrow Table implies pyarrow is loaded
    is_table = arrow is not None and isinstance(result, arrow.Table)
    if is_table or _is_pandas_frame(result):
        columns = list(result.column_names if is_table else result.columns)
        _require_unique_names(columns, f"compute function {feature} returned")
        from jules_cache.fingerprints.data import as_arrow

        return to_polars(
            as_arrow(result),
            lambda message: InvalidInput(f"compute function {feature} returned {message}"),
        )
    raise InvalidInput(
        f"compute function {feature} returned a {type(result).__name__}; return a polars "
        "LazyFrame or DataFrame, a pyarrow Table or a pandas DataFrame"
    )
