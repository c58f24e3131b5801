"""compute_many on a real dask.distributed LocalCluster: 2 spawned worker processes, 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip(
    "distributed", reason='dask.distributed is not installed (pip install "jules-cache[shared]")'
)

import features
from features import bar_count, fails_on_negative_price, scaled_price
from helpers import dask_client

from jules_cache import (
    FanoutError,
    FeatureStore,
    InvalidInput,
    JobOutcome,
    WorkerMismatch,
    compute_many,
)
from jules_cache.synthetic import make_ticks, symbol_names, ticks_for

# The shared extra (dask) is installed in .ci/run's shared step, which runs this module.
pytestmark = pytest.mark.shared
CONFIG = {"freq": "1m"}
SYMBOLS = symbol_names(16)


@pytest.fixture(scope="module")
def client():
    """One cluster for the module: starting one costs ~1-2 s."""
    with dask_client() as started:
        yield started


@pytest.fixture(scope="module")
def tick_files(tmp_path_factory) -> dict[str, str]:
    """One Parquet file of ticks per symbol: what a worker is sent is a path."""
    folder = tmp_path_factory.mktemp("ticks")
    ticks = make_ticks(SYMBOLS, 64_000, seed=5)
    files = {}
    for symbol in SYMBOLS:
        path = folder / f"{symbol.replace('/', '_')}.parquet"
        ticks_for(ticks, symbol).write_parquet(path)
        files[symbol] = str(path)
    return files


def direct(compute_func, path: str) -> pl.DataFrame:
    """The feature computed here, without any cache."""
    return compute_func(pl.scan_parquet(path), CONFIG).collect()


def stored_keys(root: Path) -> set[str]:
    with FeatureStore(root) as store:
        return {entry.key for entry in store.entries()}


def test_results_equal_a_direct_computation_and_a_second_run_is_all_hits(
    client, tick_files, tmp_path
):
    root = tmp_path / "cache"
    frames = compute_many(root, bar_count, tick_files, config=CONFIG, client=client)

    assert len(frames) == len(SYMBOLS)
    for symbol, frame in zip(SYMBOLS, frames, strict=True):
        assert frame.equals(direct(bar_count, tick_files[symbol])), symbol
    outcomes = compute_many(
        root, bar_count, tick_files, config=CONFIG, client=client, collect=False
    )
    assert all(isinstance(outcome, JobOutcome) for outcome in outcomes)
    assert [outcome.symbol for outcome in outcomes] == SYMBOLS
    assert [outcome.index for outcome in outcomes] == list(range(16))
    assert all(outcome.hit for outcome in outcomes)
    assert {outcome.worker for outcome in outcomes} <= set(client.scheduler_info()["workers"])
    with FeatureStore(root) as store:
        stats = store.stats()
        assert (stats.entries, stats.misses, stats.hits) == (16, 16, 16)
        assert {entry.symbol for entry in store.entries()} == set(SYMBOLS)
        assert {entry.key for entry in store.entries()} == {o.key for o in outcomes}
        # The key the workers used is the one this process derives: a local call hits.
        local = store.fetch(SYMBOLS[3], tick_files[SYMBOLS[3]], CONFIG, bar_count)
        assert local.hit and local.value.equals(frames[3])
        assert store.check().consistent


def test_the_same_symbol_on_several_days_and_frames_as_data(client, tick_files, tmp_path):
    """Jobs are (symbol, data) pairs: a symbol may repeat; frames are scattered to workers."""
    root = tmp_path / "cache"
    day_one = pl.read_parquet(tick_files["AAPL"])
    day_two = day_one.with_columns(pl.col("ts") + pl.duration(days=1))
    jobs = [("AAPL", day_one), ("AAPL", day_two), ("MSFT", tick_files["MSFT"])]

    frames = compute_many(root, bar_count, jobs, config=CONFIG, client=client)

    assert frames[0].equals(bar_count(day_one.lazy(), CONFIG).collect())
    assert frames[1].equals(bar_count(day_two.lazy(), CONFIG).collect())
    assert not frames[0].equals(frames[1])
    assert frames[2].equals(direct(bar_count, tick_files["MSFT"]))
    assert len(stored_keys(root)) == 3


def test_a_failed_job_is_reported_with_its_symbol_and_the_others_are_stored(
    client, tick_files, tmp_path
):
    root = tmp_path / "cache"
    jobs = [(symbol, pl.read_parquet(path)) for symbol, path in tick_files.items()]
    bad = {4: SYMBOLS[4], 9: SYMBOLS[9]}
    for index, symbol in bad.items():
        jobs[index] = (symbol, jobs[index][1].with_columns(-pl.col("price")))

    with pytest.raises(FanoutError) as raised:
        compute_many(root, fails_on_negative_price, jobs, config=CONFIG, client=client)

    error = raised.value
    assert [(f.index, f.symbol) for f in error.failures] == sorted(bad.items())
    for failure in error.failures:
        assert isinstance(failure.error, ValueError)
        assert "negative price" in str(failure.error)
        assert f"#{failure.index} {failure.symbol}: ValueError: negative price" in str(error)
        assert "fails_on_negative_price" in failure.traceback  # the worker-side traceback
        assert "on worker tcp://127.0.0.1:" in failure.traceback
    assert "2 of 16 jobs" in str(error)
    assert isinstance(error.__cause__, ValueError)
    assert [i for i, r in enumerate(error.results) if r is None] == sorted(bad)
    good = [i for i in range(16) if i not in bad]
    for i in good:
        expected = fails_on_negative_price(jobs[i][1].lazy(), CONFIG)
        assert error.results[i].equals(expected)
    with FeatureStore(root) as store:
        assert sorted(entry.symbol for entry in store.entries()) == sorted(SYMBOLS[i] for i in good)


def test_progress_is_shown_when_asked_and_not_by_default_off_a_terminal(
    client, tick_files, tmp_path, capsys
):
    root = tmp_path / "cache"
    compute_many(root, bar_count, tick_files, config=CONFIG, client=client, progress=True)
    shown = capsys.readouterr().err.splitlines()
    assert shown[0].startswith("bar_count [") and "0/16" in shown[0]
    assert "16/16  hits 0  computed 16  errors 0" in shown[-1]
    assert len(shown) <= 12  # off a terminal: a line per 10%, not one per job

    compute_many(root, bar_count, tick_files, config=CONFIG, client=client, collect=False)
    assert capsys.readouterr().err == ""  # stderr is no terminal here: off by default

    compute_many(root, bar_count, tick_files, config=CONFIG, client=client, progress=True)
    assert "16/16  hits 16  computed 0  errors 0" in capsys.readouterr().err


def volume_by_minute(ticks: pl.LazyFrame, config: dict) -> pl.LazyFrame:
    """A feature of this test module: cloudpickle sends it by name, workers import the module."""
    return ticks.group_by_dynamic("ts", every=config["freq"]).agg(pl.col("size").sum())


def test_a_function_of_the_test_module_itself_gets_the_same_key(client, tick_files, tmp_path):
    root = tmp_path / "cache"
    jobs = {symbol: tick_files[symbol] for symbol in SYMBOLS[:4]}
    frames = compute_many(root, volume_by_minute, jobs, config=CONFIG, client=client)

    with FeatureStore(root) as store:
        for (symbol, path), frame in zip(jobs.items(), frames, strict=True):
            assert frame.equals(direct(volume_by_minute, path))
            local = store.fetch(symbol, path, CONFIG, volume_by_minute)
            assert local.hit, symbol
            assert local.feature == f"{__name__}.volume_by_minute"


def _closure_feature(factor: int):
    """A feature made inside a function: cloudpickle sends it by value, without source."""

    def scaled(ticks: pl.LazyFrame, config: dict) -> pl.LazyFrame:
        return ticks.select((pl.col("price") * factor).alias("scaled"))

    return scaled


def test_code_sent_by_value_gets_the_clients_key(client, tick_files, tmp_path):
    root = tmp_path / "cache"
    jobs = {symbol: tick_files[symbol] for symbol in SYMBOLS[:4]}
    frames = compute_many(root, _closure_feature(3), jobs, config=CONFIG, client=client)

    with FeatureStore(root) as store:
        for (symbol, path), frame in zip(jobs.items(), frames, strict=True):
            local = store.fetch(symbol, path, CONFIG, _closure_feature(3))
            assert local.hit, symbol
            assert local.value.equals(frame)
            assert not store.fetch(symbol, path, CONFIG, _closure_feature(4)).hit


def test_a_feature_decorator_is_sent_as_its_function_name_and_version(client, tick_files, tmp_path):
    root = tmp_path / "cache"
    with FeatureStore(root) as store:
        bars = store.feature(name="bars", version="7")(bar_count)
        jobs = {symbol: tick_files[symbol] for symbol in SYMBOLS[:3]}
        compute_many(root, bars, jobs, config=CONFIG, client=client)
        assert {entry.feature for entry in store.entries()} == {"bars"}
        assert bars.fetch("AAPL", tick_files["AAPL"], CONFIG).hit


def test_a_worker_running_other_code_than_the_client_refuses_the_job(
    client, tick_files, tmp_path, monkeypatch
):
    """The client changed a module constant its feature reads; workers import the module
    afresh, so they would compute with the old value under the client's key (a false hit for
    everyone later). Every job is refused, nothing is stored."""
    root = tmp_path / "cache"
    jobs = {symbol: tick_files[symbol] for symbol in SYMBOLS[:3]}
    monkeypatch.setattr(features, "PRICE_SCALE", 5)

    with pytest.raises(FanoutError) as raised:
        compute_many(root, scaled_price, jobs, config=CONFIG, client=client)

    assert len(raised.value.failures) == 3
    for failure in raised.value.failures:
        assert isinstance(failure.error, WorkerMismatch)
        assert "features.scaled_price differs here" in str(failure.error)
    assert stored_keys(root) == set()

    monkeypatch.setattr(features, "PRICE_SCALE", 2)  # the workers' value: now they agree
    frames = compute_many(root, scaled_price, jobs, config=CONFIG, client=client)
    assert frames[0].equals(direct(scaled_price, jobs["AAPL"]))


def test_a_module_the_workers_cannot_import_is_named(client, tick_files, tmp_path, monkeypatch):
    folder = tmp_path / "only_here"
    folder.mkdir()
    (folder / "client_only_features.py").write_text(
        "import polars as pl\n\n"
        "def doubled(ticks, config):\n"
        "    return ticks.select(pl.col('price') * 2)\n"
    )
    monkeypatch.syspath_prepend(str(folder))  # in this process only, after the workers started
    from client_only_features import doubled

    with pytest.raises(FanoutError) as raised:
        compute_many(
            tmp_path / "cache", doubled, {"AAPL": tick_files["AAPL"]}, config=CONFIG, client=client
        )

    error = raised.value.failures[0].error
    assert isinstance(error, WorkerMismatch)
    assert "No module named 'client_only_features'" in str(error)
    assert "install the same version of them on every worker" in str(error)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"jobs": "AAPL"}, "jobs must be a {symbol: data} dict"),
        ({"jobs": [("AAPL",)]}, "job #0 must be a (symbol, data) pair"),
        ({"jobs": [("", "x.parquet")]}, "symbol"),
        ({"config": {"when": threading.Lock()}}, "config"),
        ({"n_workers": 0}, "n_workers must be a positive int"),
        ({"store_options": {"read_only": True}}, "store_options cannot set 'read_only'"),
        ({"progress": "yes"}, "progress must be None, True or False"),
    ],
)
def test_bad_arguments_fail_before_any_cluster_work(tmp_path, arguments, message):
    """No client is given: a mistake must not cost a cluster start (nor start one)."""
    call = {"jobs": {"AAPL": "x.parquet"}, "config": CONFIG, **arguments}
    jobs = call.pop("jobs")
    with pytest.raises((InvalidInput, TypeError)) as raised:
        compute_many(tmp_path / "cache", bar_count, jobs, **call)
    assert message in str(raised.value)


def test_a_store_instead_of_a_root_is_refused_with_the_fix(tmp_path):
    with (
        FeatureStore(tmp_path / "cache") as store,
        pytest.raises(InvalidInput, match=r"store\.root"),
    ):
        compute_many(store, bar_count, {"AAPL": "x.parquet"}, config=CONFIG)  # type: ignore[arg-type]


def test_no_jobs_start_nothing_and_return_nothing(tmp_path):
    assert compute_many(tmp_path / "cache", bar_count, {}, config=CONFIG) == []


SCRIPT = """
import json, sys
import polars as pl
from jules_cache import FeatureStore, compute_many

