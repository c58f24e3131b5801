"""Exact, chunking-independent content fingerprints of in-memory tables.

Why this design (the measurements and the traps: docs/guide/keys.md, "Why the data digest is
built this way"):

* One digest for Polars, pandas and Arrow: every input is converted to a ``pa.Table`` without
  copying (:func:`as_arrow`) and only *logical* content is hashed — never physical layout,
  never serialised bytes (IPC/Parquet depend on writer versions), never library hash functions
  (Polars ``hash_rows`` and categorical codes change between versions and processes).
* Exact: column names, column order and logical types go into a header; every value, null and
  row position goes into per-column streams. Nothing is order-free (no sums/xors of row hashes).
* Chunk-independent: a column is cut into *leaves* of ``LEAF_ROWS`` rows at fixed global row
  positions, whatever the chunking. Each leaf hashes the exactly-sliced bytes of its rows (never
  ``Array.buffers()`` wholesale: a sliced array exposes its parent's whole buffer); the column
  digest combines the leaf digests in order. Leaves are independent, so they are hashed in a
  thread pool: xxhash releases the GIL on large buffers (measured: 2 threads ≈ 1.75× one), and
  so do the NumPy/Arrow kernels used here.

Per leaf and per type node, the streams are:

* nulls: the positions (``<i8``, relative to the node's first row in the leaf) of null slots;
  null slots are then dropped, so bytes under nulls never matter and raw validity bitmaps (whose
  bit offsets and trailing bits vary) are never hashed;
* fixed-width values (ints, floats, temporal, decimal, fixed_size_binary): the raw little-endian
  bytes of the valid values, zero-copy when the leaf has no nulls (-0.0/0.0 and NaN payloads are
  distinguished: raw bytes are exact);
* bool: one byte per valid value (bit-packed data cannot be concatenated across chunk offsets);
* utf8/binary (+ large and view variants): the rows' Arrow views (16 bytes: ``<i4`` length,
  then a value of at most 12 bytes zero-padded, or a longer value's first 4 bytes and 8 zero
  bytes where the layout's buffer index and offset were) in one stream, the bytes of the values
  longer than 12 bytes in another. Polars keeps strings as views, so a column of short values
  (symbols, venues) is hashed straight from its buffer: no per-row copy (scheme v2);
* list/large_list/fixed_size_list/map: lengths, then the child recursively; struct: each child
  recursively; null type: the row count only;
* dictionary (Polars Categorical/Enum, pandas category): the *values*, never the indices. A leaf
  hashes the sorted distinct values it uses plus, per row, the rank of the row's value in that
  list (``<i4``, -1 for null). Unused dictionary entries and per-chunk dictionaries therefore do
  not matter. Dictionaries of floats (where equality is not byte equality) are decoded instead.

Logical types (the header) and where two inputs differ although they print the same — each such
case is a false miss (never a false hit):

* string / large_string / string_view → ``utf8``; binary variants → ``binary``; list and
  large_list → ``list``; dictionary index width and signedness are ignored.
* ``dictionary<utf8>`` is NOT ``utf8``: a categorical column and a string column with the same
  values differ (a feature may treat them differently). Polars Categorical, pandas unordered
  category and Arrow unordered dictionaries agree. An *ordered* dictionary (Polars Enum, pandas
  ordered category) also hashes its category list, since the order is part of its meaning.
* Integer and float widths, timestamp unit and time zone (naive ≠ UTC), date32 ≠ date64, decimal
  precision and scale and struct field names are part of the type. pandas 3 infers ``us``
  datetimes where Polars defaults to ``us`` too, but ``ns`` data stays ``ns``.
* pandas: a default ``RangeIndex(0..n)`` is dropped; any other index (DatetimeIndex, named or
  shifted RangeIndex, MultiIndex) is kept as leading column(s), named after the level or
  ``__index_level_<i>__`` when unnamed (pyarrow's convention). Column names must be ``str``.
* Field metadata, nullability flags and list child field names are ignored.

Unsupported types (extension types, unions, run-end encoded, list views …) raise
:class:`~jules_cache.errors.FingerprintError` naming the column and type; so does a Polars column
whose Arrow export does not convert back to the same dtype (``Object``, ``Int128``), and a pandas
index level named like a column. Digests assume a
little-endian host, as Arrow does in practice.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

from jules_cache._process import on_fork
from jules_cache.errors import FingerprintError
from jules_cache.fingerprints.keys import DATA_SCHEME


def _pc() -> Any:
    """``pyarrow.compute``, imported on first use (~80 ms): a hit on a frame of numbers and
    categoricals (the usual tick frame) needs none of its kernels."""
    import pyarrow.compute

    return pyarrow.compute


LEAF_ROWS = 1 << 20  # part of DATA_SCHEME: changing it changes every digest (bump it)
_PREFIX_ROWS = 1 << 16  # rows scanned first when checking that a dictionary is fully used


# ----------------------------------------------------------------------------- conversion


def as_arrow(data: Any) -> pa.Table:
    """Return ``data`` as a ``pa.Table``, without copying where the source allows it.

    Accepts a Polars DataFrame, a pyarrow Table or RecordBatch, or a pandas DataFrame (see the
    module docstring for how a pandas index is kept). Raises FingerprintError for anything else,
    and for pandas columns that pyarrow cannot convert exactly (e.g. mixed Python objects).
    """
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    polars = sys.modules.get("polars")
    if polars is not None and isinstance(data, polars.DataFrame):
        return _polars_to_arrow(data, polars)
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(data, pandas.DataFrame):
        return _pandas_to_arrow(data, pandas)
    raise FingerprintError(
        f"cannot fingerprint data of type {type(data).__module__}.{type(data).__qualname__}: "
        "expected a polars.DataFrame, pyarrow.Table/RecordBatch or pandas.DataFrame"
    )


# Polars dtypes whose Arrow export converts back to the same dtype (checked once per dtype).
_FAITHFUL: dict[object, bool] = {}


def _polars_to_arrow(df: Any, polars: ModuleType) -> pa.Table:
    """Export a Polars frame, refusing columns whose Arrow form does not mean the same thing.

    The rule is a round trip of an empty column per dtype, not a list of bad types: e.g.
    ``pl.Object`` exports as the objects' 8-byte addresses (hashing those could match another
    process's different objects: a false hit), ``pl.Int128`` does not export at all.
    """
    pairs = zip(df.columns, df.dtypes, strict=True)  # df.schema costs ~3x more on a hit
    bad = [(name, dtype) for name, dtype in pairs if not _faithful(dtype, polars)]
    if bad:
        shown = ", ".join(f"column {name!r} ({dtype})" for name, dtype in bad)
        raise FingerprintError(
            f"cannot fingerprint {shown}: this Polars type has no exact Arrow form; cast it "
            "(e.g. Int128 to Int64 or Decimal, Object to a plain type) or drop the column"
        )
    columns = [_polars_column(df.to_series(i), polars) for i in range(df.width)]
    return pa.Table.from_arrays(columns, names=df.columns)


def _polars_column(series: Any, polars: ModuleType) -> pa.ChunkedArray:
    """Export one Polars column without copying its buffers.

    ``DataFrame.to_arrow()`` copies every string (its default layout has no string views) and
    remaps every categorical code to a per-chunk dictionary (~13 ms per 1M rows). Instead each
    column goes through Polars' Arrow C stream (newest layout: string views, chunks kept), and a
    Categorical/Enum column is rebuilt as a dictionary array over Polars' own physical codes and
    its category list. The digest hashes logical values only, so it is the same either way.
    """
    dtype = series.dtype
    if isinstance(dtype, polars.Categorical | polars.Enum):
        rebuilt = _polars_dictionary(series, polars)
        if rebuilt is not None:
            return rebuilt
    return pa.chunked_array(series)


_SPOT_CHECK_ROWS = 4096


def _polars_dictionary(series: Any, polars: ModuleType) -> pa.ChunkedArray | None:
    """Return a Categorical/Enum column as dictionary chunks over its physical codes.

    The dictionary is the full category list, indexed by physical code (Enum: its categories;
    Categorical: ``Categories.to_series()``, documented as ordered by physical value). Unused
    entries do not change the digest. The convention is checked, not assumed: the largest code
    must index the list, and the first rows must decode to what Polars' own cast to String says.
    Returns None (use the generic export) if either check fails.
    """
    enum = isinstance(series.dtype, polars.Enum)
    categories = series.dtype.categories
    values = categories if enum else categories.to_series()
    physical = series.to_physical()
    codes = pa.chunked_array(physical)
    if _largest_index(codes) >= len(values):
        return None
    # Indexing, not ``gather`` (a query): the same take, ~0.3 ms less right after a compute.
    decoded = values[physical.head(_SPOT_CHECK_ROWS)]
    expected = series.head(_SPOT_CHECK_ROWS).cast(polars.String)
    if not decoded.equals(expected, check_names=False, null_equal=True):
        return None
    dictionary = values.to_arrow(compat_level=polars.CompatLevel.oldest())  # large_string
    if not pa.types.is_large_string(dictionary.type):
        dictionary = dictionary.cast(pa.large_string())
    dict_type = pa.dictionary(codes.type, dictionary.type, ordered=enum)
    chunks = [
        pa.DictionaryArray.from_arrays(chunk, dictionary, ordered=enum, safe=False)
        for chunk in codes.chunks
    ]
    return pa.chunked_array(chunks, dict_type)


def _largest_index(codes: pa.ChunkedArray) -> int:
    """The largest non-null value of an integer column (-1 if none), in NumPy on one thread:
    Polars' own ``max`` goes through its thread pool and costs several times more on a hit."""
    top = -1
    for chunk in codes.chunks:
        raw = _values_np(chunk)
        if chunk.null_count:
            raw = raw[~_null_mask(chunk)]
        if len(raw):
            top = max(top, int(raw.max()))
    return top


