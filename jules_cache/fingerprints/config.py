"""Canonical, exact encoding of feature configs.

The old system hashed ``json.dumps(config, default=str)``: NumPy arrays were truncated by their
repr, sets were order-dependent and ``{1: x}`` equalled ``{"1": x}``. Here every value is
encoded as a *tagged* tree (``[tag, payload...]``) that keeps the Python type: ``True`` ≠ ``1``,
``1`` ≠ ``1.0``, list ≠ tuple, ``{1: x}`` ≠ ``{"1": x}``, naive ≠ aware datetimes. Dict and set
order never matter (entries are sorted by their encoding). The digest is taken over that tagged
encoding; a second, readable JSON (natural JSON where the value is natural JSON, ``{"$tag": …}``
objects otherwise) is kept for the manifest, where DuckDB's JSON functions can query it.

Supported: None, bool, int, float (bit-exact; NaN/inf allowed), str, bytes/bytearray, list,
tuple, namedtuple, dict (any canonicalisable keys), set/frozenset, date/datetime/time/timedelta,
Decimal, Enum, dataclass instances, NumPy scalars and arrays (dtype + shape + the bytes of a
C-contiguous copy), pathlib paths, and any object whose class defines ``__jules_fingerprint__()``
(returning a canonicalisable value; the class's qualified name is included). Anything else raises
:class:`~jules_cache.errors.FingerprintError` naming the path, e.g. ``config['windows'][2]``;
so do a self-referencing structure, nesting deeper than ``MAX_CONFIG_DEPTH``, an int wider than
``MAX_INT_BITS``, text with no UTF-8 form (lone surrogates), and any exception raised while a
value is read (a failing ``__jules_fingerprint__``, an unset dataclass field).

Size. A list or tuple whose items are all exactly ``float``, all exactly ``int`` (within int64)
or all exactly ``bool`` is one node: its item type, length and the xxh3 digest of the items as
one little-endian buffer (the same bits the per-item tags would carry, so nothing is lost);
arrays are hashed from their buffer too. A long one is summarised in the readable JSON
(``{"$list": "float64", "len": n, "xxh3_128": …}``), and a readable JSON still larger than
``MAX_CONFIG_JSON_BYTES`` is replaced by ``{"$config": <config fingerprint>, "bytes": n}``: the
manifest stores every config of every entry, and a hit must not parse megabytes of it.

NumPy values are NOT the Python numbers or lists they print as: ``np.float64(1.5)`` ≠ ``1.5``,
``np.int64(3)`` ≠ ``3`` and ``np.array([1.5])`` ≠ ``[1.5]``, because Polars computes differently
with them (``pl.col("f32") * np.float64(1.5)`` is Float64, ``* 1.5`` stays Float32;
``pl.lit([1.5])`` is a list, ``pl.lit(np.array([1.5]))`` a column), so one key would serve a
result the call does not compute.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import pathlib
import reprlib
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import xxhash

from jules_cache.errors import FingerprintError
from jules_cache.fingerprints.keys import CONFIG_SCHEME

if TYPE_CHECKING:
    import numpy as np

_SMALL_ARRAY = 64  # arrays up to this many items are shown in full in the readable JSON
_SHOWN_ITEMS = 1000  # longer lists of numbers are summarised in the readable JSON
# A readable JSON above this size is stored by digest: ~1000 lines of config is far more than a
# person reads or a query filters on, and far less than the ~11 MB a 1M-item list took.
MAX_CONFIG_JSON_BYTES = 64 * 1024
# Lists of exactly these item types are hashed as one buffer (a bool is not an int here).
_VECTORS: dict[type, tuple[str, str]] = {
    float: ("float64", "<f8"),
    int: ("int64", "<i8"),
    bool: ("bool", "?"),
}

# Containers nested deeper than this are refused. Each level costs ~3 Python frames here and
# ~3 levels of the C JSON encoder (the tagged form nests [tag, [[key, value]]]), both counted
# against the interpreter's recursion limit (1000 by default, shared with the caller's stack).
# 100 keeps that below ~400 wherever the call comes from, and is 10x any real feature config.
MAX_CONFIG_DEPTH = 100
# Wider ints are refused: a 10**5000 in a config is a bug, and its digits would cost quadratic
# time. 4096 bits (1234 digits) holds any seed, hash or modulus. Checked by bit length, so the
# answer never depends on ``sys.set_int_max_str_digits``.
MAX_INT_BITS = 4096
_STR_DIGITS_SAFE_BITS = 2000  # str(int) works under any digit limit (>= 640) up to here
_repr = reprlib.Repr()  # keys in messages are cut short (Python 3.11 has no keywords here)
_repr.maxstring = _repr.maxother = 40


@dataclass(frozen=True)
class CanonicalConfig:
    """A config's readable JSON (for the manifest) and the digest of its exact encoding."""

    json: str
    digest: str


