"""The node store's files: a private directory, segment files, spill files.

Everything lives in a directory that is the current user's alone (0700, owned by
this uid, not a symlink); every file is 0600, opened with ``O_NOFOLLOW`` and
checked after opening, so another user can neither read nor plant objects.
"""

from __future__ import annotations

import mmap
import os
import stat

from pxexec.errors import StoreIOError

__all__ = [
    "check_index_file",
    "create_segment",
    "ensure_private_directory",
    "open_private",
    "remove_quietly",
]


def ensure_private_directory(path: str) -> None:
    """Create ``path`` (0700) if missing, then refuse it unless it is private to us.

    ``path`` is a store's namespace directory; its parent (the store's base directory,
    such as ``/dev/shm/pxexec-node-UID``) is created and checked too, and must itself
    have an existing parent: a mistyped path never grows a tree. The rules are those of
    ``pxexec.connectors.private_dir`` (lstat, no symlinks, owned by this user, 0700).

    >>> import tempfile
    >>> ensure_private_directory(tempfile.mkdtemp() + "/node/ns")
    """
    from pxexec.connectors.private_dir import ensure_private_directory as ensure

    ensure(path, parents=[os.path.dirname(path)])


def open_private(path: str, flags: int) -> int:
    """Open a file of the store (created 0600), refusing symlinks and foreign files."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        os.close(fd)
        raise StoreIOError(
            f"The node store file {path!r} is not a private regular file of this user "
            "(0600): refusing to use it. Remove it."
        )
    return fd


def check_index_file(path: str) -> None:
    """Create the index database file (0600) if missing; refuse a foreign one.

    Checked with ``lstat``, never by opening it: SQLite holds POSIX locks on the file,
    and closing any other descriptor of it in this process would drop them (another
    process would then believe it the last user and delete the database's WAL files).
    """
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise StoreIOError(
            f"The node store index {path!r} is not a private regular file of this user "
            "(0600): refusing to use it. Remove it."
        )


def create_segment(path: str, size: int) -> None:
    """Create a segment file of ``size`` bytes with its memory reserved up front.

    ``posix_fallocate`` makes tmpfs allocate every page now: a full /dev/shm is an
    ``OSError`` here (the caller spills) instead of a SIGBUS later, at a write.
    """
    fd = open_private(path, os.O_RDWR | os.O_CREAT)
    try:
        os.ftruncate(fd, 0)
        os.posix_fallocate(fd, 0, size)
    except OSError:
        os.close(fd)
        remove_quietly(path)
        raise
    os.close(fd)


def map_segment(path: str, size: int) -> mmap.mmap:
    """Map a whole segment shared and writable (kept for the life of the process)."""
    fd = open_private(path, os.O_RDWR)
    try:
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