def holds_python_objects(dtype: Any, polars: ModuleType) -> bool:
    """Whether a Polars dtype is or contains ``pl.Object`` (arbitrary Python objects).

    Such columns have no exact Arrow or Parquet form, and even probing one (exporting an empty
    Object column) can abort the process with a Rust panic, so they are refused unprobed.
    """
    if dtype == polars.Object:  # the class or an instance: pl.List(pl.Object) keeps the class
        return True
    if isinstance(dtype, polars.List | polars.Array):
        return holds_python_objects(dtype.inner, polars)
    if isinstance(dtype, polars.Struct):
        return any(holds_python_objects(field.dtype, polars) for field in dtype.fields)
    return False


def _faithful(dtype: Any, polars: ModuleType) -> bool:
    known = _FAITHFUL.get(dtype)
    if known is None and holds_python_objects(dtype, polars):
        known = False
    if known is None:
        try:
            back = polars.from_arrow(polars.DataFrame(schema={"c": dtype}).to_arrow())
            known = back.schema["c"] == dtype
        except (polars.exceptions.PolarsError, pa.ArrowException, polars.exceptions.PanicException):
            known = False
        if len(_FAITHFUL) > 1024:  # dtypes are few; Enums with new categories are not
            _FAITHFUL.clear()
        _FAITHFUL[dtype] = known
    return known


def _pandas_to_arrow(df: Any, pandas: ModuleType) -> pa.Table:
    bad = [c for c in df.columns if not isinstance(c, str)]
    if bad:
        raise FingerprintError(f"pandas column names must be str; got {bad[:5]!r}")
    index = df.index
    default = (
        isinstance(index, pandas.RangeIndex)
        and index.start == 0
        and index.step == 1
        and index.name is None
    )
    if not default:
        names = [n if n is not None else f"__index_level_{i}__" for i, n in enumerate(index.names)]
        if any(not isinstance(n, str) for n in names):
            raise FingerprintError(f"pandas index level names must be str; got {names!r}")
        _require_distinct_index_names(names, list(df.columns))
        df = df.reset_index(names=names)
    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise FingerprintError(f"cannot convert pandas DataFrame to Arrow exactly: {exc}") from exc
    return table.replace_schema_metadata(None)


def _require_distinct_index_names(names: list[str], columns: list[str]) -> None:
    """The index is kept as leading columns: each level needs a name no column or level has."""
    taken = set(columns)
    for position, name in enumerate(names):
        if name in taken:
            level = f"index level {position}" + ("" if name.startswith("__index") else " named")
            raise FingerprintError(
                f"pandas {level} {name!r} would be kept as column {name!r}, which already "
                "exists; the index is part of the data, so give it a distinct name "
                "(df.rename_axis(...)), move it into the columns (df.reset_index()) or drop it "
                "(df.reset_index(drop=True))"
            )
        taken.add(name)