def canonical_config(config: Any) -> CanonicalConfig:
    """Return the canonical form of ``config``; raise FingerprintError for unsupported values."""
    tagged, readable = _Canon().encode(config, _ROOT)
    exact = json.dumps(tagged, separators=(",", ":"), ensure_ascii=True)
    hexdigest = xxhash.xxh3_128(b"jules-config\0" + exact.encode()).hexdigest()
    digest = f"{CONFIG_SCHEME}:{hexdigest}"
    text = json.dumps(readable, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    size = len(text.encode())
    if size > MAX_CONFIG_JSON_BYTES:
        text = json.dumps({"$config": digest, "bytes": size}, separators=(",", ":"))
    return CanonicalConfig(json=text, digest=digest)


def is_stored_by_digest(readable: Any) -> bool:
    """Whether a config's readable JSON (parsed) is the placeholder of a too-large config."""
    return isinstance(readable, dict) and set(readable) == {"$config", "bytes"}


def qualname(obj_or_type: Any) -> str:
    """Return ``module.QualName`` of a class (or of an instance's class)."""
    cls = obj_or_type if isinstance(obj_or_type, type) else type(obj_or_type)
    return f"{cls.__module__}.{cls.__qualname__}"


def _sort_key(tagged: Any) -> str:
    return json.dumps(tagged, separators=(",", ":"), ensure_ascii=True)


# A path inside the config, built lazily as (parent, format, step) links and rendered only for
# an error message: formatting every key with repr() up front would cost time on every call
# and could itself raise (a key whose __repr__ fails).
ConfigPath = tuple[Any, ...]  # (parent, format, step), or () for the config itself
_ROOT: ConfigPath = ()


def _step(parent: ConfigPath, fmt: str, step: Any) -> ConfigPath:
    return (parent, fmt, step)


def render_path(path: ConfigPath) -> str:
    """Return ``path`` as Python-like text, e.g. ``config['windows'][2]``."""
    steps = []
    while path:
        path, fmt, step = path
        if "{!r}" in fmt:  # keys and set members are shown by repr, attribute names as is
            steps.append(fmt.replace("{!r}", "{}").format(_safe_repr(step)))
        else:
            steps.append(fmt.format(step))
    return "config" + "".join(reversed(steps))


def _safe_repr(value: Any) -> str:
    try:
        return _repr.repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        return f"<{qualname(value)} object>"


def _int_digits(v: int, path: ConfigPath) -> str:
    if v.bit_length() > MAX_INT_BITS:
        raise FingerprintError(
            f"cannot fingerprint {render_path(path)}: an int of {v.bit_length()} bits; at most "
            f"{MAX_INT_BITS} bits are supported — pass it as bytes (n.to_bytes(...)) or as a "
            "hash of it"
        )
    if v.bit_length() <= _STR_DIGITS_SAFE_BITS:
        return str(v)
    return str(Decimal(v))  # Decimal conversion is not subject to the interpreter's digit limit


def _require_text(text: str, path: ConfigPath) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FingerprintError(
            f"cannot fingerprint {render_path(path)}: the text {_safe_repr(text)} has no UTF-8 "
            f"form ({text[exc.start : exc.end]!r} at position {exc.start} is a lone surrogate, "
            "e.g. from a file name decoded with surrogateescape), so it cannot be stored in the "
            "manifest; pass bytes (os.fsencode) or the real text"
        ) from None
    return text


def _float_tag(x: float) -> str:
    if math.isnan(x):  # float.hex() forgets NaN sign and payload; the bits do not
        return "nan:" + struct.pack(">d", x).hex()
    return x.hex()


class _Canon:
    """One encoding pass; tracks the containers on the current path to detect cycles."""

    def __init__(self) -> None:
        self.active: set[int] = set()
        self.depth = 0

    def encode(self, value: Any, path: ConfigPath) -> tuple[Any, Any]:
        """Return ``(tagged, readable)`` for ``value`` found at ``path``."""
        try:
            scalar = self._scalar(value, path)
            if scalar is not None:
                return scalar
            if id(value) in self.active:
                where = render_path(path)
                raise FingerprintError(f"{where} refers to itself (recursive structure)")
            if self.depth >= MAX_CONFIG_DEPTH:
                raise FingerprintError(
                    f"cannot fingerprint {render_path(path)}: the config is nested deeper than "
                    f"{MAX_CONFIG_DEPTH} levels; flatten it (or fingerprint the deep part "
                    "yourself with __jules_fingerprint__)"
                )
            self.active.add(id(value))
            self.depth += 1
            try:
                return self._compound(value, path)
            finally:
                self.active.discard(id(value))
                self.depth -= 1
        except (FingerprintError, MemoryError):
            raise
        except Exception as exc:  # the value's own code failed (a property, a hook, a repr)
            raise FingerprintError(
                f"cannot fingerprint {render_path(path)}: reading the {qualname(value)} value "
                f"raised {type(exc).__name__}: {exc}; make it plain data or fix the error"
            ) from exc

    # Scalars: no recursion possible.
    def _scalar(self, v: Any, path: ConfigPath) -> tuple[Any, Any] | None:
        if hasattr(type(v), "__jules_fingerprint__"):
            return None
        if v is None:
            return ["none"], None
        if isinstance(v, bool):
            return ["bool", v], v
        if isinstance(v, enum.Enum):
            return None
        numpy = _numpy()
        if numpy is not None and isinstance(v, numpy.generic):
            return self._numpy_scalar(v)
        if isinstance(v, int):
            digits = _int_digits(int(v), path)
            readable = int(v) if v.bit_length() <= _STR_DIGITS_SAFE_BITS else {"$int": digits}
            return ["int", digits], readable
        if isinstance(v, float):
            x = float(v)
            return ["float", _float_tag(x)], x if math.isfinite(x) else {"$float": repr(x)}
        if isinstance(v, str):
            text = _require_text(str(v), path)
            return ["str", text], text
        if isinstance(v, bytes | bytearray):
            return ["bytes", bytes(v).hex()], {"$bytes": bytes(v).hex()}
        if isinstance(v, Decimal):
            return ["decimal", str(v)], {"$decimal": str(v)}
        if isinstance(v, pathlib.PurePath):
            text = _require_text(str(v), path)
            return ["path", type(v).__name__, text], {"$path": text}
        return self._temporal(v)

    @staticmethod
    def _numpy_scalar(v: np.generic) -> tuple[Any, Any]:
        import numpy as np  # loaded already: ``v`` is a NumPy value

        descr = str(np.lib.format.dtype_to_descr(v.dtype))
        if v.dtype.kind == "O":
            raise FingerprintError("NumPy object scalars are not supported")
        tagged = ["np", descr, np.asarray(v).tobytes().hex()]
        if v.dtype.kind in "biuf" and (v.dtype.kind != "f" or math.isfinite(v)):
            return tagged, v.item()
        return tagged, {"$numpy": descr, "value": str(v)}

    @staticmethod
    def _temporal(v: Any) -> tuple[Any, Any] | None:
        if isinstance(v, dt.datetime):
            tz = None if v.tzinfo is None else str(v.tzinfo)
            tagged = ["datetime", qualname(v), v.isoformat(), tz, v.fold]
            return tagged, {"$datetime": v.isoformat(), "tz": tz}
        if isinstance(v, dt.date):
            return ["date", qualname(v), v.isoformat()], {"$date": v.isoformat()}
        if isinstance(v, dt.time):
            tz = None if v.tzinfo is None else str(v.tzinfo)
            return ["time", v.isoformat(), tz, v.fold], {"$time": v.isoformat(), "tz": tz}
        if isinstance(v, dt.timedelta):
            parts = [v.days, v.seconds, v.microseconds]
            tagged = ["timedelta", qualname(v), *parts]
            if type(v) is not dt.timedelta and hasattr(v, "isoformat"):
                tagged.append(v.isoformat())  # e.g. pandas Timedelta keeps nanoseconds there
            return tagged, {"$timedelta": v.total_seconds()}
        return None

    # Containers and user types.
    def _compound(self, v: Any, path: ConfigPath) -> tuple[Any, Any]:
        cls = type(v)
        if hasattr(cls, "__jules_fingerprint__"):
            inner_t, inner_r = self.encode(
                v.__jules_fingerprint__(), _step(path, ".__jules_fingerprint__()", None)
            )
            return ["custom", qualname(v), inner_t], {"$custom": qualname(v), "value": inner_r}
        if isinstance(v, enum.Enum):
            inner_t, inner_r = self.encode(v.value, _step(path, ".value", None))
            name = f"{qualname(v)}.{v.name}"
            return ["enum", name, inner_t], {"$enum": name, "value": inner_r}
        numpy = _numpy()
        if numpy is not None and isinstance(v, numpy.ndarray):
            return self._ndarray(v, path)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return self._dataclass(v, path)
        if isinstance(v, tuple) and hasattr(cls, "_fields"):
            items = [self.encode(getattr(v, f), _step(path, ".{}", f)) for f in cls._fields]
            tagged = [
                "namedtuple",
                qualname(v),
                [[f, t] for f, (t, _) in zip(cls._fields, items, strict=True)],
            ]
            return tagged, {f: r for f, (_, r) in zip(cls._fields, items, strict=True)}
        if isinstance(v, list | tuple):
            tag = "list" if isinstance(v, list) else "tuple"
            vector = _vector(v)
            if vector is not None:
                return _vector_encoding(tag, v, *vector)
            items = [self.encode(x, _step(path, "[{}]", i)) for i, x in enumerate(v)]
            return [tag, [t for t, _ in items]], [r for _, r in items]
        if isinstance(v, dict):
            return self._dict(v, path)
        if isinstance(v, set | frozenset):
            members = (self.encode(x, _step(path, "{{{!r}}}", x)) for x in v)
            items = sorted(members, key=lambda p: _sort_key(p[0]))
            tag = "set" if isinstance(v, set) else "frozenset"
            return [tag, [t for t, _ in items]], {f"${tag}": [r for _, r in items]}
        raise FingerprintError(
            f"cannot fingerprint {render_path(path)}: unsupported type {qualname(v)}; use plain "
            "data, a dataclass, or define __jules_fingerprint__() on the class"
        )

    def _dict(self, v: dict[Any, Any], path: ConfigPath) -> tuple[Any, Any]:
        entries = []
        for key, value in v.items():
            key_t, key_r = self.encode(key, _step(path, ".keys()[{!r}]", key))
            val_t, val_r = self.encode(value, _step(path, "[{!r}]", key))
            entries.append((key_t, val_t, key, key_r, val_r))
        entries.sort(key=lambda e: _sort_key(e[0]))
        tagged = ["dict", [[k, t] for k, t, *_ in entries]]
        if all(type(e[2]) is str for e in entries):
            return tagged, {key: val_r for _, _, key, _, val_r in entries}
        return tagged, {"$dict": [[key_r, val_r] for *_, key_r, val_r in entries]}

    def _dataclass(self, v: Any, path: ConfigPath) -> tuple[Any, Any]:
        fields = [f.name for f in dataclasses.fields(v)]
        items = [self.encode(getattr(v, f), _step(path, ".{}", f)) for f in fields]
        tagged = [
            "dataclass",
            qualname(v),
            [[f, t] for f, (t, _) in zip(fields, items, strict=True)],
        ]
        readable = {
            "$dataclass": qualname(v),
            "fields": {f: r for f, (_, r) in zip(fields, items, strict=True)},
        }
        return tagged, readable

    def _ndarray(self, v: np.ndarray, path: ConfigPath) -> tuple[Any, Any]:
        import numpy as np  # loaded already: ``v`` is a NumPy array

        descr = str(np.lib.format.dtype_to_descr(v.dtype))
        shape = list(v.shape)
        if v.dtype.hasobject:
            items = [self.encode(x, _step(path, ".flat[{}]", i)) for i, x in enumerate(v.flat)]
            return ["ndarray-object", shape, [t for t, _ in items]], {
                "$ndarray": "object",
                "shape": shape,
                "values": [r for _, r in items],
            }
        data = np.ascontiguousarray(v)  # hashed through the buffer protocol: no bytes copy
        hexdigest = xxhash.xxh3_128(_bytes_of(data)).hexdigest()
        readable: dict[str, Any] = {"$ndarray": descr, "shape": shape}
        if v.size <= _SMALL_ARRAY and v.dtype.kind in "biu":
            readable["values"] = v.tolist()
        else:
            readable["xxh3_128"] = hexdigest
        return ["ndarray", descr, shape, hexdigest, data.nbytes], readable


def _bytes_of(array: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without a copy (as bytes: NumPy exports no buffer for
    some dtypes, e.g. datetime64)."""
    return array.reshape(-1).view("u1").data


def _numpy() -> Any:
    """numpy if it is loaded (a NumPy value implies it is), else None: a config of plain
    Python values never loads it (``import jules_cache`` stays light)."""
    return sys.modules.get("numpy")


def _vector(items: Sequence[Any]) -> tuple[str, np.ndarray] | None:
    """``items`` as one little-endian buffer if they are all of one ``_VECTORS`` type."""
    if not items:
        return None
    kinds = set(map(type, items))  # exact types: a bool, np.float64 or float subclass is other
    if len(kinds) != 1:
        return None
    vector = _VECTORS.get(kinds.pop())
    if vector is None:
        return None
    name, dtype = vector
    import numpy as np  # a long list of numbers: hashed from one buffer

    try:
        return name, np.fromiter(items, dtype=dtype, count=len(items))
    except OverflowError:  # an int beyond int64: encoded item by item
        return None


def _vector_encoding(
    tag: str, items: Sequence[Any], name: str, buffer: np.ndarray
) -> tuple[Any, Any]:
    hexdigest = xxhash.xxh3_128(_bytes_of(buffer)).hexdigest()
    tagged = [f"{tag}:{name}", len(items), hexdigest]
    if len(items) > _SHOWN_ITEMS:
        return tagged, {f"${tag}": name, "len": len(items), "xxh3_128": hexdigest}
    if name == "float64":
        return tagged, [x if math.isfinite(x) else {"$float": repr(x)} for x in items]
    return tagged, list(items)
