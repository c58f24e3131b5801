"""One view per config: a query never mixes a feature's configs without saying so.

A feature's view shows one result per (symbol, input data, config). A feature stored under
several configs would therefore show each minute once per config, and a join or an aggregate
over it would over-count with no warning (``ofi`` under three configs joined to ``bar_count``:
11,700 minutes per symbol instead of 3,900). So, beside ``<view>`` and ``<view>_history``:

- ``<view>__<digest>`` -- one config's results (latest code version), where ``<digest>`` is
  the first 8 hex digits of the entry's ``config_fingerprint``: stable for good, whatever
  configs arrive later;
- ``<view>__all`` -- every config's results (latest code version): reading all configs on
  purpose, to filter or group by ``config_json``;
- ``<view>`` -- as simple as ever while the feature has one config; once it has more, reading
  it is refused with a ``QueryError`` that names each config's view and ``<view>__all``;
- ``feature_configs`` -- one row per (feature, config): its view name and ``config_json``.

Example, ``ofi`` under windows 5, 10 and 20::

    store.sql("SELECT * FROM bar_count b JOIN ofi o USING (symbol, ts)")
    # QueryError: ofi holds the results of 3 configs ... ofi__9b1e4c02 = {"window":10} ...
    store.sql("SELECT * FROM bar_count b JOIN ofi__9b1e4c02 o USING (symbol, ts)")

``<view>_history`` stays the raw view of every stored result (every code version and config).
A real feature view always wins a name: if one is called ``x__all``, feature ``x`` has no
``x__all``. Two configs of one feature whose fingerprints share their first 8 hex digits (odds
~1 in 4 billion per pair) share a view that then refuses too, naming both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from jules_cache.errors import QueryError

if TYPE_CHECKING:
    from jules_cache.query.views import FileRow

SEPARATOR = "__"
ALL = "all"
DIGITS = 8
CONFIGS_VIEW = "feature_configs"
_PICK = re.compile(r"[0-9a-f]{8}")
_LISTED = 12  # configs named in a refusal; the rest are in feature_configs
_SHOWN = 120  # characters of a config's JSON shown in a message


def digest(config_fingerprint: str) -> str:
    """The config's short digest: the first hex digits of its fingerprint after the scheme
    (``xxh3_128:9b1e4c02…`` -> ``9b1e4c02``)."""
    return config_fingerprint.rpartition(":")[2][:DIGITS]


def config_view(view: str, config_digest: str) -> str:
    """The name of the view of one config's results of feature view ``view``."""
    return f"{view}{SEPARATOR}{config_digest}"


def all_configs_view(view: str) -> str:
    """The name of the view of every config's results of feature view ``view``."""
    return f"{view}{SEPARATOR}{ALL}"


def split(name: str) -> tuple[str, str] | None:
    """``(view, "all" | digest)`` if ``name`` has the form of a config view, else None."""
    view, separator, pick = name.rpartition(SEPARATOR)
    if separator and view and (pick == ALL or _PICK.fullmatch(pick)):
        return view, pick
    return None


def configs(rows: Iterable[FileRow]) -> dict[str, str]:
    """``{config_fingerprint: config_json}`` of ``rows``, in first-seen order."""
    return {row.config_fingerprint: row.config_json for row in rows}


def by_digest(found: Mapping[str, str]) -> dict[str, str]:
    """``{short digest: config_json}`` of ``configs(...)`` (a digest shared by two configs
    lists both JSONs)."""
    grouped: dict[str, list[str]] = {}
    for fingerprint, text in found.items():
        grouped.setdefault(digest(fingerprint), []).append(text)
    return {short: " | ".join(texts) for short, texts in grouped.items()}


def rows_of(rows: Sequence[FileRow], short: str) -> list[FileRow]:
    """The rows of the config(s) whose short digest is ``short``."""
    return [row for row in rows if digest(row.config_fingerprint) == short]


def refusal(view: str, found: Mapping[str, str]) -> str:
    """Why ``view``, holding the configs ``found`` (``configs(...)``), cannot be read, and
    which views to read instead."""
    shorts = by_digest(found)
    listed = "; ".join(
        f"{config_view(view, short)} = {_short(text)}"
        for short, text in list(shorts.items())[:_LISTED]
    )
    more = f" (and {len(shorts) - _LISTED} more)" if len(shorts) > _LISTED else ""
    return (
        f"{view} holds the results of {len(found)} configs, so reading it would repeat each row "
        f"once per config (a join or an aggregate would over-count). Read one config's view: "
        f"{listed}{more}; or {all_configs_view(view)} to read every config on purpose "
        f"(filter or group by config_json). SELECT * FROM {CONFIGS_VIEW} lists them all."
    )


def missing(view: str, short: str, found: Mapping[str, str]) -> QueryError:
    """The error for a config view whose config has no (latest) results."""
    listed = ", ".join(config_view(view, d) for d in list(by_digest(found))[:_LISTED])
    return QueryError(
        f"{config_view(view, short)}: {view} has no results of config {short} (removed, or "
        "never stored); "
        f"its config views: {listed or 'none'}"
    )


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def configs_view_select(names: Mapping[str, str]) -> str:
    """The SELECT of ``feature_configs``: per feature view and config, its config view."""
    from jules_cache.query.views import sql_literal

    if names:
        values = ", ".join(
            f"({sql_literal(view)}, {sql_literal(feature)})"
            for feature, view in sorted(names.items(), key=lambda item: item[1])
        )
        source = f"(VALUES {values}) AS v(view_name, feature)"
    else:
        source = "(SELECT NULL::VARCHAR AS view_name, NULL::VARCHAR AS feature WHERE false) AS v"
    return (
        f"SELECT v.view_name, v.feature,\n"
        f"       v.view_name || '{SEPARATOR}' || "
        f"left(split_part(e.config_fingerprint, ':', -1), {DIGITS}) AS config_view,\n"
        "       e.config_json, e.config_fingerprint, count(*) AS entries,\n"
        "       count(DISTINCT e.symbol) AS symbols\n"
        f"FROM {source}\n"
        "JOIN entries AS e ON e.feature = v.feature\n"
        "GROUP BY ALL\n"
        "ORDER BY v.view_name, config_view"
    )