# ----------------------------------------------------------------------------- type descriptors


TypeDescriptor = str | list[Any]  # 'int64', or ['list', <descriptor>], ['struct', [...]]...


def _describe(dtype: pa.DataType, where: str) -> TypeDescriptor:
    """Return a JSON-able logical type descriptor; raise FingerprintError if unsupported."""
    t = pa.types
    if t.is_string(dtype) or t.is_large_string(dtype) or t.is_string_view(dtype):
        return "utf8"
    if t.is_binary(dtype) or t.is_large_binary(dtype) or t.is_binary_view(dtype):
        return "binary"
    if t.is_dictionary(dtype):
        return ["dictionary", _describe(dtype.value_type, where), bool(dtype.ordered)]
    if t.is_map(dtype):
        return [
            "map",
            _describe(dtype.key_type, where),
            _describe(dtype.item_type, where),
            bool(dtype.keys_sorted),
        ]
    if t.is_list(dtype) or t.is_large_list(dtype):
        return ["list", _describe(dtype.value_type, where)]
    if t.is_fixed_size_list(dtype):
        return ["fixed_size_list", dtype.list_size, _describe(dtype.value_type, where)]
    if t.is_struct(dtype):
        fields = [dtype.field(i) for i in range(dtype.num_fields)]
        return ["struct", [[f.name, _describe(f.type, where)] for f in fields]]
    if isinstance(dtype, pa.ExtensionType) or not _is_plain(dtype):
        raise FingerprintError(_unsupported_type(where, dtype))
    return str(dtype)  # e.g. 'int64', 'timestamp[ns, tz=UTC]', 'decimal128(10, 2)', 'null'


def _unsupported_type(where: str, dtype: pa.DataType) -> str:
    return (
        f"cannot fingerprint {where}: unsupported Arrow type {dtype}; cast the column to a "
        "supported type (numbers, text, binary, temporal, decimal, list, struct, map, "
        "dictionary) or drop it"
    )


def _is_plain(dtype: pa.DataType) -> bool:
    return dtype.id == pa.null().id or dtype.id == pa.bool_().id or _fixed_width(dtype) > 0


def _fixed_width(dtype: pa.DataType) -> int:
    """Return the byte width of a fixed-width primitive type, 0 for anything else."""
    t = pa.types
    if (
        t.is_integer(dtype)
        or t.is_floating(dtype)
        or t.is_temporal(dtype)
        or t.is_decimal(dtype)
        or t.is_fixed_size_binary(dtype)
    ):
        try:
            return int(dtype.bit_width) // 8
        except ValueError:
            return 0
    return 0


# ----------------------------------------------------------------------------- array helpers


def _buffer(array: np.ndarray[Any, Any]) -> memoryview:
    """``array``'s memory for a hasher, not copied (numpy declares its buffer protocol to type
    checkers for Python 3.12+ only)."""
    return array.data


def _digest(*parts: bytes) -> bytes:
    h = xxhash.xxh3_128()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()


def _values_view(arr: pa.Array, width: int) -> memoryview:
    """Return exactly the value bytes of ``arr``'s own rows (zero-copy)."""
    buf = arr.buffers()[1]
    if buf is None:
        return memoryview(b"")
    start = arr.offset * width
    return memoryview(buf)[start : start + len(arr) * width]


def _values_np(arr: pa.Array) -> np.ndarray:
    """Return the raw values of a primitive integer array as NumPy (incl. slots under nulls)."""
    # Not ``arr.type.to_pandas_dtype()``: that imports pandas (~300 ms) on a hit.
    kind = "i" if pa.types.is_signed_integer(arr.type) else "u"
    dtype = np.dtype(f"<{kind}{arr.type.bit_width // 8}")
    buf = arr.buffers()[1]
    if buf is None:
        return np.empty(0, dtype)
    return np.frombuffer(buf, dtype=dtype, count=arr.offset + len(arr))[arr.offset :]


def _bits(buf: pa.Buffer, offset: int, length: int) -> np.ndarray:
    """Unpack ``length`` bits of an Arrow bitmap starting at bit ``offset`` (one bool each)."""
    first, end = offset // 8, (offset + length + 7) // 8
    packed = np.frombuffer(buf, np.uint8, count=end - first, offset=first)
    shift = offset - first * 8
    return np.unpackbits(packed, bitorder="little")[shift : shift + length].view(bool)


def _null_mask(arr: pa.Array) -> np.ndarray:
    """Which rows are null, decoded from the validity bitmap (buffer 0 of every type here).

    Not ``arr.is_null().to_numpy()``: pyarrow converts through its pandas bridge, which imports
    pandas (~300 ms) in a process serving a hit.
    """
    if not arr.null_count:
        return np.zeros(len(arr), bool)
    return ~_bits(arr.buffers()[0], arr.offset, len(arr))


def _int_values(arr: pa.Array, dtype: str) -> np.ndarray:
    """The values of an integer array without nulls as NumPy ``dtype`` (zero-copy if same)."""
    width = arr.type.bit_width // 8
    kind = "i" if pa.types.is_signed_integer(arr.type) else "u"
    raw = np.frombuffer(arr.buffers()[1], f"<{kind}{width}", count=arr.offset + len(arr))
    return raw[arr.offset :].astype(dtype, copy=False)


def _canonical_values(arr: pa.Array) -> pa.Array:
    """Cast string/binary variants to one physical type so they can be compared and sorted."""
    t = pa.types
    if t.is_string(arr.type) or t.is_string_view(arr.type):
        if _small_text(arr) and not arr.null_count:
            return _large_text(arr.to_pylist())
        return arr.cast(pa.large_string())
    if t.is_binary(arr.type) or t.is_binary_view(arr.type):
        return arr.cast(pa.large_binary())
    return arr


# ----------------------------------------------------------------------------- hashing nodes


