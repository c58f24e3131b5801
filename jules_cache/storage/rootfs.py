"""Every file the library creates, renames or deletes, confined to the root by mechanism.

A path inside the root is reached one component at a time from a descriptor of the root, each
folder opened with ``O_NOFOLLOW | O_DIRECTORY`` and required to be on the root's device, and
the last component is acted on through that folder's descriptor (``unlink``/``rename``/``link``
with ``dir_fd``, ``open`` with ``O_NOFOLLOW``). A symbolic link planted anywhere under the root
(``objects/ab`` -> ``/home/me``), or a file where a folder belongs, therefore makes the
operation fail with ``UnsafePath`` instead of reaching outside; no check-then-act on path
strings is involved. Only regular files are removed (and, inside ``views/``, the symbolic links
the library itself makes on file systems without hard links); nothing is removed recursively.

The root itself is resolved once when the store opens (``Layout.create``), so a root that IS a
symbolic link keeps working: everything below the resolved root must be real.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from jules_cache.errors import UnsafePath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_REFUSED = (errno.ELOOP, errno.ENOTDIR, errno.EMLINK)


def _parts(root: Path, path: Path) -> list[str]:
    try:
        parts = list(path.relative_to(root).parts)
    except ValueError as exc:
        raise UnsafePath(
            f"{path} is not inside the cache root {root}; refusing to touch it"
        ) from exc
    if not parts or any(part in ("", ".", "..") for part in parts):
        raise UnsafePath(f"{path} is not a file path inside the cache root {root}")
    return parts


def _unsafe(path: Path, what: str) -> UnsafePath:
    return UnsafePath(
        f"{path} is {what}; jules_cache never follows links or touches anything but its own "
        "files inside the root. Move it out of the cache root (the cache re-creates its "
        "folders) and retry"
    )


def _describe(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "not a real folder"
    if stat.S_ISLNK(mode):
        return f"a symbolic link (to {os.readlink(path)})"
    if not stat.S_ISDIR(mode):
        return "not a directory"
    return "on another device than the cache root"


@contextlib.contextmanager
def folder(root: Path, path: Path, *, create: bool = False) -> Iterator[int]:
    """A descriptor of the folder ``path`` inside ``root``, reached without following links.

    With ``create``, missing folders are made (mode from the umask), each made durable (its
    parent fsynced: a file renamed into a new folder is lost with it otherwise). Raises
    ``UnsafePath`` if a component is a link, not a folder, or on another device;
    ``FileNotFoundError`` if one is missing and ``create`` is off.
    """
    fd = os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW)  # the resolved root itself may be a mount
    try:
        device = os.fstat(fd).st_dev
        current = root
        for part in path.relative_to(root).parts if path != root else ():
            current = current / part
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                    fsync_folder(fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in _REFUSED:
                    raise _unsafe(current, _describe(current)) from exc
                raise
            os.close(fd)
            fd = child
            if os.fstat(fd).st_dev != device:
                raise _unsafe(current, "on another device than the cache root")
        yield fd
    finally:
        os.close(fd)


def fsync_folder(fd: int) -> None:
    """Make the entries of the open folder ``fd`` durable (best effort: some file systems
    refuse to fsync a folder)."""
    with contextlib.suppress(OSError):
        os.fsync(fd)


def _lstat(name: str, fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def exists(root: Path, path: Path) -> bool:
    """Whether ``path`` is there (a link is not followed; a missing folder is no error)."""
    *_, name = _parts(root, path)
    try:
        with folder(root, path.parent) as fd:
            return _lstat(name, fd) is not None
    except FileNotFoundError:
        return False


def unlink(root: Path, path: Path, *, links_ok: bool = False) -> bool:
    """Remove the regular file ``path`` (or, ``links_ok``, a symbolic link itself).

    Returns False if it was not there. Raises ``UnsafePath`` for anything else at that name
    or on the way to it.
    """
    *_, name = _parts(root, path)
    try:
        with folder(root, path.parent) as fd:
            found = _lstat(name, fd)
            if found is None:
                return False
            if not (stat.S_ISREG(found.st_mode) or (links_ok and stat.S_ISLNK(found.st_mode))):
                raise _unsafe(path, "not a regular file")
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                return False
            return True
    except FileNotFoundError:
        return False


def rename(root: Path, source: Path, target: Path) -> None:
    """Move the regular file ``source`` to ``target`` (replacing it), both inside the root.

    The target's folders are created if missing. Raises ``FileNotFoundError`` if ``source``
    is gone, ``UnsafePath`` if either side is reached through a link or is not a regular file.
    """
    *_, source_name = _parts(root, source)
    *_, target_name = _parts(root, target)
    with folder(root, source.parent) as source_fd, folder(root, target.parent, create=True) as fd:
        found = _lstat(source_name, source_fd)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", str(source))
        if not stat.S_ISREG(found.st_mode):
            raise _unsafe(source, "not a regular file")
        existing = _lstat(target_name, fd)
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            raise _unsafe(target, "not a regular file")
        os.rename(source_name, target_name, src_dir_fd=source_fd, dst_dir_fd=fd)


def link(root: Path, target: Path, path: Path) -> None:
    """Make ``path`` a hard link to the regular file ``target`` (replacing an old link).

    A file system without hard links gets a symbolic link to ``target``'s absolute path.
    """
    *_, target_name = _parts(root, target)
    *_, name = _parts(root, path)
    with folder(root, target.parent) as target_fd, folder(root, path.parent, create=True) as fd:
        existing = _lstat(name, fd)
        if existing is not None:
            if not (stat.S_ISREG(existing.st_mode) or stat.S_ISLNK(existing.st_mode)):
                raise _unsafe(path, "not a regular file")
            os.unlink(name, dir_fd=fd)
        try:
            os.link(target_name, name, src_dir_fd=target_fd, dst_dir_fd=fd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            os.symlink(str(target), name, dir_fd=fd)


def create(root: Path, path: Path) -> None:
    """Create ``path`` as a new, empty regular file (never an existing name or a link's target)."""
    *_, name = _parts(root, path)
    with folder(root, path.parent, create=True) as fd:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(name, flags, 0o666, dir_fd=fd))


