"""A forked child never hangs: it works, or fails at once saying to use ``spawn``.

Each case runs in a fresh interpreter (the test process's own threads must not decide it).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parents[1]

_CHILD = """
import os, sys, time, signal
sys.path.insert(0, {tests!r})
import polars as pl
from features import bar_count
from helpers import frame
from jules_cache import FeatureStore, ForkedProcess

def in_child(work):
    pid = os.fork()
    if pid == 0:
        try:
            print("child", work(), flush=True)
            os._exit(0)
        except ForkedProcess as exc:
            print("ForkedProcess", exc, flush=True)
            os._exit(3)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return "hung"
"""


def _run(body: str, tmp_path: Path) -> str:
    script = textwrap.dedent(_CHILD).format(tests=str(TESTS)) + textwrap.dedent(body)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_child_forked_after_the_store_was_used_fails_at_once_saying_spawn(tmp_path):
    out = _run(
        """
        big = pl.concat([frame(i, 2000) for i in range(50)])
        store = FeatureStore("cache", tick_data_threshold_mb=0)  # hashes on a thread pool
        store.fetch("AAPL", big, {"freq": "1m"}, bar_count, name="bars")
        print("exit", in_child(lambda: store.fetch("MSFT", big, {}, bar_count, name="bars").hit))
        print("parent still works", store.fetch("AAPL", big, {"freq": "1m"}, bar_count,
              name="bars").hit)
        """,
        tmp_path,
    )
    assert "exit 3" in out, out
    assert "ForkedProcess" in out and "spawn" in out
    assert "parent still works True" in out


def test_a_child_forked_before_any_use_works(tmp_path):
    out = _run(
        """
        def work():
            with FeatureStore("cache") as store:
                store.fetch("AAPL", frame(1), {"freq": "1m"}, bar_count, name="bars")
                return store.fetch("AAPL", frame(1), {"freq": "1m"}, bar_count, name="bars").hit
        print("exit", in_child(work))
        """,
        tmp_path,
    )
    assert "child True" in out and "exit 0" in out, out
