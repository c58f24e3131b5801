"""compute_many over the shared cache: 2 Dask worker processes, one s3:// root, one catalog."""

from __future__ import annotations

import polars as pl
import pytest

pytest.importorskip(
    "distributed", reason='dask.distributed is not installed (pip install "jules-cache[shared]")'
)

from features import bar_count
from helpers import dask_client

from jules_cache import FeatureStore, compute_many
from jules_cache.synthetic import make_ticks, symbol_names, ticks_for

pytestmark = pytest.mark.shared
CONFIG = {"freq": "1m"}
SYMBOLS = symbol_names(16)


def test_a_fan_out_over_the_shared_cache_equals_a_direct_run_and_then_all_hits(
    services, s3_url, pg_schema, tmp_path
):
    ticks = make_ticks(SYMBOLS, 32_000, seed=11)
    files = {}
    for symbol in SYMBOLS:
        path = tmp_path / f"{symbol.replace('/', '_')}.parquet"
        ticks_for(ticks, symbol).write_parquet(path)
        files[symbol] = str(path)
    options = {"catalog": services.pg_dsn, "catalog_schema": pg_schema}
    with dask_client() as client:
        frames = compute_many(
            s3_url, bar_count, files, config=CONFIG, client=client, store_options=options
        )
        for symbol, frame in zip(SYMBOLS, frames, strict=True):
            direct = bar_count(pl.scan_parquet(files[symbol]), CONFIG).collect()
            assert frame.equals(direct), symbol
        again = compute_many(
            s3_url, bar_count, files, config=CONFIG, client=client, store_options=options,
            collect=False,
        )  # fmt: skip
        assert [outcome.hit for outcome in again] == [True] * 16
    with FeatureStore(s3_url, **options) as store:
        assert {entry.symbol for entry in store.entries()} == set(SYMBOLS)
        local = store.fetch(SYMBOLS[5], files[SYMBOLS[5]], CONFIG, bar_count)
        assert local.hit and local.value.equals(frames[5])
        assert store.check().consistent
