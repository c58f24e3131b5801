"""Random sequences of calls, damage, crash leftovers, checks and GC against an in-memory model.

The model is the direct computation: whatever happened to the files, the manifest or the
temp folder, every value the cache returns must equal it, and nothing may raise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from features import bar_count
from helpers import local_backend
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from jules_cache import FeatureStore
from jules_cache.maintenance.check import LEFTOVER_KINDS
from jules_cache.synthetic import make_ticks, symbol_names, ticks_for

pytestmark = pytest.mark.slow  # a long random search: 20 runs of 20 steps

TICKS = make_ticks(symbol_names(3), 6_000, seed=5)
SYMBOLS = symbol_names(2)
FREQS = ["1m", "5m"]


class CacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="jules-stateful-"))
        self.store = FeatureStore(self.tmp / "cache")
        self.frames = {symbol: ticks_for(TICKS, symbol) for symbol in SYMBOLS}
        self.model: dict[tuple[str, str], pl.DataFrame] = {}

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def expected(self, symbol: str, freq: str) -> pl.DataFrame:
        if (symbol, freq) not in self.model:
            self.model[symbol, freq] = bar_count(
                self.frames[symbol].lazy(), {"freq": freq}
            ).collect()
        return self.model[symbol, freq]

    def result_files(self) -> list[Path]:
        return sorted(local_backend(self.store).layout.objects.rglob("*.parquet"))

    @rule(symbol=st.sampled_from(SYMBOLS), freq=st.sampled_from(FREQS), lazy=st.booleans())
    def get_or_compute(self, symbol: str, freq: str, lazy: bool) -> None:
        value = self.store.get_or_compute(
            symbol, self.frames[symbol], {"freq": freq}, bar_count, name="bars", lazy=lazy
        )
        if lazy:
            assert isinstance(value, pl.LazyFrame)
            value = value.collect()
        assert value.equals(self.expected(symbol, freq))

    @rule(index=st.integers(0, 500), how=st.sampled_from(["truncate", "garbage", "delete", "flip"]))
    def damage_a_file(self, index: int, how: str) -> None:
        files = self.result_files()
        if not files:
            return
        path = files[index % len(files)]
        data = bytearray(path.read_bytes())
        if how == "delete":
            path.unlink()
        elif how == "truncate":
            path.write_bytes(bytes(data[: len(data) // 2]))
        elif how == "garbage":
            path.write_bytes(os.urandom(len(data)))
        else:  # one bit inside a data page: only the page checksum can tell
            try:
                column = pq.read_metadata(path).row_group(0).column(0)
            except ValueError:  # damaged already (ArrowInvalid): leave it so
                return
            size = column.total_compressed_size
            data[column.data_page_offset + size // 3 + (index * 37) % (size // 2)] ^= 0x08
            path.write_bytes(bytes(data))

    @rule()
    def crash_leftover_temp(self) -> None:
        """What a put killed mid-write leaves: a partial file in tmp/."""
        name = f"{'ab' * 16}.999.1.deadbeef.parquet.tmp"
        (local_backend(self.store).layout.tmp / name).write_bytes(b"PAR1 half written")

    @rule(index=st.integers(0, 50))
    def crash_leftover_orphan(self, index: int) -> None:
        """What a put killed between rename and commit leaves: a file without its row."""
        entries = self.store.entries()
        if entries:
            key = entries[index % len(entries)].key
            with local_backend(self.store).manifest.write() as con:
                con.execute("DELETE FROM entries WHERE key = ?", [key])

    @rule(fix=st.booleans(), deep=st.booleans())
    def check(self, fix: bool, deep: bool) -> None:
        report = self.store.check(fix=fix, deep=deep, grace_seconds=0)
        if fix:
            assert report.consistent
            again = self.store.check(deep=deep, grace_seconds=0)
            assert {p.kind for p in again.problems} <= LEFTOVER_KINDS - {"stale_temp"}

    @rule()
    def gc(self) -> None:
        self.store.gc(retention_weeks=0, grace=0)

    @invariant()
    def published_files_are_complete_or_absent(self) -> None:
        assert not any(
            p.name.endswith(".tmp") for p in local_backend(self.store).layout.objects.rglob("*")
        )


CacheMachine.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCache = CacheMachine.TestCase
