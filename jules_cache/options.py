"""``StoreOptions``: every setting of a ``FeatureStore``, as one frozen value that checks itself.

``FeatureStore(root, **options)`` builds one; ``compute_many(store_options=StoreOptions(...))``
ships one to its workers. A wrong setting fails where it is written (``InvalidInput`` naming
it), never later on a worker or deep in a call.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from dataclasses import dataclass
from typing import Any, Literal

from jules_cache.errors import InvalidInput

COMPRESSIONS = ("lz4", "zstd", "snappy", "gzip", "uncompressed")
FINGERPRINT_MODES = ("content", "footer")
DEFAULT_GRACE_SECONDS = 6 * 3600.0  # temp, lock and unlisted files younger than this stay
DEFAULT_REFRESH_SECONDS = 10.0  # how stale catalog.duckdb may get while a process writes


@dataclass(frozen=True)
class StoreOptions:
    """The settings of a store (``FeatureStore``'s docstring says what each one does)."""

    lock_timeout: float = 600.0
    strict: bool = False
    tick_data_threshold_mb: float = 100.0
    fingerprint: Literal["content", "footer"] = "content"
    compression: str = "lz4"
    time_column: str | None = None
    hit_flush_seconds: float = 30.0
    auto_gc: float | None = None
    auto_gc_limit: int = 1000
    catalog_refresh_seconds: float = DEFAULT_REFRESH_SECONDS
    log_compute_seconds: float = 10.0
    read_only: bool = False
    catalog: str | None = None
    catalog_schema: str | None = None
    max_size: int | str | None = None  # bytes or '50GB': LRU eviction after each publish

    def __post_init__(self) -> None:
        for name in (
            "lock_timeout",
            "tick_data_threshold_mb",
            "hit_flush_seconds",
            "catalog_refresh_seconds",
            "log_compute_seconds",
        ):
            _number(name, getattr(self, name), minimum=0.0)
        _require(
            self.tick_data_threshold_mb < 2**40,
            f"tick_data_threshold_mb must be below 2**40, not {self.tick_data_threshold_mb}",
        )
        for name in ("strict", "read_only"):
            value = getattr(self, name)
            _require(isinstance(value, bool), f"{name} must be True or False, not {value!r}")
        _require(
            self.fingerprint in FINGERPRINT_MODES,
            f"fingerprint must be 'content' or 'footer', not {self.fingerprint!r}",
        )
        _require(
            self.compression in COMPRESSIONS,
            f"compression must be one of {', '.join(COMPRESSIONS)}, not {self.compression!r}",
        )
        if self.auto_gc is not None:
            _number("auto_gc", self.auto_gc, minimum=0.0)
            _require(self.auto_gc > 0, f"auto_gc must be None or > 0 seconds, not {self.auto_gc}")
        _require(
            isinstance(self.auto_gc_limit, int)
            and not isinstance(self.auto_gc_limit, bool)
            and self.auto_gc_limit >= 1,
            f"auto_gc_limit must be an int >= 1, not {self.auto_gc_limit!r}",
        )
        if self.max_size is not None:
            _require(
                isinstance(self.max_size, int | str) and not isinstance(self.max_size, bool),
                f"max_size must be bytes (an int) or a size such as '50GB', not {self.max_size!r}",
            )
            try:
                parse_size(self.max_size)
            except InvalidInput as exc:
                raise InvalidInput(f"max_size: {exc}") from None
        for name in ("time_column", "catalog", "catalog_schema"):
            value = getattr(self, name)
            _require(
                value is None or (isinstance(value, str) and value != "" and "\0" not in value),
                f"{name} must be None or a non-empty str without NUL, not {value!r}",
            )

    @classmethod
    def build(cls, options: StoreOptions | dict[str, Any] | None) -> StoreOptions:
        """``options`` as a ``StoreOptions``: an unknown name fails here, naming the known ones."""
        if options is None:
            return cls()
        if isinstance(options, StoreOptions):
            return options
        _require(
            isinstance(options, dict),
            f"store options must be a StoreOptions or a dict, not {type(options).__name__}",
        )
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(str(name) for name in options if name not in known)
        _require(
            not unknown,
            f"unknown store option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
        )
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(I?B)?\s*", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """'50GB' -> bytes (powers of 1024, as the CLI prints sizes); an int is bytes already."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.fullmatch(str(value))
        if not match:
            raise InvalidInput(f"max size {value!r} is not a size; write e.g. 50GB, 500MB or 1.5TB")
        number, unit = float(match.group(1)), match.group(2).upper()
        size = int(number * 1024 ** " KMGTP".index(unit or " "))
    if size <= 0:
        raise InvalidInput(f"max size must be > 0 bytes, not {value!r}")
    return size


def _number(name: str, value: Any, *, minimum: float) -> None:
    _require(
        isinstance(value, numbers.Real) and not isinstance(value, bool),
        f"{name} must be a number, not {type(value).__name__} {value!r}",
    )
    _require(value == value and value >= minimum, f"{name} must be >= {minimum:g}, not {value}")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidInput(message)


__all__ = [
    "COMPRESSIONS",
    "DEFAULT_GRACE_SECONDS",
    "DEFAULT_REFRESH_SECONDS",
    "StoreOptions",
    "parse_size",
]