class _Node:
    """Hash state of one type node (a column, or a child of a nested column) within one leaf."""

    def __init__(self) -> None:
        self.rows = 0
        self.nulls = xxhash.xxh3_128()
        self.values = xxhash.xxh3_128()

    def feed(self, arr: pa.Array) -> None:
        """Hash the rows of ``arr`` (any offset, any nulls) after the rows fed before."""
        if arr.null_count:
            null = _null_mask(arr)
            self.nulls.update(_buffer(np.flatnonzero(null).astype("<i8") + self.rows))
            self.rows += len(arr)
            self._feed_where(arr, ~null)
        else:
            self.rows += len(arr)
            self._feed_valid(arr)

    def _feed_valid(self, arr: pa.Array) -> None:
        raise NotImplementedError

    def _feed_where(self, arr: pa.Array, valid: np.ndarray) -> None:
        """Hash the rows of ``arr`` where ``valid`` is true (the others are null)."""
        self._feed_valid(_pc().drop_null(arr))

    def children(self) -> list[_Node]:
        return []

    def digest(self) -> bytes:
        parts = [self.rows.to_bytes(8, "little"), self.nulls.digest(), self.values.digest()]
        parts += [child.digest() for child in self.children()]
        return _digest(*parts)


class _NullNode(_Node):
    def feed(self, arr: pa.Array) -> None:
        self.rows += len(arr)


class _FixedNode(_Node):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def _feed_valid(self, arr: pa.Array) -> None:
        self.values.update(_values_view(arr, self.width))

    def _feed_where(self, arr: pa.Array, valid: np.ndarray) -> None:
        # In NumPy, not Arrow's drop_null: numbers with gaps need no compute kernels (~80 ms
        # to import on a process's first hit).
        raw = np.frombuffer(_values_view(arr, self.width), np.uint8)
        if len(raw) != len(arr) * self.width:  # pragma: no cover - no values buffer
            super()._feed_where(arr, valid)
            return
        self.values.update(_buffer(raw.reshape(len(arr), self.width)[valid]))


class _BoolNode(_Node):
    def _feed_valid(self, arr: pa.Array) -> None:
        if len(arr):
            bits = _bits(arr.buffers()[1], arr.offset, len(arr))
            self.values.update(_buffer(bits.view(np.uint8)))

    def _feed_where(self, arr: pa.Array, valid: np.ndarray) -> None:
        bits = _bits(arr.buffers()[1], arr.offset, len(arr))
        self.values.update(_buffer(bits[valid].view(np.uint8)))


class _VarBinaryNode(_Node):
    """Text and binary hashed in Arrow's view form: one 16-byte view per row, no per-row copy.

    Every string/binary variant is first viewed as ``string_view``/``binary_view`` (Polars'
    own layout: zero-copy; ``string``/``large_string`` are cast, which writes the views and
    reuses the value bytes). The Arrow spec fixes a value's view for its content alone when it
    is at most 12 bytes long (length, the bytes, zero padding), so such rows are hashed as the
    views buffer itself, at memory speed. A longer value's view holds a buffer index and an
    offset (layout): those 8 bytes are zeroed in a copy of the leaf's views, and the value's
    bytes are hashed whole, in row order, in a second stream.
    """

    def __init__(self) -> None:
        super().__init__()
        self.long = xxhash.xxh3_128()

    def feed(self, arr: pa.Array) -> None:
        # Arrow has no filter kernel for views, so null rows are dropped here, in NumPy.
        if len(arr) == 0:
            return
        view = arr if _is_view(arr.type) else _as_views(arr)
        views = _views_np(view)
        valid = None
        if view.null_count:
            null = _null_mask(view)
            self.nulls.update(_buffer(np.flatnonzero(null).astype("<i8") + self.rows))
            valid = ~null
        self.rows += len(view)
        long = None
        if len(view.buffers()) > 2:  # data buffers: some rows may be long
            long = views[:, :4].view("<i4").ravel() > _INLINE_BYTES
            if valid is not None:
                long &= valid
        if long is None or not long.any():
            self.values.update(_buffer(views if valid is None else views[valid]))
            return
        canonical = views.copy()
        canonical[long, 8:] = 0  # buffer index and offset: where the value lies, not what it is
        self.values.update(_buffer(canonical if valid is None else canonical[valid]))
        self.long.update(_long_value_bytes(view, views, long))

    def children(self) -> list[_Node]:
        return [_StreamNode(self.long)]


_INLINE_BYTES = 12  # Arrow view layout: values up to this length live inside the view
_MAX_VIEW_OFFSET = (1 << 31) - 1  # a view's offset into its data buffer is an ``<i4``


def _is_view(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_string_view(dtype) or pa.types.is_binary_view(dtype))


def _view_type(dtype: pa.DataType) -> pa.DataType:
    text = pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
    return pa.string_view() if text else pa.binary_view()


def _as_views(arr: pa.Array) -> pa.Array:
    """``arr`` (string/binary, offsets layout) in the view layout, as Arrow's cast writes it.

    A small array without nulls (a dictionary's distinct values, a category list) is laid out
    here in Python: Arrow's cast imports ``pyarrow.compute`` (~80 ms), which a process's first
    hit on a Categorical column would otherwise pay for a few dozen values.
    """
    if arr.null_count or len(arr) > _SMALL_DICTIONARY:
        return arr.cast(_view_type(arr.type))
    text = pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
    values = [value.encode() for value in arr.to_pylist()] if text else arr.to_pylist()
    if sum(map(len, values)) > _MAX_VIEW_OFFSET:
        return arr.cast(_view_type(arr.type))
    views = bytearray()
    data = bytearray()
    for value in values:
        size = len(value)
        if size <= _INLINE_BYTES:
            views += size.to_bytes(4, "little") + value.ljust(_INLINE_BYTES, b"\0")
        else:  # prefix, buffer 0, offset
            views += size.to_bytes(4, "little") + value[:4] + bytes(4)
            views += len(data).to_bytes(4, "little")
            data += value
    buffers = [None, pa.py_buffer(bytes(views)), pa.py_buffer(bytes(data))]
    return pa.Array.from_buffers(_view_type(arr.type), len(values), buffers)


def _views_np(arr: pa.Array) -> np.ndarray:
    """The 16-byte views of ``arr``'s own rows as an ``(n, 16)`` uint8 array (zero-copy)."""
    raw = np.frombuffer(arr.buffers()[1], np.uint8, count=(arr.offset + len(arr)) * 16)
    return raw[arr.offset * 16 :].reshape(len(arr), 16)


