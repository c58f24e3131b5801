"""Large configs: long lists of numbers and arrays are hashed from buffers, exactly, and a
config whose readable JSON is huge is stored in the manifest by digest, not as text.

A 1M-element list used to cost seconds on every hit (one tagged node per element) and ~11 MB
of manifest per entry. Speed is measured in ``benchmarks/bench_config.py``; these tests pin the
exactness the fast path must keep and what the manifest stores.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jules_cache.fingerprints.config import MAX_CONFIG_JSON_BYTES, canonical_config
from jules_cache.fingerprints.keys import CONFIG_SCHEME

N = 200_000


def digest(value) -> str:
    return canonical_config(value).digest


def nan(payload: int) -> float:
    return struct.unpack(">d", struct.pack(">Q", 0x7FF8000000000000 | payload))[0]


def test_a_long_list_is_exact_in_every_element():
    floats = [i * 0.5 for i in range(N)]
    base = digest(floats)
    assert digest(list(floats)) == base
    for index in (0, N // 2, N - 1):
        changed = list(floats)
        changed[index] = math.nextafter(changed[index], math.inf)
        assert digest(changed) != base, index
    assert digest(floats[:-1]) != base
    assert digest([*floats, 0.0]) != base


@pytest.mark.slow  # ten million-element configs
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([float(i) for i in range(N)], list(range(N))),  # float vs int
        ([float(i) for i in range(N)], [float(i) for i in range(N - 1)] + [N - 1]),  # one int
        ([1.0] * N, [True] * N),  # float vs bool
        ([1] * N, [True] * N),  # int vs bool
        ([0.0] * N, [-0.0] * N),
        ([nan(1)] * N, [nan(2)] * N),  # NaN payloads, as for a single float
        ([0.5] * N, tuple([0.5] * N)),  # list vs tuple
        (list(range(N)), [*range(N - 1), 2**70]),  # beyond int64: element by element
        (list(range(N)), [*range(N - 1), np.int64(N - 1)]),  # a NumPy scalar is not an int
        ([0.5] * N, np.full(N, 0.5)),  # a list is not an array (see the Polars test below)
        ([[0.5, 1.5]] * 3, [[0.5, 1.5]] * 2 + [[0.5, 2.5]]),  # nested lists
    ],
)
def test_distinct_long_lists_never_collide(a, b):
    assert digest(a) != digest(b)


@settings(deadline=None, max_examples=60)
@given(
    st.one_of(
        st.lists(st.floats(allow_nan=True), min_size=1, max_size=40),
        st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=40),
    ),
    st.data(),
)
def test_changing_any_element_changes_the_digest(values, data):
    index = data.draw(st.integers(0, len(values) - 1))
    changed = list(values)
    old = changed[index]
    changed[index] = old + 1 if isinstance(old, int) else math.nextafter(old, math.inf)
    if struct.pack("<d", float(changed[index])) == struct.pack("<d", float(old)):
        return  # nextafter(inf) is inf
    assert digest(changed) != digest(values)


def test_an_array_is_exact_whatever_its_layout():
    array = np.random.default_rng(1).random((1000, 1000))
    assert digest(array) == digest(np.asfortranarray(array)) == digest(array.copy())
    changed = array.copy()
    changed[500, 500] += 1e-12
    assert digest(changed) != digest(array)
    assert digest(array[:, ::2]) == digest(np.ascontiguousarray(array[:, ::2]))
    days = np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[D]")  # no buffer export
    assert digest(days) != digest(days + 1)


def test_numpy_and_python_numbers_stay_distinct_because_polars_computes_differently():
    """``np.float64(1.5)`` and ``1.5`` (or a list and an array) are different keys on purpose:
    Polars gives them different results, so one key would serve a wrong result."""
    frame = pl.DataFrame({"x": pl.Series([1.0, 2.0], dtype=pl.Float32)})
    by_float = frame.select(pl.col("x") * 1.5)
    by_numpy = frame.select(pl.col("x") * np.float64(1.5))
    assert by_float.dtypes != by_numpy.dtypes  # Float32 vs Float64
    assert digest(1.5) != digest(np.float64(1.5))
    ints = pl.DataFrame({"i": pl.Series([1, 2], dtype=pl.Int32)})
    assert ints.select(pl.col("i") * 3).dtypes != ints.select(pl.col("i") * np.int64(3)).dtypes
    assert digest(3) != digest(np.int64(3))
    as_list = frame.select(pl.lit([1.5, 2.5]).alias("w"))
    as_array = frame.select(pl.lit(np.array([1.5, 2.5])).alias("w"))
    assert as_list.schema != as_array.schema  # List(Float64) vs Float64
    assert digest([1.5, 2.5]) != digest(np.array([1.5, 2.5]))


def test_long_lists_are_summarised_in_the_readable_json():
    readable = json.loads(canonical_config({"weights": [0.25] * N, "freq": "1m"}).json)
    assert readable["freq"] == "1m"
    summary = readable["weights"]
    assert summary["$list"] == "float64" and summary["len"] == N
    short = json.loads(canonical_config({"windows": [5, 20], "w": [0.5, math.inf]}).json)
    assert short == {"windows": [5, 20], "w": [0.5, {"$float": "inf"}]}


def test_a_huge_config_is_stored_by_digest():
    config = {"labels": [f"instrument-{i}" for i in range(20_000)]}
    canonical = canonical_config(config)
    assert len(canonical.json.encode()) < 1024
    placeholder = json.loads(canonical.json)
    assert placeholder["$config"] == canonical.digest
    assert placeholder["bytes"] > MAX_CONFIG_JSON_BYTES
    small = canonical_config({"labels": config["labels"][:10]})
    assert json.loads(small.json) == {"labels": config["labels"][:10]}


def test_the_manifest_stores_a_huge_config_by_digest_and_explain_says_so(store, aapl):
    def passthrough(ticks, config):
        return ticks.head(5)

    big = {"labels": [f"instrument-{i}" for i in range(20_000)], "freq": "1m"}
    first = store.fetch("AAPL", aapl, big, passthrough)
    assert store.fetch("AAPL", aapl, big, passthrough).hit
    entry = store.entry(first.key)
    assert len(entry.config_json) < 1024 and entry.config["$config"] == entry.config_fingerprint
    other = {**big, "freq": "5m"}
    (difference,) = store.explain("AAPL", aapl, other, passthrough).differences
    assert difference.startswith("config: too large to compare key by key")


def test_the_config_scheme_is_named():
    assert digest([1.0]).startswith(CONFIG_SCHEME + ":")
