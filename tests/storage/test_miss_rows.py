"""Once a store has written the manifest, a miss never waits for a manifest transaction, and
its row still gets written: at once by the flush thread after a quiet second, for a burst of
misses within a second, and for a row published while the flush thread was writing as well.
A hit opens no manifest at all."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from features import bar_count

from jules_cache import FeatureStore
from jules_cache.engine.local import ROW_BATCH_SECONDS, LocalBackend
from jules_cache.storage.manifest import Manifest

WAIT = 30.0  # seconds: generous for a loaded CI machine; the row normally lands in ~50 ms


class Attaches:
    """Every ATTACH of a manifest (a real one, on the real file), with its thread and mode."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[int, bool]] = []
        attached = Manifest._attached

        @contextlib.contextmanager
        def counted(manifest, *, read_only, **options):
            self.seen.append((threading.get_ident(), read_only))
            with attached(manifest, read_only=read_only, **options) as con:
                yield con

        monkeypatch.setattr(Manifest, "_attached", counted)

    def on_this_thread(self) -> int:
        return sum(1 for thread, _ in self.seen if thread == threading.get_ident())

    def writes(self) -> int:
        return sum(1 for _, read_only in self.seen if not read_only)


def listed_elsewhere(root, key: str) -> bool:
    """Whether another store (as another process would) lists ``key``: it reads the manifest,
    never this store's rows kept in memory."""
    with FeatureStore(root, read_only=True) as other:
        return other.entry(key) is not None


def working_store(root, aapl, attaches: Attaches) -> FeatureStore:
    """A store whose first publish wrote its row in its own transaction, on the caller's
    thread (so a manifest that cannot be written fails that call): later publishes leave
    their rows to the flush thread."""
    store = FeatureStore(root)
    attaches.seen.clear()
    first = store.fetch("AAPL", aapl, {"freq": "1h"}, bar_count)
    assert first.stored and attaches.on_this_thread() >= 1
    assert listed_elsewhere(root, first.key)
    time.sleep(ROW_BATCH_SECONDS)  # quiet: nothing written in the last second
    attaches.seen.clear()
    return store


def wait_until(condition) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "the flush thread never wrote the row"
        time.sleep(0.01)


@pytest.mark.slow  # waits for the flush thread's timer
def test_a_lone_miss_opens_no_manifest_and_its_row_is_written_once_at_once(root, aapl, monkeypatch):
    attaches = Attaches(monkeypatch)
    store = working_store(root, aapl, attaches)
    miss = store.fetch("AAPL", aapl, {"freq": "1m"}, bar_count)
    assert not miss.hit and miss.stored
    assert attaches.on_this_thread() == 0
    wait_until(lambda: attaches.writes() == 1)  # by the flush thread, unasked
    wait_until(lambda: listed_elsewhere(root, miss.key))
    assert attaches.writes() == 1  # one transaction for the miss: row, counts, links

    attaches.seen.clear()
    for _ in range(5):
        assert store.fetch("AAPL", aapl, {"freq": "1m"}, bar_count).hit
    assert attaches.seen == []  # a hit is a file read: no ATTACH, on any thread, until due
    store.close()
    entry = FeatureStore(root, read_only=True).entry(miss.key)
    assert entry is not None and entry.hit_count == 5


@pytest.mark.slow  # waits for the flush thread's timer
def test_a_burst_of_misses_opens_no_manifest_and_shares_transactions(root, aapl, monkeypatch):
    attaches = Attaches(monkeypatch)
    store = working_store(root, aapl, attaches)
    started = time.monotonic()
    misses = [store.fetch("AAPL", aapl, {"freq": f"{n}m"}, bar_count) for n in range(1, 21)]
    elapsed = time.monotonic() - started
    assert attaches.on_this_thread() == 0
    assert not any(miss.hit for miss in misses)
    store.flush()
    # At most: one at once, one per batch interval of the burst, the one ``flush`` wrote.
    assert 1 <= attaches.writes() <= 2 + elapsed / ROW_BATCH_SECONDS + 1
    assert {miss.key for miss in misses} <= {entry.key for entry in store.entries()}
    store.close()


@pytest.mark.slow  # waits for the flush thread's timer
def test_a_row_published_while_the_flush_thread_writes_is_written_too(root, aapl, monkeypatch):
    """The flush thread has taken the rows it writes; a publish then finds it alive and arms no
    timer of its own: the thread arms one for it when done, or the row would wait for the
    store's next call (here: never)."""
    store = working_store(root, aapl, Attaches(monkeypatch))
    taken, go_on = threading.Event(), threading.Event()
    write = LocalBackend._write

    def held(backend, con, counts):
        if counts.rows:
            taken.set()
            assert go_on.wait(WAIT)
        write(backend, con, counts)

    monkeypatch.setattr(LocalBackend, "_write", held)
    first = store.fetch("AAPL", aapl, {"freq": "1m"}, bar_count)
    assert taken.wait(WAIT)  # the flush thread holds the first row, inside its transaction
    second = store.fetch("AAPL", aapl, {"freq": "2m"}, bar_count)
    go_on.set()
    wait_until(lambda: listed_elsewhere(root, first.key))
    wait_until(lambda: listed_elsewhere(root, second.key))
    store.close()
