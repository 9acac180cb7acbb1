"""Shared file system connector: one file per object, published atomically."""

from __future__ import annotations

import mmap
import os
import queue
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from pxexec.connectors.base import BaseConnector, Buffer, ConnectorConfig, check_options, new_token
from pxexec.errors import ConfigError, StoreIOError

_KEY = re.compile(r"[0-9a-f]{32}")
_IOV_BATCH = 512


__all__ = ["FileConnector"]


def write_frames(fd: int, frames: Sequence[Buffer]) -> int:
    """Write all frames to ``fd`` with vectored writes, without joining them."""
    views = [v for v in (memoryview(f).cast("B") for f in frames) if v.nbytes]
    total = sum(v.nbytes for v in views)
    i = 0
    while i < len(views):
        written = os.writev(fd, views[i : i + _IOV_BATCH])
        while written > 0:
            if written >= views[i].nbytes:
                written -= views[i].nbytes
                i += 1
            else:
                views[i] = views[i][written:]
                written = 0
    return total


def map_private(fd: int, size: int) -> memoryview:
    """A private, copy-on-write mapping of a file: writes never reach the file."""
    if size == 0:
        return memoryview(bytearray())
    mapped = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    return memoryview(mapped)


class FileConnector(BaseConnector):
    """Stores each object as a file under ``directory/namespace``.

    Writes go to a hidden temporary file that is renamed into place, so a reader sees
    a whole object or none. Files are private to the user (0600, directories 0700).
    Reads map the file copy-on-write: arrays view the page cache without a copy.

    >>> import tempfile
    >>> connector = FileConnector(tempfile.mkdtemp(), namespace="demo")
    >>> key = connector.put([b"header", b"payload"])
    >>> bytes(connector.get(key))
    b'headerpayload'
    >>> connector.evict(key); connector.exists(key)
    False
    """

    type_name = "file"
    cacheable = False
    #: hand the freeing of an evicted file's pages to a background thread (the key is
    #: gone at once); only where holding an unlinked file open is free (tmpfs)
    free_in_background = False

    def __init__(
        self, directory: str, *, namespace: str = "pxexec", fsync: bool = False,
        lease: float | None = None,
    ) -> None:
        if not directory:
            raise ConfigError("The file connector needs a directory, e.g. 'file:///scratch/px'.")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", namespace) or namespace in (".", ".."):
            raise ConfigError(
                f"Namespace {namespace!r} is not a plain name: use letters, digits, '_', "
                "'-' or '.'."
            )
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self.namespace = namespace
        self.fsync = fsync
        self.path = os.path.join(self.directory, namespace)
        if lease is not None and lease <= 0:
            raise ConfigError(f"lease must be a positive number of seconds, got {lease!r}.")
        self.lease = lease
        self.leases = os.path.join(self.path, ".leases")
        self._owner_dirs: set[str] = set()
        self._ensure_dir()
        #: objects reaped when this connector was created (owners that died meanwhile)
        self.reaped_on_start = self.reap() if lease is not None else 0

    @property
    def lease_seconds(self) -> float | None:  # type: ignore[override]
        return self.lease

    def _ensure_dir(self) -> None:
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreIOError(
                f"Could not create the store directory {self.path!r}: {exc.strerror}. "
                "Choose a writable directory."
            ) from exc

    def _file(self, key: str) -> str:
        if not _KEY.fullmatch(key):
            raise KeyError(f"{key!r} is not a key of a {self.type_name} connector.")
        return os.path.join(self.path, key)

    def put(self, frames: Sequence[Buffer]) -> str:
        key = new_token()
        self._write(key, frames)
        return key

    def replace(self, key: str, frames: Sequence[Buffer]) -> None:
        final = self._file(key)
        if not os.path.exists(final):
            raise KeyError(key)
        self._write(key, frames)
        if self.lease is not None:  # lease links point at the old file: move them
            for owner in self._lease_owners():
                link = os.path.join(self.leases, owner, key)
                if os.path.exists(link):
                    _unlink(link)
                    _link(final, link)

    def _write(self, key: str, frames: Sequence[Buffer]) -> None:
        final = os.path.join(self.path, key)
        temp = os.path.join(self.path, f".{key}.tmp")
        try:
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:
                self._ensure_dir()  # the directory was removed: recreate it once
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                write_frames(fd, frames)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
        except OSError as exc:
            _unlink(temp)
            raise StoreIOError(
                f"Could not write an object to {self.path!r}: {exc.strerror or exc}. "
                "Check free space and permissions of the store directory."
            ) from exc

    def get(self, key: str) -> Buffer | None:
        try:
            fd = os.open(self._file(key), os.O_RDONLY)
        except KeyError:
            return None
        except FileNotFoundError:
            if not os.path.isdir(self.path):
                raise StoreIOError(
                    f"The store directory {self.path!r} does not exist (removed while in "
                    "use, or a different directory on this host)."
                ) from None
            return None
        try:
            return map_private(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        try:
            return os.path.exists(self._file(key))
        except KeyError:
            return False

    def evict(self, key: str) -> None:
        try:
            path = self._file(key)
        except KeyError:
            return
        if self.free_in_background:
            _unlink_later(path)
        else:
            _unlink(path)
        if self.lease is not None:
            for owner in self._lease_owners():
                _unlink(os.path.join(self.leases, owner, key))

    # -- leases: a directory per owner process holds hard links to its objects, and a
    # heartbeat file whose modification time the owner renews ----------------------

    def _lease_owners(self) -> list[str]:
        try:
            return os.listdir(self.leases)
        except FileNotFoundError:
            return []

    def _owner_dir(self, owner: str) -> str:
        path = os.path.join(self.leases, owner)
        if path not in self._owner_dirs:
            os.makedirs(path, mode=0o700, exist_ok=True)
            _touch(os.path.join(path, "heartbeat"))
            self._owner_dirs.add(path)
        return path

    def adopt(self, owner: str, keys: Sequence[str]) -> None:
        if self.lease is None:
            return
        directory = self._owner_dir(owner)
        for key in keys:
            if _KEY.fullmatch(key):
                _link(os.path.join(self.path, key), os.path.join(directory, key))

    def renew(self, owner: str, keys: Sequence[str], seconds: float) -> None:
        if self.lease is not None:
            _touch(os.path.join(self._owner_dir(owner), "heartbeat"))

    def reap(self) -> int:
        """Delete objects of owners whose heartbeat is older than the lease, objects
        nobody holds that are older than the lease, and stale temporary files."""
        if self.lease is None:
            return 0
        now = time.time()
        removed = 0
        for owner in self._lease_owners():
            directory = os.path.join(self.leases, owner)
            try:
                beat = os.stat(os.path.join(directory, "heartbeat")).st_mtime
            except FileNotFoundError:
                beat = 0.0
            if now - beat <= self.lease:
                continue
            for name in _listdir(directory):
                if _KEY.fullmatch(name):
                    removed += _unlink(os.path.join(self.path, name))
                _unlink(os.path.join(directory, name))
            try:
                os.rmdir(directory)
            except OSError:
                pass
            self._owner_dirs.discard(directory)
        for name in _listdir(self.path):
            path = os.path.join(self.path, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            stale = now - st.st_mtime > self.lease
            if _KEY.fullmatch(name) and st.st_nlink == 1 and stale:
                removed += _unlink(path)
            elif name.endswith(".tmp") and stale:
                _unlink(path)
        return removed

    def keys(self) -> list[str]:
        """Keys of the objects currently stored in this namespace."""
        try:
            return [n for n in os.listdir(self.path) if _KEY.fullmatch(n)]
        except FileNotFoundError:
            return []

    def __repr__(self) -> str:
        lease = f", lease={self.lease:g}" if self.lease is not None else ""
        return f"{type(self).__name__}({self.directory!r}, namespace={self.namespace!r}{lease})"

    def config(self) -> ConnectorConfig:
        return {
            "type": self.type_name,
            "directory": self.directory,
            "namespace": self.namespace,
            "fsync": self.fsync,
            "lease": self.lease,
        }

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> FileConnector:
        options: dict[str, Any] = check_options(
            cls.type_name, config, {"directory", "namespace", "fsync", "lease"}
        )
        return cls(**options)


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 1


#: files from this size on are freed by the background thread (smaller ones cost
#: less to free than to hand over)
FREE_LATER_MIN = 8 << 20


def _unlink_later(path: str) -> None:
    """Remove ``path`` now; free the pages of a large file later, off the caller's path.

    Freeing a large tmpfs file costs milliseconds (about 4 ms per 100 MB here) and
    happens when its last name or descriptor goes. The name goes now; a descriptor
    held until a background thread closes it keeps the pages until then. Nothing can
    leak: the kernel closes the descriptor if the process ends first.
    """
    try:
        large = os.stat(path).st_size >= FREE_LATER_MIN
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC) if large else -1
    except OSError:
        fd = -1
    try:
        _unlink(path)
    finally:
        if fd >= 0:
            _closer.close(fd)


class _Closer:
    """A daemon thread that closes descriptors handed to it (one per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[int] | None = None
        os.register_at_fork(after_in_child=self._forget)

    def close(self, fd: int) -> None:
        pending = self._queue
        if pending is None:
            with self._lock:
                if self._queue is None:
                    self._queue = queue.SimpleQueue()
                    threading.Thread(target=self._run, args=(self._queue,),
                                     name="pxexec-free", daemon=True).start()
                pending = self._queue
        pending.put(fd)

    @staticmethod
    def _run(pending: queue.SimpleQueue[int]) -> None:
        while True:
            os.close(pending.get())

    def _forget(self) -> None:
        # a forked child has copies of the queued descriptors and no thread: close
        # them here so the child does not keep the parent's freed objects alive
        pending, self._queue, self._lock = self._queue, None, threading.Lock()
        while pending is not None and not pending.empty():
            try:
                os.close(pending.get_nowait())
            except OSError:
                pass


_closer = _Closer()


def _link(source: str, link: str) -> None:
    try:
        os.link(source, link)
    except (FileExistsError, FileNotFoundError):
        pass


def _touch(path: str) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:
        with open(path, "a"):
            pass


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
