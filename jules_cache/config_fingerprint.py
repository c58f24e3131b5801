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
so does a self-referencing structure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import pathlib
import struct
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import xxhash

from jules_cache.errors import FingerprintError

SCHEME = "xxh3_128:v1"
_SMALL_ARRAY = 64  # arrays up to this many items are shown in full in the readable JSON


@dataclass(frozen=True)
class CanonicalConfig:
    """A config's readable JSON (for the manifest) and the digest of its exact encoding."""

    json: str
    digest: str


def canonical_config(config) -> CanonicalConfig:
    """Return the canonical form of ``config``; raise FingerprintError for unsupported values."""
    tagged, readable = _Canon().encode(config, "config")
    exact = json.dumps(tagged, separators=(",", ":"), ensure_ascii=True)
    digest = xxhash.xxh3_128(b"jules-config\0" + exact.encode()).hexdigest()
    text = json.dumps(readable, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return CanonicalConfig(json=text, digest=f"{SCHEME}:{digest}")


def qualname(obj_or_type) -> str:
    """Return ``module.QualName`` of a class (or of an instance's class)."""
    cls = obj_or_type if isinstance(obj_or_type, type) else type(obj_or_type)
    return f"{cls.__module__}.{cls.__qualname__}"


def _sort_key(tagged) -> str:
    return json.dumps(tagged, separators=(",", ":"), ensure_ascii=True)


def _float_tag(x: float) -> str:
    if math.isnan(x):  # float.hex() forgets NaN sign and payload; the bits do not
        return "nan:" + struct.pack(">d", x).hex()
    return x.hex()


class _Canon:
    """One encoding pass; tracks the containers on the current path to detect cycles."""

    def __init__(self) -> None:
        self.active: set[int] = set()

    def encode(self, value: Any, path: str) -> tuple[Any, Any]:
        """Return ``(tagged, readable)`` for ``value`` found at ``path``."""
        scalar = self._scalar(value)
        if scalar is not None:
            return scalar
        if id(value) in self.active:
            raise FingerprintError(f"{path} refers to itself (recursive structure)")
        self.active.add(id(value))
        try:
            return self._compound(value, path)
        finally:
            self.active.discard(id(value))

    # Scalars: no recursion possible.
    def _scalar(self, v: Any) -> tuple[Any, Any] | None:
        if hasattr(type(v), "__jules_fingerprint__"):
            return None
        if v is None:
            return ["none"], None
        if isinstance(v, bool):
            return ["bool", v], v
        if isinstance(v, enum.Enum):
            return None
        if isinstance(v, np.generic):
            return self._numpy_scalar(v)
        if isinstance(v, int):
            return ["int", str(int(v))], int(v)
        if isinstance(v, float):
            x = float(v)
            return ["float", _float_tag(x)], x if math.isfinite(x) else {"$float": repr(x)}
        if isinstance(v, str):
            return ["str", str(v)], str(v)
        if isinstance(v, bytes | bytearray):
            return ["bytes", bytes(v).hex()], {"$bytes": bytes(v).hex()}
        if isinstance(v, Decimal):
            return ["decimal", str(v)], {"$decimal": str(v)}
        if isinstance(v, pathlib.PurePath):
            return ["path", type(v).__name__, str(v)], {"$path": str(v)}
        return self._temporal(v)

    @staticmethod
    def _numpy_scalar(v: np.generic) -> tuple[Any, Any]:
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
    def _compound(self, v: Any, path: str) -> tuple[Any, Any]:
        cls = type(v)
        if hasattr(cls, "__jules_fingerprint__"):
            inner_t, inner_r = self.encode(
                v.__jules_fingerprint__(), f"{path}.__jules_fingerprint__()"
            )
            return ["custom", qualname(v), inner_t], {"$custom": qualname(v), "value": inner_r}
        if isinstance(v, enum.Enum):
            inner_t, inner_r = self.encode(v.value, f"{path}.value")
            name = f"{qualname(v)}.{v.name}"
            return ["enum", name, inner_t], {"$enum": name, "value": inner_r}
        if isinstance(v, np.ndarray):
            return self._ndarray(v, path)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return self._dataclass(v, path)
        if isinstance(v, tuple) and hasattr(cls, "_fields"):
            items = [self.encode(getattr(v, f), f"{path}.{f}") for f in cls._fields]
            tagged = [
                "namedtuple",
                qualname(v),
                [[f, t] for f, (t, _) in zip(cls._fields, items, strict=True)],
            ]
            return tagged, {f: r for f, (_, r) in zip(cls._fields, items, strict=True)}
        if isinstance(v, list | tuple):
            items = [self.encode(x, f"{path}[{i}]") for i, x in enumerate(v)]
            tag = "list" if isinstance(v, list) else "tuple"
            return [tag, [t for t, _ in items]], [r for _, r in items]
        if isinstance(v, dict):
            return self._dict(v, path)
        if isinstance(v, set | frozenset):
            items = sorted(
                (self.encode(x, f"{path}{{{x!r}}}") for x in v), key=lambda p: _sort_key(p[0])
            )
            tag = "set" if isinstance(v, set) else "frozenset"
            return [tag, [t for t, _ in items]], {f"${tag}": [r for _, r in items]}
        raise FingerprintError(
            f"cannot fingerprint {path}: unsupported type {qualname(v)}; use plain data, a "
            "dataclass, or define __jules_fingerprint__() on the class"
        )

    def _dict(self, v: dict, path: str) -> tuple[Any, Any]:
        entries = []
        for key, value in v.items():
            key_t, key_r = self.encode(key, f"{path}.keys()[{key!r}]")
            val_t, val_r = self.encode(value, f"{path}[{key!r}]")
            entries.append((key_t, val_t, key, key_r, val_r))
        entries.sort(key=lambda e: _sort_key(e[0]))
        tagged = ["dict", [[k, t] for k, t, *_ in entries]]
        if all(type(e[2]) is str for e in entries):
            return tagged, {key: val_r for _, _, key, _, val_r in entries}
        return tagged, {"$dict": [[key_r, val_r] for *_, key_r, val_r in entries]}

    def _dataclass(self, v: Any, path: str) -> tuple[Any, Any]:
        fields = [f.name for f in dataclasses.fields(v)]
        items = [self.encode(getattr(v, f), f"{path}.{f}") for f in fields]
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

    def _ndarray(self, v: np.ndarray, path: str) -> tuple[Any, Any]:
        descr = str(np.lib.format.dtype_to_descr(v.dtype))
        shape = list(v.shape)
        if v.dtype.hasobject:
            items = [self.encode(x, f"{path}.flat[{i}]") for i, x in enumerate(v.flat)]
            return ["ndarray-object", shape, [t for t, _ in items]], {
                "$ndarray": "object",
                "shape": shape,
                "values": [r for _, r in items],
            }
        data = np.ascontiguousarray(v).tobytes()
        readable: dict[str, Any] = {"$ndarray": descr, "shape": shape}
        if v.size <= _SMALL_ARRAY and v.dtype.kind in "biu":
            readable["values"] = v.tolist()
        else:
            readable["xxh3_128"] = xxhash.xxh3_128(data).hexdigest()
        return ["ndarray", descr, shape, xxhash.xxh3_128(data).hexdigest(), len(data)], readable
