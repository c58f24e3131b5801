"""Scheduled GC from a plain install: ``jules-cache gc --cron`` and the crontab line for it.

Cron runs commands with a minimal environment (``PATH=/usr/bin:/bin``, no virtualenv), so the
crontab line names the installed ``jules-cache`` by its absolute path: its first line names the
interpreter it was installed with, so the right Python and packages are found without PATH.

A cron run appends to one log file (``gc.log``, rotated at 1 MiB, 5 old copies kept), holding
an exclusive ``flock`` on it for the whole run: a second run that finds it held exits 75
("busy, try later") at once, as does a run that finds another GC holding the GC lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

LOG_NAME = "gc.log"
LOG_DIR_NAME = "gc-logs"  # under the root, unless --log-dir / $FEATURE_STORE_LOG_DIR
MAX_LOG_BYTES = 1024 * 1024
LOG_BACKUPS = 5
DEFAULT_SCHEDULE = "17 3 * * *"


class LogBusy(Exception):
    """Another cron run holds the log (and so is running)."""


@contextlib.contextmanager
def cron_log(folder: Path) -> Iterator[TextIO]:
    """Open ``folder/gc.log`` for appending, locked for this run; rotate it first if large.

    Raises ``LogBusy`` if another run holds it, ``OSError`` if it cannot be written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOG_NAME
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LogBusy(str(path)) from None
            raise
        if os.fstat(fd).st_size > MAX_LOG_BYTES:
            # Rotate under the lock; a run that opens the new gc.log meanwhile finds GC busy.
            for number in range(LOG_BACKUPS - 1, 0, -1):
                older = folder / f"{LOG_NAME}.{number}"
                if older.exists():
                    older.replace(folder / f"{LOG_NAME}.{number + 1}")
            path.replace(folder / f"{LOG_NAME}.1")
            os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with os.fdopen(os.dup(fd), "a", encoding="utf-8", buffering=1) as log:
            yield log
    finally:
        os.close(fd)


def log_line(log: TextIO, text: str) -> None:
    """One timestamped line (UTC, with the pid: lines of overlapping runs stay apart)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for line in text.splitlines() or [""]:
        log.write(f"{stamp} [{os.getpid()}] {line}\n")


def installed_command() -> list[str]:
    """How to run this very installation with no PATH: the absolute path of the running
    ``jules-cache`` script, else this interpreter with ``-m jules_cache``."""
    script = Path(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else None
    if script is not None and script.name == "jules-cache" and script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "jules_cache"]


def crontab_line(schedule: str, arguments: list[str]) -> str:
    """``<schedule>  <absolute jules-cache> gc --cron <arguments>``, quoted for ``/bin/sh``."""
    command = [*installed_command(), "gc", "--cron", *arguments]
    return f"{schedule}  {shlex.join(command)}"


__all__ = ["DEFAULT_SCHEDULE", "LOG_DIR_NAME", "LogBusy", "cron_log", "crontab_line", "log_line"]