def _long_value_bytes(view: pa.Array, views: np.ndarray, long: np.ndarray) -> memoryview:
    """The bytes of the values longer than a view holds, concatenated in row order.

    Arrow 26 has no take/filter kernel for views, but casts them: the same views and data
    buffers, with a validity bitmap marking only the long rows, cast to an offsets layout
    write exactly the long values back to back (a null row writes no bytes; checked by the
    total). The per-row work is Arrow's C++, and only long rows are copied.
    """
    sequential = _sequential_long_bytes(view, views, long)
    if sequential is not None:
        return sequential
    large = pa.large_string() if pa.types.is_string_view(view.type) else pa.large_binary()
    validity = pa.py_buffer(np.packbits(long, bitorder="little"))
    buffers = [validity, pa.py_buffer(views), *view.buffers()[2:]]
    flat = pa.Array.from_buffers(view.type, len(long), buffers).cast(large)
    expected = int(views[long, :4].view("<i4").sum(dtype=np.int64))
    offsets = np.frombuffer(flat.buffers()[1], "<i8", count=flat.offset + len(flat) + 1)
    start, end = int(offsets[flat.offset]), int(offsets[-1])
    if end - start != expected:  # pragma: no cover - an Arrow that writes bytes for nulls
        flat = view.cast(large).take(_arrow_positions(long))
        offsets = np.frombuffer(flat.buffers()[1], "<i8", count=flat.offset + len(flat) + 1)
        start, end = int(offsets[flat.offset]), int(offsets[-1])
    data = flat.buffers()[2]
    return memoryview(data)[start:end] if data is not None else memoryview(b"")


def _sequential_long_bytes(
    view: pa.Array, views: np.ndarray, long: np.ndarray
) -> memoryview | None:
    """The long values' bytes read straight from the first data buffer, or None.

    When the long rows point, in row order, at consecutive bytes of data buffer 0 from its
    start (as a writer that appends each value lays them out, and :func:`_as_views` does), the
    buffer's head already is their concatenation: no cast, no ``pyarrow.compute``.
    """
    picked = views[long]
    lengths = picked[:, :4].view("<i4").ravel().astype(np.int64)
    starts = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    if picked[:, 8:12].view("<i4").any() or not np.array_equal(
        picked[:, 12:].view("<i4").ravel(), starts
    ):
        return None
    data = view.buffers()[2]
    total = int(lengths.sum())
    if data is None or data.size < total:
        return None
    return memoryview(data)[:total]


class _StreamNode(_Node):
    """Adapter exposing an extra stream of a node as a pseudo child."""

    def __init__(self, stream: xxhash.xxh3_128) -> None:
        self.stream = stream

    def digest(self) -> bytes:
        return self.stream.digest()


class _ListNode(_Node):
    def __init__(self, child: _Node, fixed: bool) -> None:
        super().__init__()
        self.child = child
        self.fixed = fixed

    def _feed_valid(self, arr: pa.Array) -> None:
        if pa.types.is_map(arr.type):
            entries = pa.struct([("key", arr.type.key_type), ("value", arr.type.item_type)])
            arr = arr.cast(pa.list_(entries))
        if not self.fixed:
            lengths = _pc().list_value_length(arr)  # no nulls: only valid rows are fed here
            self.values.update(_buffer(_int_values(lengths, "<i8")) if len(arr) else b"")
        self.child.feed(arr.flatten())

    def children(self) -> list[_Node]:
        return [self.child]


class _StructNode(_Node):
    def __init__(self, fields: list[_Node]) -> None:
        super().__init__()
        self.fields = fields

    def _feed_valid(self, arr: pa.Array) -> None:
        for node, child in zip(self.fields, arr.flatten(), strict=True):
            node.feed(child)

    def children(self) -> list[_Node]:
        return self.fields


