"""Fault injection for the crash tests: kill the process, or fill the disk, at a named stage.

Tests (tests/storage/: test_faults.py, test_attack_store.py, test_attack_manifest.py) set the
environment variable ``JULES_CACHE_CRASH_AT``; if it names ``stage``, this process is SIGKILLed
right there; if it names ``fill-disk:<stage>``, the root's file system is filled there instead
(``tmp/fill-disk`` under ``JULES_CACHE_CRASH_AT_ROOT``, written until ENOSPC) so the next write
fails for real. Never set it outside tests.

Stages of a put, in order: ``compute`` (key lock held, nothing written), ``write`` (temp file
half written, no footer), ``fsynced`` (temp complete, not published), ``renamed`` (file in
objects/ or the S3 object PUT, row not inserted), ``commit`` (row inserted, transaction not
committed). Of a
manifest's creation: ``manifest-creating`` (temp file attached, no tables). Of a rebuild
(``check --rebuild`` or ``FeatureStore()`` recovering): ``rebuild-started`` (new manifest created
under a temp name, nothing registered), ``rebuild-registered`` (every file registered, not yet
renamed), ``rebuild-moved-aside`` (old manifest moved aside, the new one not yet in place).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

CRASH_ENV = "JULES_CACHE_CRASH_AT"


def crash_point(stage: str) -> None:
    """SIGKILL this process, or fill the disk, if the crash tests asked for ``stage``."""
    wanted = os.environ.get(CRASH_ENV)
    if wanted == stage:
        os.kill(os.getpid(), signal.SIGKILL)
    if wanted == f"fill-disk:{stage}":
        _fill_disk(Path(os.environ[CRASH_ENV + "_ROOT"]) / "tmp" / "fill-disk")


def _fill_disk(path: Path) -> None:
    chunk = b"\0" * (1 << 16)
    with contextlib.suppress(OSError), open(path, "ab", buffering=0) as sink:
        while True:
            sink.write(chunk)
    with contextlib.suppress(OSError), open(path, "ab", buffering=0) as sink:
        while True:  # the last partial chunk
            sink.write(b"\0" * 512)
