"""Directories only the current user can read or change (as ssh-agent and tmux keep).

A store directory that another local user can write to, or that is a symlink, lets
that user replace an object with a pickle that runs as you on the next ``get``.
``ensure_private_directory`` creates a store's directories with mode 0700 and
refuses to use one that is not safe, checking with ``lstat`` (never following a
symlink) that each is a real directory owned by the current user with no group or
other permission bits.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence

from pxexec.errors import StoreIOError, UnsafeDirectoryError

__all__ = ["check_trusted_parent", "ensure_private_directory", "open_private_directory"]

log = logging.getLogger("pxexec")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def ensure_private_directory(
    path: str, *, create: bool = True, parents: Sequence[str] = ()
) -> None:
    """Make sure ``path`` (and each of ``parents``) is a directory private to this user.

    ``parents`` are ancestors of ``path`` that pxexec itself creates (such as
    ``/dev/shm/pxexec-UID``), listed from the outermost; they are created and
    checked first. With ``create`` a missing directory is created with mode 0700
    (whatever the umask); its own parent must exist, so a mistyped path never grows
    a tree of directories. An existing directory must be a real directory (not a
    symlink), owned by the current user, with no group or other permission bits.
    One that is owned by this user and that nobody else could write to (such as
    0755) is tightened to 0700; anything else raises ``UnsafeDirectoryError``,
    which says what is wrong and how to fix it.

    >>> import os, stat, tempfile
    >>> base = tempfile.mkdtemp()
    >>> store = os.path.join(base, "store")
    >>> ensure_private_directory(os.path.join(store, "ns"), parents=[store])
    >>> oct(stat.S_IMODE(os.lstat(store).st_mode))
    '0o700'
    >>> os.symlink(store, os.path.join(base, "link"))
    >>> try:
    ...     ensure_private_directory(os.path.join(base, "link"))
    ... except PermissionError as exc:
    ...     print("symlink" in str(exc))
    True
    >>> import shutil; shutil.rmtree(base)
    """
    for directory in (*parents, path):
        os.close(open_private_directory(directory, create=create))


def open_private_directory(path: str, *, create: bool = True) -> int:
    """``ensure_private_directory`` for one directory; returns an open descriptor of it.

    The descriptor (opened with ``O_NOFOLLOW``) is the checked directory itself, so
    calls made relative to it (``dir_fd=``) cannot be redirected by a later rename
    or symlink. The caller closes it.

    >>> import os, tempfile
    >>> fd = open_private_directory(tempfile.mkdtemp())
    >>> os.path.isdir(f"/proc/self/fd/{fd}") or os.name != "posix"
    True
    >>> os.close(fd)
    """
    path = os.path.abspath(path)
    created = False
    if create:
        try:
            os.mkdir(path, 0o700)
            created = True
        except FileExistsError:
            pass
        except FileNotFoundError:
            raise StoreIOError(
                f"Cannot create the store directory {path!r}: its parent "
                f"{os.path.dirname(path)!r} does not exist. pxexec creates only the last "
                "directory of a store's path; create the parent first or fix the path."
            ) from None
        except OSError as exc:
            raise StoreIOError(
                f"Cannot create the store directory {path!r}: {exc.strerror}. Choose a "
                "directory you can write to."
            ) from exc
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise StoreIOError(
            f"The store directory {path!r} does not exist. Create it (mkdir -m 700) or "
            "let pxexec create it."
        ) from None
    _check(path, info)
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError as exc:  # replaced between lstat and open
        raise UnsafeDirectoryError(
            f"The store directory {path!r} changed while pxexec checked it "
            f"({exc.strerror}); another process may be tampering with it. Check who can "
            f"write to {os.path.dirname(path)!r}."
        ) from exc
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise UnsafeDirectoryError(
                f"The store directory {path!r} was replaced while pxexec checked it; "
                f"another process may be tampering with it. Check who can write to "
                f"{os.path.dirname(path)!r}."
            )
        mode = stat.S_IMODE(opened.st_mode)
        if mode != 0o700:
            if not created:
                log.info("pxexec: tightening %s from %s to 0700", path, oct(mode))
            os.fchmod(fd, 0o700)  # our own, never writable by others: safe to tighten
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check(path: str, info: os.stat_result) -> None:
    uid = os.getuid()
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeDirectoryError(
            f"The store directory {path!r} is a symlink (to {_target(path)!r}); pxexec "
            "never follows one, since whoever made it chooses where your objects go. "
            f"Remove it (rm {path!r}) or point the store at a real directory."
        )
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectoryError(
            f"The store directory {path!r} exists but is not a directory. Remove it or "
            "choose another path."
        )
    if info.st_uid != uid:
        raise UnsafeDirectoryError(
            f"The store directory {path!r} is owned by uid {info.st_uid}, not by you (uid "
            f"{uid}): its owner could replace your objects with code that runs as you. "
            "Use a directory of your own, or have it removed and let pxexec create it."
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise UnsafeDirectoryError(
            f"The store directory {path!r} has mode {oct(mode)}: other users can write "
            "to it and may have planted objects in it. Remove it "
            f"(rm -r {path!r}) and let pxexec create it again with mode 0700."
        )


def _target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def check_trusted_parent(directory: str) -> None:
    """Refuse a directory holding a store's private directory if others could swap it.

    Another user who can write to ``directory`` (or to one of its ancestors without
    the sticky bit that /tmp and /dev/shm have) could rename the store's directory
    away and put one of their own in its place. The directory itself must not be
    writable by group or others, its ancestors not by others, unless sticky.
    Symlinks in the path are resolved first (a site's /scratch link is fine).

    >>> check_trusted_parent("/tmp")
    >>> import os, tempfile
    >>> loose = tempfile.mkdtemp(); os.chmod(loose, 0o777)
    >>> try:
    ...     check_trusted_parent(loose)
    ... except PermissionError as exc:
    ...     print(type(exc).__name__)
    UnsafeDirectoryError
    >>> os.rmdir(loose)
    """
    real = os.path.realpath(directory)
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise StoreIOError(
            f"The store directory {directory!r} does not exist. Create it first or fix the "
            "path."
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectoryError(
            f"The store directory {directory!r} exists but is not a directory. Choose a "
            "directory."
        )
    prefix = real
    writable_by = 0o022  # the directory itself: group or others
    while True:
        info = os.stat(prefix)
        mode = stat.S_IMODE(info.st_mode)
        if mode & writable_by and not mode & stat.S_ISVTX:
            who = "other users" if mode & 0o002 else "its group"
            raise UnsafeDirectoryError(
                f"The store directory {directory!r} is not safe: {prefix!r} has mode "
                f"{oct(mode)}, so {who} can rename your store's directory and put one "
                f"of their own in its place. Remove the write permission (chmod "
                f"{'o' if mode & 0o002 else 'g'}-w {prefix!r}), set its sticky bit, or "
                "use a directory only you can write to."
            )
        writable_by = 0o002  # ancestors: a trusted group may write there
        parent = os.path.dirname(prefix)
        if parent == prefix:
            return
        prefix = parent