class _DictNode(_Node):
    """Dictionary values as (sorted distinct used values, per-row rank); see module docstring."""

    def __init__(self, dtype: pa.DictionaryType, where: str) -> None:
        super().__init__()
        self.dtype = dtype
        self.where = where
        self.pieces: list[pa.DictionaryArray] = []

    def feed(self, arr: pa.Array) -> None:
        self.pieces.append(arr)
        self.rows += len(arr)

    def digest(self) -> bytes:
        parts = [self.rows.to_bytes(8, "little")]
        if self.dtype.ordered:
            parts.append(self._categories_digest())
        if pa.types.is_floating(self.dtype.value_type):
            decoded = _make_node(self.dtype.value_type, self.where)
            for piece in self.pieces:
                decoded.feed(piece.dictionary_decode())
            return _digest(b"decoded", *parts, decoded.digest())
        fully_used = self._fully_used_dictionary()
        if fully_used is not None:
            ranks, values_digest, indices = fully_used
            codes = xxhash.xxh3_128()
            for piece_indices in indices:
                codes.update(_buffer(_lookup(ranks, piece_indices)))
            return _digest(*parts, codes.digest(), values_digest)
        distinct = self._used_distinct_values()
        codes = xxhash.xxh3_128()
        for piece in self.pieces:
            codes.update(_buffer(self._codes(piece, distinct)))
        values = _make_node(self.dtype.value_type, self.where)
        values.feed(distinct)
        return _digest(*parts, codes.digest(), values.digest())

    def _fully_used_dictionary(
        self,
    ) -> tuple[np.ndarray, bytes, list[np.ndarray | bytearray]] | None:
        """The rank of each entry, the digest of the sorted values and each piece's indices
        (as ``_lookup`` takes them), when every piece has no null row and uses every entry of
        one small text dictionary (a Categorical column's usual leaf); None otherwise.

        Remembered by the dictionary's exact bytes, so the leaves of one column (and the hits
        after) rank their dictionary once, not once per leaf in Python. The result is the one
        the general route gives: the ranks are the ones ``_codes`` gathers.
        """
        key = _content_key(self.pieces[0].dictionary) if self.pieces else None
        if key is None:
            return None
        indices: list[np.ndarray | bytearray] = []
        for piece in self.pieces:
            if piece.null_count or _content_key(piece.dictionary) != key:
                return None
            size = len(piece.dictionary)
            if size <= 256:
                as_bytes = _byte_indices(_values_np(piece.indices), size)
                if not all(as_bytes.find(entry) >= 0 for entry in range(size)):
                    return None
                indices.append(as_bytes)
            elif _used_mask(piece, size) is not None:
                return None
            else:
                indices.append(_values_np(piece.indices))
        found = _FULLY_USED.get(key)
        if found is None:
            distinct = self._used_distinct_values()
            dtype, missing = _rank_type(len(distinct))
            rank = {value: i for i, value in enumerate(distinct.to_pylist())}
            entries = self.pieces[0].dictionary.to_pylist()
            ranks = np.array([rank.get(value, missing) for value in entries], dtype)
            values = _make_node(self.dtype.value_type, self.where)
            values.feed(distinct)
            found = (ranks, values.digest())
            if len(_FULLY_USED) >= _FULLY_USED_ENTRIES:
                _FULLY_USED.clear()
            _FULLY_USED[key] = found
        return (*found, indices)

    def _categories_digest(self) -> bytes:
        node = _make_node(self.dtype.value_type, self.where)
        previous = None
        for piece in self.pieces:
            categories = _canonical_values(piece.dictionary)
            if previous is None or not categories.equals(previous):
                node.feed(categories)
                previous = categories
        return node.digest()

    def _used_distinct_values(self) -> pa.Array:
        if all(_small_text(piece.dictionary) for piece in self.pieces):
            return _large_text(self._used_small_text())
        pc = _pc()
        used = []
        for piece in self.pieces:
            dictionary = _canonical_values(piece.dictionary)
            mask = _used_mask(piece, len(dictionary))
            used.append(dictionary if mask is None else dictionary.take(_arrow_positions(mask)))
        value_type = _canonical_values(pa.nulls(0, self.dtype.value_type)).type
        values = pa.concat_arrays(used) if used else pa.nulls(0, value_type)
        values = pc.drop_null(pc.unique(values))
        return values.take(pc.sort_indices(values))

    @staticmethod
    def _codes(piece: pa.DictionaryArray, distinct: pa.Array) -> np.ndarray:
        """Each row's rank among ``distinct``; every index read is bounds-checked, so a corrupt
        index raises instead of being cast or wrapped onto another value's rank."""
        dtype, missing = _rank_type(len(distinct))
        dictionary = _canonical_values(piece.dictionary)
        raw = _values_np(piece.indices)
        if not piece.null_count and dictionary.equals(distinct):
            _require_indices_below(raw, len(dictionary))
            return raw.astype(dtype)  # identity mapping: the indices are the ranks
        if not piece.null_count and len(distinct) == 1:
            _require_indices_below(raw, len(dictionary))
            return np.zeros(len(piece), dtype)  # every row holds the one used value: rank 0
        if _small_text(dictionary) and _small_text(distinct):
            rank = {value: i for i, value in enumerate(distinct.to_pylist())}
            # missing: an unused entry (or a null one), as index_in's null gives below
            ranks = np.array([rank.get(v, missing) for v in dictionary.to_pylist()], dtype)
        else:
            found = _pc().index_in(dictionary, value_set=distinct)  # null: an unused entry
            ranks = np.full(len(found), missing, dtype)
            present = ~_null_mask(found)
            ranks[present] = _values_np(found)[present]
        valid = ~_null_mask(piece.indices) if piece.null_count else None
        used = raw if valid is None else raw[valid]
        taken = _lookup(ranks, used)
        if valid is None:
            return taken
        out = np.full(len(raw), missing, dtype)
        out[valid] = taken
        return out

    def _used_small_text(self) -> list[str]:
        """The sorted distinct used values of small text dictionaries, without Arrow kernels.

        Python orders ``str`` by code point, which is the byte order of their UTF-8 (what
        Arrow's sort uses), so both routes give the same list.
        """
        values: set[str] = set()
        for piece in self.pieces:
            items = piece.dictionary.to_pylist()
            mask = _used_mask(piece, len(items))
            values.update(items if mask is None else (v for v, m in zip(items, mask) if m))
        values.discard(None)  # a null in the dictionary is no value
        return sorted(values)


_SMALL_DICTIONARY = 4096  # entries; larger dictionaries go through Arrow's kernels
_KEY_BYTES = 1 << 18  # a dictionary whose buffers hold more is not remembered (64 x 256 KB at most)
_FULLY_USED_ENTRIES = 64
# (dictionary type, offset, length, buffer bytes) -> (rank per entry, digest of the values)
_FULLY_USED: dict[tuple[Any, ...], tuple[np.ndarray, bytes]] = {}


def _content_key(dictionary: pa.Array) -> tuple[Any, ...] | None:
    """An exact key for a small text dictionary's content: equal keys, equal values (equal
    values laid out differently merely get two keys). None for any other dictionary."""
    if not _small_text(dictionary):
        return None
    buffers = dictionary.buffers()
    if sum(buffer.size for buffer in buffers if buffer is not None) > _KEY_BYTES:
        return None
    raw = tuple(None if buffer is None else buffer.to_pybytes() for buffer in buffers)
    return (str(dictionary.type), dictionary.offset, len(dictionary), raw)


def _require_indices_below(raw: np.ndarray, size: int) -> None:
    """Raise FingerprintError unless every index in ``raw`` is in ``[0, size)``."""
    if len(raw) and (int(raw.max()) >= size or (raw.dtype.kind == "i" and int(raw.min()) < 0)):
        raise FingerprintError("dictionary index out of range (corrupt Arrow array)")


def _byte_indices(raw: np.ndarray, size: int) -> bytearray:
    """Dictionary indices below ``size`` <= 256, one byte per row; a corrupt index (out of
    range) raises. A presence test is then a ``find``, a byte table a ``translate``."""
    _require_indices_below(raw, size)
    narrow = bytearray(len(raw))
    np.copyto(np.frombuffer(narrow, np.uint8), raw, casting="unsafe")
    return narrow


def _lookup(table: np.ndarray, indices: np.ndarray | bytearray) -> np.ndarray:
    """``table[indices]``, every index bounds-checked first (a corrupt one raises); indices
    given as bytes are ``_byte_indices``, checked already.

    NumPy's checked ``take`` widens the indices to ``intp`` and checks each: ~3x the cost of
    a checked maximum and an unchecked gather. A byte table is applied by ``bytes.translate``,
    one C loop over a byte per row, faster still.
    """
    if table.dtype == np.uint8 and len(table) <= 256:
        if not isinstance(indices, bytearray):
            indices = _byte_indices(indices, len(table))
        lut = table.tobytes().ljust(256, b"\0")
        return np.frombuffer(indices.translate(lut), np.uint8)
    if isinstance(indices, bytearray):
        return np.take(table, np.frombuffer(indices, np.uint8))
    _require_indices_below(indices, len(table))
    return np.take(table, indices, mode="wrap")  # every index is in range: nothing wraps