def listdir(root: Path, path: Path) -> list[tuple[str, os.stat_result]]:
    """The entries of the folder ``path`` with their own (not followed) stat; [] if missing."""
    try:
        with folder(root, path) as fd:
            entries = []
            for name in sorted(os.listdir(fd)):
                found = _lstat(name, fd)
                if found is not None:
                    entries.append((name, found))
            return entries
    except FileNotFoundError:
        return []


def names(root: Path, path: Path) -> set[str]:
    """The names in the folder ``path`` (nothing stat-ed: cheap for big folders); empty if it
    is missing. Act on them through the other functions here, which check what they find."""
    try:
        with folder(root, path) as fd:
            return set(os.listdir(fd))
    except FileNotFoundError:
        return set()


def rmdir(root: Path, path: Path) -> bool:
    """Remove the folder ``path`` if it is empty and real; return whether it went."""
    *_, name = _parts(root, path)
    try:
        with folder(root, path.parent) as fd:
            found = _lstat(name, fd)
            if found is None or not stat.S_ISDIR(found.st_mode):
                return False
            os.rmdir(name, dir_fd=fd)
            return True
    except OSError:
        return False


def require_real_folder(root: Path, path: Path) -> None:
    """Raise ``UnsafePath`` if ``path`` (an area of the root) exists but is no real folder."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(found.st_mode) or found.st_dev != os.stat(root).st_dev:
        raise _unsafe(path, _describe(path))


def require_regular_file(path: Path) -> None:
    """Raise ``UnsafePath`` if ``path`` exists but is not a regular file (e.g. a link)."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(found.st_mode):
        what = (
            f"a symbolic link (to {os.readlink(path)})"
            if stat.S_ISLNK(found.st_mode)
            else ("not a regular file")
        )
        raise _unsafe(path, what)
