"""Say why a call would miss: which key component differs from the closest cached entry.

Users of every cache ask "why did this recompute?". The manifest keeps each component of every
key (data, config as canonical JSON, code per function, symbol, key scheme) and the versions
of the libraries that executed it, so the answer is a comparison with the entries of the same
feature — closest first — without computing anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jules_cache.fingerprints import keys
from jules_cache.fingerprints.config import is_stored_by_digest
from jules_cache.fingerprints.keys import ENGINE_LIBRARIES, KEY_SCHEMA
from jules_cache.models import Entry, _ToDict


@dataclass(frozen=True)
class Explanation(_ToDict):
    """Why a call hits or misses: the closest entry and the components that differ."""

    key: str
    feature: str
    symbol: str
    cached: bool
    closest_key: str | None
    differences: tuple[str, ...]
    # Routes from the feature to code or values the code fingerprint could not follow (eval,
    # a computed import, an object recorded by type only): an edit there is not seen.
    unfollowed: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.cached:
            lines = [f"hit: {self.feature} for {self.symbol!r} is cached as {self.key}"]
        elif self.closest_key is None:
            lines = [f"miss: no cached entry of feature {self.feature!r} yet"]
        else:
            lines = [f"miss: closest entry {self.closest_key} differs in:"]
            lines += [f"  - {difference}" for difference in self.differences]
        if self.unfollowed:
            lines.append(
                "note: not followed by the code fingerprint (an edit there does not change the "
                "key; pass version= and bump it, or make the route static):"
            )
            lines += [f"  - {route}" for route in self.unfollowed]
        return "\n".join(lines)


@dataclass(frozen=True)
class CallComponents:
    """The key components of the call being explained."""

    key: str
    feature: str
    symbol: str
    data_fingerprint: str
    files: tuple[Any, ...]  # InputFile rows, for file inputs
    config_fingerprint: str
    config_json: str
    code_fingerprint: str
    code_version: str | None
    code_functions: dict[str, str]
    code_unfollowed: tuple[str, ...] = ()


def explain(
    call: CallComponents,
    cached: bool,
    candidates: list[Entry],
    inputs: dict[str, list[tuple[Any, ...]]],
) -> Explanation:
    """Compare ``call`` with ``candidates`` (entries of the same feature) and pick the closest.

    ``cached`` says whether the call's result file exists; ``inputs`` maps an entry key to its
    recorded input-file rows (position, path, size, mtime_ns, ...).
    """
    notes = call.code_unfollowed
    if cached:
        return Explanation(call.key, call.feature, call.symbol, True, call.key, (), notes)
    ranked = sorted(
        candidates,
        key=lambda e: (len(_differences(call, e, inputs.get(e.key, []))), e.symbol != call.symbol),
    )
    if not ranked:
        return Explanation(call.key, call.feature, call.symbol, False, None, (), notes)
    closest = ranked[0]
    differences = _differences(call, closest, inputs.get(closest.key, []))
    if not differences:  # every component equal but no file at the key: evicted or deleted
        differences = ["nothing in the key: the entry's file is missing (deleted or collected)"]
    return Explanation(
        call.key, call.feature, call.symbol, False, closest.key, tuple(differences), notes
    )


def _differences(call: CallComponents, entry: Entry, files: list[tuple[Any, ...]]) -> list[str]:
    found = []
    if entry.key_schema != KEY_SCHEMA:
        found.append(f"key scheme: entry uses v{entry.key_schema}, this version uses v{KEY_SCHEMA}")
    if entry.symbol != call.symbol:
        found.append(f"symbol: {entry.symbol!r} -> {call.symbol!r}")
    if entry.data_fingerprint != call.data_fingerprint:
        found.append(_data_difference(call, entry, files))
    if entry.config_fingerprint != call.config_fingerprint:
        found += _config_differences(call, entry)
    if entry.code_fingerprint != call.code_fingerprint:
        found += _code_differences(call, entry) or [
            "code: a referenced global value or third-party package version changed"
        ]
    return found


def _data_difference(call: CallComponents, entry: Entry, files: list[tuple[Any, ...]]) -> str:
    old_scheme = entry.data_fingerprint.rsplit(":", 1)[0]
    new_scheme = call.data_fingerprint.rsplit(":", 1)[0]
    if old_scheme != new_scheme:
        return f"data: fingerprinted as {old_scheme} then, {new_scheme} now"
    if files and call.files:
        old = {row[1]: row for row in files}
        for now in call.files:
            before = old.get(now.path)
            if before is None:
                return f"data: input file {now.path} was not an input of the entry"
            if before[-1] != now.digest:
                return (
                    f"data: input file {now.path} changed (size {before[2]} -> {now.size}, "
                    f"mtime_ns {before[3]} -> {now.mtime_ns})"
                )
        return "data: the list or order of input files differs"
    return "data: content differs (a value, null, row order, column name or type)"


def _config_differences(call: CallComponents, entry: Entry) -> list[str]:
    old_scheme = entry.config_fingerprint.rsplit(":", 1)[0]
    new_scheme = call.config_fingerprint.rsplit(":", 1)[0]
    if old_scheme != new_scheme:
        return [f"config: fingerprinted as {old_scheme} then, {new_scheme} now"]
    old, new = json.loads(entry.config_json), json.loads(call.config_json)
    if is_stored_by_digest(old) or is_stored_by_digest(new):
        size = max(c["bytes"] for c in (old, new) if is_stored_by_digest(c))
        return [
            f"config: too large to compare key by key (stored by digest: {size:,} bytes of "
            "JSON); a value, a type or an item differs"
        ]
    changes = _json_differences(old, new)
    return [f"config{change}" for change in changes] or [
        "config: same values, different types (e.g. tuple vs list, 1 vs 1.0)"
    ]


def _json_differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{path}[{key!r}]"
            if key not in old:
                found.append(f"{where}: added ({_short(new[key])})")
            elif key not in new:
                found.append(f"{where}: removed (was {_short(old[key])})")
            else:
                found += _json_differences(old[key], new[key], where)
        return found
    if old != new:
        return [f"{path}: {_short(old)} -> {_short(new)}"]
    return []


def _code_differences(call: CallComponents, entry: Entry) -> list[str]:
    if entry.code_version != call.code_version:
        return [f"code version: {entry.code_version!r} -> {call.code_version!r}"]
    found = _engine_differences(entry)
    if call.code_version is not None:
        return found
    old_scheme = entry.code_fingerprint.rsplit(":", 1)[0]
    new_scheme = call.code_fingerprint.rsplit(":", 1)[0]
    if old_scheme != new_scheme:
        return [*found, f"code: fingerprinted as {old_scheme} then, {new_scheme} now"]
    old = json.loads(entry.code_functions or "{}")
    new = call.code_functions
    for name in sorted(set(old) | set(new)):
        if name not in old:
            found.append(f"code: {name} is now called")
        elif name not in new:
            found.append(f"code: {name} is no longer called")
        elif old[name] != new[name]:
            found.append(f"code: {name} changed")
    return found


def _engine_differences(entry: Entry) -> list[str]:
    """The libraries that execute every feature (part of the code fingerprint) whose version
    differs from the one recorded with the entry; the call runs in this process."""
    try:
        recorded = json.loads(entry.library_versions or "{}")
    except ValueError:
        return []
    now = keys.engine_versions()
    found = []
    for library in ENGINE_LIBRARIES:
        if library in recorded and recorded[library] != now[library]:
            before, after = (v or "not installed" for v in (recorded[library], now[library]))
            found.append(f"library: {library} {before} → {after}")
    return found


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."