def _rank_type(distinct: int) -> tuple[np.dtype[Any], int]:
    """The narrowest per-row rank type for ``distinct`` used values, and its null/unused rank.

    A function of the leaf's logical content (the count of distinct used values, which is in
    the digest), so the width never depends on layout; narrow ranks hash and gather faster.
    """
    if distinct < 0xFF:
        return np.dtype("<u1"), 0xFF
    if distinct < 0xFFFF:
        return np.dtype("<u2"), 0xFFFF
    return np.dtype("<i4"), -1


def _small_text(arr: pa.Array) -> bool:
    """Whether ``arr`` is a text array small enough to handle as Python strings."""
    t = pa.types
    text = t.is_string(arr.type) or t.is_large_string(arr.type) or t.is_string_view(arr.type)
    return text and len(arr) <= _SMALL_DICTIONARY


def _large_text(values: list[str]) -> pa.Array:
    """A large_string array of ``values`` (no nulls), built from its buffers.

    Not ``pa.array(values)``: that imports pandas (~300 ms) in a process serving a hit.
    """
    encoded = [value.encode() for value in values]
    offsets = np.zeros(len(encoded) + 1, "<i8")
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.large_string(), len(encoded), buffers)


def _arrow_positions(mask: np.ndarray) -> pa.Array:
    """The positions where ``mask`` is true, as an Arrow int64 array.

    Built from the NumPy buffer directly: ``pa.array(ndarray)`` imports pandas (~300 ms in a
    process that has not loaded it), which a hit must not pay.
    """
    positions = np.flatnonzero(mask).astype("<i8")
    return pa.Array.from_buffers(pa.int64(), len(positions), [None, pa.py_buffer(positions)])


def _used_mask(piece: pa.DictionaryArray, size: int) -> np.ndarray | None:
    """Return which dictionary entries are used by non-null rows (None: all of them)."""
    raw = _values_np(piece.indices)
    if piece.indices.null_count:
        raw = raw[~_null_mask(piece.indices)]
    if raw.dtype.kind == "i" and len(raw) and int(raw.min()) < 0:
        _require_indices_below(raw, size)  # bincount refuses negatives with a ValueError
    if size == 0:
        return np.zeros(0, bool)
    # A prefix that already uses every entry proves the whole piece does (cheap common case).
    prefix = np.bincount(raw[:_PREFIX_ROWS].astype(np.intp, copy=False), minlength=size)
    if prefix.size == size and prefix.all():
        return None
    if len(raw) and raw.min() == raw.max() < size:  # one entry throughout (one symbol's ticks)
        used = np.zeros(size, bool)
        used[raw[0]] = True
        return used
    counts = np.bincount(raw.astype(np.intp, copy=False), minlength=size)
    if counts.size > size:
        raise FingerprintError("dictionary index out of range (corrupt Arrow array)")
    return None if counts.all() else counts > 0


def _make_node(dtype: pa.DataType, where: str) -> _Node:
    """Build the hashing node tree for ``dtype``."""
    t = pa.types
    if t.is_dictionary(dtype):
        return _DictNode(dtype, where)
    if t.is_null(dtype):
        return _NullNode()
    if t.is_boolean(dtype):
        return _BoolNode()
    if t.is_string(dtype) or t.is_large_string(dtype) or t.is_string_view(dtype):
        return _VarBinaryNode()
    if t.is_binary(dtype) or t.is_large_binary(dtype) or t.is_binary_view(dtype):
        return _VarBinaryNode()
    if t.is_map(dtype):
        entries = pa.struct([("key", dtype.key_type), ("value", dtype.item_type)])
        return _ListNode(_make_node(entries, where), fixed=False)
    if t.is_list(dtype) or t.is_large_list(dtype):
        return _ListNode(_make_node(dtype.value_type, where), fixed=False)
    if t.is_fixed_size_list(dtype):
        return _ListNode(_make_node(dtype.value_type, where), fixed=True)
    if t.is_struct(dtype):
        return _StructNode(
            [_make_node(dtype.field(i).type, where) for i in range(dtype.num_fields)]
        )
    width = _fixed_width(dtype)
    if width:
        return _FixedNode(width)
    raise FingerprintError(_unsupported_type(where, dtype))


# ----------------------------------------------------------------------------- table digest


def _leaves(column: pa.ChunkedArray) -> Iterator[list[pa.Array]]:
    """Yield the column's rows cut at fixed global positions into lists of zero-copy pieces."""
    cutter = _LeafCutter()
    for chunk in column.chunks:
        yield from cutter.add(chunk)
    if cutter.pieces:
        yield cutter.pieces


class _LeafCutter:
    """Cuts one column's chunks, arriving in order, into leaves of ``LEAF_ROWS`` rows."""

    def __init__(self) -> None:
        self.pieces: list[pa.Array] = []
        self.room = LEAF_ROWS

    def add(self, chunk: pa.Array) -> Iterator[list[pa.Array]]:
        start = 0
        while start < len(chunk):
            take = min(self.room, len(chunk) - start)
            self.pieces.append(chunk.slice(start, take))
            start += take
            self.room -= take
            if self.room == 0:
                yield self.pieces
                self.pieces, self.room = [], LEAF_ROWS


def _hash_leaf(dtype: pa.DataType, where: str, pieces: list[pa.Array]) -> bytes:
    node = _make_node(dtype, where)
    for piece in pieces:
        node.feed(piece)
    return node.digest()


def require_supported(schema: pa.Schema) -> None:
    """Raise FingerprintError naming the first column whose type has no exact fingerprint.

    The handled types are an allow-list (``_describe``, ``_make_node``): anything else — unions,
    run-end encoded, list views, extension types — is refused, never guessed at.
    """
    for field in schema:
        where = f"column {field.name!r} (type {field.type})"
        _describe(field.type, where)
        _make_node(field.type, where)


def fingerprint_table(table: pa.Table, *, threads: int | None = None) -> str:
    """Return the exact content digest of ``table``, e.g. ``'xxh3_128:v2:<32 hex>'``.

    ``threads`` is the number of hashing threads (None: one per usable CPU; 1: hash in the
    calling thread). Raises FingerprintError naming the column for an unsupported type.
    """
    if not isinstance(table, pa.Table):
        raise FingerprintError(f"fingerprint_table needs a pyarrow.Table, got {type(table)!r}")
    digest = TableDigest(table.schema, threads=threads)
    digest.update(table)
    return digest.hexdigest()


