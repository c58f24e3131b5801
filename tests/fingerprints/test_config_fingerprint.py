"""Canonical config encoding: exact types, order-free mappings/sets, clear errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import pathlib
from decimal import Decimal

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jules_cache.errors import FingerprintError
from jules_cache.fingerprints.config import canonical_config


def digest(value) -> str:
    return canonical_config(value).digest


class Side(enum.Enum):
    BUY = 1
    SELL = 2


@dataclasses.dataclass(frozen=True)
class Window:
    size: int
    unit: str = "m"


class Custom:
    def __init__(self, x):
        self.x = x

    def __jules_fingerprint__(self):
        return {"x": self.x}


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=4)
)
configs = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
        st.tuples(inner, inner),
    ),
    max_leaves=12,
)


@settings(deadline=None, max_examples=60)
@given(configs)
def test_deterministic_and_dict_order_free(config):
    assert digest(config) == digest(config)
    if isinstance(config, dict):
        reordered = dict(reversed(list(config.items())))
        assert digest(reordered) == digest(config)
        assert canonical_config(reordered).json == canonical_config(config).json


@settings(deadline=None, max_examples=60)
@given(st.dictionaries(st.text(max_size=4), st.integers(), min_size=1, max_size=5), st.data())
def test_any_value_change_changes_the_digest(config, data):
    key = data.draw(st.sampled_from(sorted(config)))
    changed = {**config, key: config[key] + 1}
    assert digest(changed) != digest(config)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (True, 1),
        (1, 1.0),
        (0.0, -0.0),
        ([1, 2], (1, 2)),
        ({1: "x"}, {"1": "x"}),
        ("1", b"1"),
        (None, "null"),
        (dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
        (
            dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
            dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        ),
        (dt.date(2024, 1, 1), dt.datetime(2024, 1, 1)),
        (Decimal("1.1"), 1.1),
        (Side.BUY, 1),
        (np.int64(1), 1),
        (np.arange(3, dtype=np.int64), np.arange(3, dtype=np.int32)),
        (np.zeros((2, 3)), np.zeros((3, 2))),
        ({1, 2}, [1, 2]),
        (pathlib.Path("a/b"), "a/b"),
        (Window(5), {"size": 5, "unit": "m"}),
        (Custom(1), {"x": 1}),
        (float("nan"), float("inf")),
    ],
)
def test_distinct_values_never_collide(a, b):
    assert digest(a) != digest(b)


def test_sets_are_order_free_and_numpy_is_exact():
    assert digest({"s": {3, 1, 2}}) == digest({"s": {2, 3, 1}})
    big = np.arange(10_000, dtype=np.float64)
    changed = big.copy()
    changed[5000] += 1  # in the middle, where a repr would print "..."
    assert digest(big) != digest(changed)
    assert digest(np.asfortranarray(np.eye(3))) == digest(np.eye(3))
    assert digest(dt.timedelta(seconds=1)) != digest(dt.timedelta(seconds=2))


def test_readable_json_is_queryable():
    config = {"freq": "1m", "windows": [5, 20], "alpha": 0.5, "side": Side.SELL, "keys": {1: "a"}}
    text = canonical_config(config).json
    assert json.loads(text)["windows"] == [5, 20]
    got = duckdb.execute("SELECT json_extract_string(?, '$.freq')", [text]).fetchall()[0][0]
    assert got == "1m"


def test_unsupported_values_name_their_path():
    with pytest.raises(FingerprintError, match=r"config\['windows'\]\[2\]"):
        canonical_config({"windows": [1, 2, object()]})
    with pytest.raises(FingerprintError, match=r"lambda|function"):
        canonical_config({"f": lambda x: x})


def test_recursive_structures_are_refused():
    loop: list = [1]
    loop.append(loop)
    with pytest.raises(FingerprintError, match="itself"):
        canonical_config({"a": loop})
    shared = [1, 2]
    assert canonical_config({"a": shared, "b": shared}).digest  # shared is not recursive