config = {"freq": "5m"}  # a global named like the parameter below: the workers never see it
SCALE = 10

def helper(ticks):
    return ticks.with_columns((pl.col("price") * SCALE).alias("scaled"))

def script_feature(ticks, config):
    return helper(ticks).group_by_dynamic("ts", every=config["freq"]).agg(pl.col("scaled").sum())

if __name__ == "__main__":
    root, jobs = sys.argv[1], json.loads(sys.argv[2])
    frames = compute_many(root, script_feature, jobs, config=config, n_workers=2)
    with FeatureStore(root) as store:
        local = [store.fetch(s, p, config, script_feature) for s, p in jobs.items()]
    # What the throwaway cluster listens on (scheduler, dashboard, workers, nannies).
    import psutil
    from jules_cache.fanout import _client_for
    with _client_for(None, 2, 2) as client:
        processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
        listening = sorted({c.laddr.ip for p in processes
                            for c in p.net_connections("inet") if c.status == "LISTEN"})
        dashboard = client.dashboard_link
    print(json.dumps({
        "hits": [r.hit for r in local],
        "equal": [r.value.equals(f) for r, f in zip(local, frames)],
        "feature": local[0].feature,
        "listening": listening,
        "dashboard": dashboard.split("/")[2].split(":")[0],
    }))