_IN_FLIGHT_PER_WORKER = 2  # leaves queued per hashing thread before ``update`` waits

_Columns = tuple[tuple[tuple[pa.DataType, str, TypeDescriptor], ...], tuple[bytes, ...]]
# (name, type) of every column -> what ``TableDigest`` needs of them. A caller's frame keeps
# its schema call after call, and describing it anew cost ~0.2 ms right after a compute.
_COLUMNS: dict[tuple[tuple[str, pa.DataType], ...], _Columns] = {}
_COLUMNS_ENTRIES = 256


def _columns_of(schema: pa.Schema) -> _Columns:
    """Each column's (type, where, logical type descriptor) and its header bytes; raises
    FingerprintError for an unsupported column type (never remembered)."""
    key = tuple((field.name, field.type) for field in schema)
    found = _COLUMNS.get(key)
    if found is not None:
        return found
    fields, headers = [], []
    for name, dtype in key:
        where = f"column {name!r} (type {dtype})"
        desc = _describe(dtype, where)
        _make_node(dtype, where)  # fail early on unsupported nested types
        fields.append((dtype, where, desc))
        headers.append(json.dumps([name, desc], ensure_ascii=False).encode())
    if len(_COLUMNS) >= _COLUMNS_ENTRIES:
        _COLUMNS.clear()
    found = _COLUMNS[key] = (tuple(fields), tuple(headers))
    return found


class TableDigest:
    """The digest of a table that arrives in batches (e.g. decoded from a large file).

    Equal to :func:`fingerprint_table` of the batches' concatenation, because leaves sit at
    fixed global row positions whatever the batches are. Memory stays bounded: full leaves go to
    the hashing pool as they form, and ``update`` waits once ``2 × threads`` leaves are queued,
    so a caller decoding a file holds a few leaves plus its own batch, not the file.
    """

    def __init__(self, schema: pa.Schema, *, threads: int | None = None) -> None:
        """``schema``: the batches' schema (checked per batch by logical type); ``threads`` as
        in :func:`fingerprint_table`. Raises FingerprintError for an unsupported column type."""
        self._fields, self._headers = _columns_of(schema)
        self._names = schema.names
        self._cutters = [_LeafCutter() for _ in self._fields]
        self._slots: list[list[Future[bytes] | bytes]] = [[] for _ in self._fields]
        self._queued: list[tuple[int, list[pa.Array]]] = []
        self._in_flight: deque[Future[bytes]] = deque()
        self._workers = threads or _usable_cpus()
        self._rows = 0

    def update(self, table: pa.Table | pa.RecordBatch) -> None:
        """Hash the rows of ``table`` after the rows fed before.

        Raises FingerprintError if its columns' names or logical types differ from the schema.
        """
        self._require_same_columns(table.schema)
        self._rows += table.num_rows
        for i, column in enumerate(table.columns):
            chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
            for chunk in chunks:
                for pieces in self._cutters[i].add(chunk):
                    self._queue(i, pieces)

    def hexdigest(self) -> str:
        """Return the digest of every row fed so far (then feed no more)."""
        for i, cutter in enumerate(self._cutters):
            if cutter.pieces:
                self._queue(i, cutter.pieces)
                cutter.pieces = []
        if self._queued and (
            self._workers <= 1 or (len(self._queued) == 1 and not self._slots_used())
        ):
            for i, pieces in self._queued:  # one leaf in all: not worth a thread hop
                self._slots[i].append(_hash_leaf(*self._fields[i][:2], pieces))
            self._queued = []
        self._submit_queued()
        columns = []
        for header, slots in zip(self._headers, self._slots, strict=True):
            leaves = [s if isinstance(s, bytes) else s.result() for s in slots]
            columns.append(_digest(header, *leaves))
        rows = self._rows.to_bytes(8, "little")
        final = _digest(DATA_SCHEME.encode(), rows, len(columns).to_bytes(8, "little"), *columns)
        return f"{DATA_SCHEME}:{final.hex()}"

    def _require_same_columns(self, schema: pa.Schema) -> None:
        if schema.names != self._names:
            raise FingerprintError(
                f"a batch of the input has columns {schema.names}, earlier ones {self._names}; "
                "every part of one input needs the same columns in the same order"
            )
        for field, (dtype, where, desc) in zip(schema, self._fields, strict=True):
            if field.type != dtype and _describe(field.type, where) != desc:
                raise FingerprintError(
                    f"a batch of the input has column {field.name!r} of type {field.type}, "
                    f"earlier ones {where}; cast the parts of the input to one type"
                )

    def _slots_used(self) -> bool:
        return any(self._slots)

    def _queue(self, column: int, pieces: list[pa.Array]) -> None:
        self._queued.append((column, pieces))
        if self._workers > 1 and len(self._queued) + len(self._in_flight) > 1:
            self._submit_queued()

    def _submit_queued(self) -> None:
        if not self._queued:
            return
        if self._workers <= 1:
            for i, pieces in self._queued:
                self._slots[i].append(_hash_leaf(*self._fields[i][:2], pieces))
            self._queued = []
            return
        pool = _pool(self._workers)
        for i, pieces in self._queued:
            future = pool.submit(_hash_leaf, *self._fields[i][:2], pieces)
            self._slots[i].append(future)
            self._in_flight.append(future)
        self._queued = []
        while len(self._in_flight) > _IN_FLIGHT_PER_WORKER * self._workers:
            self._in_flight.popleft().result()
        while self._in_flight and self._in_flight[0].done():
            self._in_flight.popleft()


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (pid, workers) -> pool
_pools_lock = threading.Lock()


@on_fork
def _forget_pools() -> None:
    """A forked child has none of the parent's threads (nor may it wait on their lock)."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """A hashing thread pool kept for the process: starting threads on every hit costs more
    than some hashes do. A forked child (no threads survive a fork) makes its own. Its tasks
    never wait on the pool themselves, so callers in several threads cannot deadlock it."""
    key = (os.getpid(), workers)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(workers, thread_name_prefix="jules-hash")
        return pool


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
