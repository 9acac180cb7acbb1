"""Shared file system connector: one file per object, published atomically."""

from __future__ import annotations

import contextlib
import mmap
import os
import re
from collections.abc import Sequence
from typing import Any

from pxexec.connectors.base import BaseConnector, Buffer, ConnectorConfig, check_options, new_token
from pxexec.errors import ConfigError, StoreIOError

_KEY = re.compile(r"[0-9a-f]{32}")
_IOV_BATCH = 512


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
    """

    type_name = "file"
    cacheable = False

    def __init__(self, directory: str, *, namespace: str = "pxexec", fsync: bool = False) -> None:
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
        self._ensure_dir()

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
            os.rename(temp, final)
        except OSError as exc:
            _unlink(temp)
            raise StoreIOError(
                f"Could not write an object to {self.path!r}: {exc.strerror or exc}. "
                "Check free space and permissions of the store directory."
            ) from exc
        return key

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
        with contextlib.suppress(KeyError):
            _unlink(self._file(key))

    def keys(self) -> list[str]:
        """Keys of the objects currently stored in this namespace."""
        try:
            return [n for n in os.listdir(self.path) if _KEY.fullmatch(n)]
        except FileNotFoundError:
            return []

    def config(self) -> ConnectorConfig:
        return {
            "type": self.type_name,
            "directory": self.directory,
            "namespace": self.namespace,
            "fsync": self.fsync,
        }

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> FileConnector:
        options: dict[str, Any] = check_options(
            cls.type_name, config, {"directory", "namespace", "fsync"}
        )
        return cls(**options)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