"""


def test_a_function_of_a_main_script_runs_on_a_throwaway_cluster_and_hits_locally(
    tick_files, tmp_path
):
    """The common case: a script's own function, client=None. cloudpickle sends __main__ code
    by value without source; the client's fingerprint is checked and used on the workers, so
    the script's own local call afterwards hits."""
    script = tmp_path / "fan_out.py"
    script.write_text(textwrap.dedent(SCRIPT))
    jobs = {symbol: tick_files[symbol] for symbol in SYMBOLS[:4]}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "cache"), json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["hits"] == [True] * 4
    assert report["equal"] == [True] * 4
    assert report["feature"] == "__main__.script_feature"
    assert report["listening"] == ["127.0.0.1"]  # never 0.0.0.0 (dask's dashboard default)
    assert report["dashboard"] == "127.0.0.1"
    # A successful run says nothing alarming: no worker heartbeat traceback at shutdown.
    assert "Traceback" not in done.stderr and "heartbeat" not in done.stderr, done.stderr


class _Terminal:
    """A stream that says it is a terminal, recording what is written."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_on_a_terminal_the_progress_line_is_redrawn_in_place():
    from jules_cache.fanout import _Progress

    terminal = _Terminal()
    bar = _Progress("features.bar_count", 3, terminal, enabled=True)  # type: ignore[arg-type]
    bar.update(hit=True)
    bar.update(error=True)
    bar.update()
    bar.close()
    assert terminal.text.startswith("\rbar_count [") and terminal.text.endswith("\n")
    assert "\n" not in terminal.text[:-1]  # one line, redrawn with carriage returns
    assert "3/3  hits 1  computed 1  errors 1" in terminal.text.rsplit("\r", 1)[-1]
