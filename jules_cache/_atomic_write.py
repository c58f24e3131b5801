"""Write a file a user named (an SQL result, a Prometheus textfile) so no reader sees it half done.

The content is written to a unique temp name in the target's own folder (same file system, so
the rename is atomic), then renamed over the target. If anything fails the temp file is removed
and the target is left as it was. Files inside a cache root are written through
``storage.rootfs`` instead, which also refuses links.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from jules_cache.errors import InvalidInput


def write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temp)`` to fill a temp file next to ``target``, then rename it into place.

    Raises ``InvalidInput`` naming ``target`` if the folder is missing or not writable (any
    ``OSError``); other exceptions of ``write`` propagate. No temp file is left either way.
    """
    unique = f"{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:12]}"
    temp = target.with_name(f".{target.name}.{unique}.tmp")
    try:
        write(temp)
        os.replace(temp, target)
    except OSError as exc:
        raise InvalidInput(
            f"cannot write {target}: {exc.strerror or exc}; check the folder exists and is writable"
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()  # gone after a rename; after a failure, whatever was written
