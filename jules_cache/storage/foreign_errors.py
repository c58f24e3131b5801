"""Where the storage libraries' own errors become the package's (as httpx maps its transports'):
an ``OSError``, a DuckDB, Polars, pyarrow, psycopg or botocore error raised inside a storage
call leaves it as ``StoreError`` naming what was being done, with the original as its cause.

Above the storage seam (the façade, the CLI) only ``JulesCacheError`` is ever caught. A
library is looked up only if it is loaded: an error of a module never imported cannot occur,
and a hit must not import DuckDB to find that out.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from jules_cache.errors import JulesCacheError, StoreError

# (module, attribute) of each storage library's base error, looked up when loaded.
_LIBRARY_ERRORS = (
    ("polars.exceptions", "PolarsError"),
    ("duckdb", "Error"),
    ("pyarrow.lib", "ArrowException"),
    ("psycopg", "Error"),
    ("botocore.exceptions", "BotoCoreError"),
    ("botocore.exceptions", "ClientError"),
)


def foreign_errors() -> tuple[type[BaseException], ...]:
    """``OSError`` and the base errors of the storage libraries loaded in this process."""
    found: list[type[BaseException]] = [OSError]
    for module_name, attribute in _LIBRARY_ERRORS:
        module = sys.modules.get(module_name)
        error = getattr(module, attribute, None) if module is not None else None
        if isinstance(error, type) and issubclass(error, BaseException):
            found.append(error)
    return tuple(found)


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a storage implementation catches for "this storage step failed": the package's
    errors and the foreign ones (never above the seam, where only the package's are caught)."""
    return (JulesCacheError, *foreign_errors())


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise a foreign storage error of the block as ``StoreError("<what>: <error>")``."""
    try:
        yield
    except JulesCacheError:
        raise
    except Exception as exc:
        if not isinstance(exc, foreign_errors()):
            raise
        raise StoreError(f"{what}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, OSError) or not text:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
