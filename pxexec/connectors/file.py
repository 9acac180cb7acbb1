"""Shared file system connector: one file per object, published atomically."""

from __future__ import annotations

import logging
import mmap
import os
import queue
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from pxexec.connectors.base import BaseConnector, Buffer, ConnectorConfig, check_options, new_token
from pxexec.connectors.node_local import NodeTransfer
from pxexec.connectors.nodeid import this_node
from pxexec.errors import ConfigError, ObjectOnOtherHostError, StoreIOError

log = logging.getLogger("pxexec")

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


class FileConnector(NodeTransfer, BaseConnector):
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

    #: objects live on one node (keys name it); shm is, a shared file system is not
    node_local_default = False
    #: transfer: receive into huge-page memory and write the node's copy after, rather
    #: than recv_into a new file (whose pages fault in one by one)
    receive_in_place = False

    def __init__(
        self, directory: str, *, namespace: str = "pxexec", fsync: bool = False,
        lease: float | None = None, node_local: bool | None = None, transfer: bool = False,
        bind: str | None = None, secret_env: str | None = None,
        transfer_timeout: float = 5.0, replica_lease: float = 30.0, idle: float = 60.0,
        node: str | None = None,
    ) -> None:
        node_local = self.node_local_default if node_local is None else bool(node_local)
        if transfer and not node_local:
            raise ConfigError(
                "transfer=True copies objects between the node-local stores of different "
                "hosts; it needs node_local=True (a directory private to each host, such as "
                "/dev/shm or a local disk). A shared file system needs no transfer."
            )
        for name, value in (("transfer_timeout", transfer_timeout),
                            ("replica_lease", replica_lease), ("idle", idle)):
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}.")
        self.node_local = node_local
        self.transfer = bool(transfer)
        self.bind = bind
        self.secret_env = secret_env
        self.transfer_timeout = float(transfer_timeout)
        self.replica_lease = float(replica_lease)
        self.idle = float(idle)
        #: the node whose process made this store's config (hostname~boot)
        self.node = node or (this_node().tag if node_local else None)
        #: set in the node server itself (it never starts another one)
        self.serving = False
        self._client: Any = None
        self._server: tuple[float, str] | None = None
        if transfer and secret_env is not None and not os.environ.get(secret_env):
            raise ConfigError(
                f"The transfer secret variable {secret_env!r} is not set in this process; set "
                "it to the same value on every host (or leave secret_env out)."
            )
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
        token = key.partition("@")[0]
        if not _KEY.fullmatch(token):
            raise KeyError(f"{key!r} is not a key of a {self.type_name} connector.")
        return os.path.join(self.path, token)

    def path_of(self, key: str) -> str:
        """The file that holds ``key``'s object on this node (or would hold its copy).

        >>> import tempfile
        >>> connector = FileConnector(tempfile.mkdtemp(), node_local=True)
        >>> key = connector.put([b"x"])
        >>> os.path.exists(connector.path_of(key)), key.count("@")
        (True, 1)
        """
        return self._file(key)

    def _where(self, key: str) -> tuple[str, str | None, str | None]:
        """(token, holder node tag or None if it is this node, its server address)."""
        token, _, rest = key.partition("@")
        if not rest:
            return token, None, None
        holder, _, address = rest.partition("@")
        if holder == this_node().tag:
            return token, None, None
        return token, holder, address or None

    def describe_key(self, key: str) -> str:
        """Where ``key``'s object lives, for error messages ("" if nothing to add)."""
        _, holder, _ = self._where(key)
        if holder is None:
            return ""
        return (f"It was stored in the node-local {self.type_name} store of host "
                f"{holder.rpartition('~')[0]!r}, which no longer has it.")

    def _elsewhere(self, key: str, holder: str, action: str) -> ObjectOnOtherHostError:
        return ObjectOnOtherHostError(key, holder, this_node().tag, self.type_name, action)

    def put(self, frames: Sequence[Buffer]) -> str:
        token = new_token()
        self._write(token, frames)
        return self._key_for(token)

    def _key_for(self, token: str) -> str:
        if not self.node_local:
            return token
        if self.transfer:
            return f"{token}@{this_node().tag}@{self.server_address()}"
        return f"{token}@{this_node().tag}"

    def replace(self, key: str, frames: Sequence[Buffer]) -> None:
        _, holder, _ = self._where(key)
        if holder is not None:
            raise self._elsewhere(key, holder, "replace")
        final = self._file(key)
        if not os.path.exists(final):
            raise KeyError(key)
        self._write(os.path.basename(final), frames)
        if self.lease is not None:  # lease links point at the old file: move them
            for owner in self._lease_owners():
                link = os.path.join(self.leases, owner, os.path.basename(final))
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
        token, holder, address = self._where(key)
        if holder is not None:
            if not self.transfer or address is None:
                raise self._elsewhere(key, holder, "read")
            local = self._read(token)
            if local is not None:
                return local  # this node's copy
            from pxexec.connectors.node_transfer import replicas

            early = replicas.fresh(self, token)  # this process is writing that copy
            if early is not None:
                return early
            fetched = self._pull(token, holder, address)
            if fetched is not None:
                return fetched[0] if fetched else None
        return self._read(token)

    def get_batch(self, keys: Sequence[str]) -> list[Buffer | None]:
        """Like ``get`` for each key; objects of other nodes that this node lacks are
        pulled with one pipelined connection per node (many small objects in a row)."""
        missing: dict[tuple[str, str], list[str]] = {}
        for key in keys:
            token, holder, address = self._where(key)
            if holder is not None and self.transfer and address is not None and not (
                    self.has_local(token)):
                missing.setdefault((holder, address), []).append(token)
        if missing:
            from pxexec.connectors.node_transfer import replicas

            for (holder, address), tokens in missing.items():
                replicas.pull_many(self, tokens, holder, address)
        return [self.get(key) for key in keys]

    def _read(self, key: str) -> Buffer | None:
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
        token, holder, address = self._where(key)
        if holder is not None:
            if not self.transfer or address is None:
                raise self._elsewhere(key, holder, "check")
            if self.has_local(token):
                return True
            return bool(self.transfer_client().has(holder, address, [token])[0])
        return self.has_local(token)

    def evict(self, key: str) -> None:
        token, holder, address = self._where(key)
        if holder is None:
            self.free_here(token)
            return
        if not self.transfer or address is None:
            raise self._elsewhere(key, holder, "free")
        self.drop_copy(token)
        self.transfer_client().evict(holder, address, token, self.known_address())

    def _evict_local(self, key: str) -> None:
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
                _unlink(os.path.join(self.leases, owner, os.path.basename(path)))

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
            token, holder, _ = self._where(key)
            if holder is None and _KEY.fullmatch(token):  # objects of other hosts: theirs
                _link(os.path.join(self.path, token), os.path.join(directory, token))

    def renew(self, owner: str, keys: Sequence[str], seconds: float) -> None:
        if self.lease is None:
            return
        _touch(os.path.join(self._owner_dir(owner), "heartbeat"))
        if not self.transfer:
            return
        # objects of other nodes held here: their node's reaper spares files renewed
        # within the lease, so renew them there (one round trip per node)
        remote: dict[tuple[str, str], list[str]] = {}
        for key in keys:
            token, holder, address = self._where(key)
            if holder is not None and address is not None:
                remote.setdefault((holder, address), []).append(token)
        failed = []
        for (holder, address), tokens in remote.items():
            try:
                self.transfer_client().touch(holder, address, tokens)
            except ConnectionError as exc:
                failed.append(str(exc))
        if failed:
            raise StoreIOError("Could not renew leases on other nodes: " + "; ".join(failed))

    def reap(self) -> int:
        """Delete objects of owners whose heartbeat is older than the lease, objects
        nobody holds that are older than the lease, and stale temporary files."""
        if self.lease is None:
            return 0
        now = time.time()
        removed = 0
        for owner in self._lease_owners():
            directory = os.path.join(self.leases, owner)
            if not os.path.isdir(directory):
                continue  # not an owner directory of this layout: not ours to judge
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
        tokens = [n for n in _listdir(self.path) if _KEY.fullmatch(n)]
        if not self.node_local:
            return tokens
        suffix = f"@{this_node().tag}"
        if self.transfer and not self.serving:
            address = self.known_address()
            suffix += f"@{address}" if address else ""
        return [t + suffix for t in tokens]

    def config(self) -> ConnectorConfig:
        return {
            "type": self.type_name,
            "directory": self.directory,
            "namespace": self.namespace,
            "fsync": self.fsync,
            "lease": self.lease,
            "node_local": self.node_local,
            "transfer": self.transfer,
            "bind": self.bind,
            "secret_env": self.secret_env,
            "transfer_timeout": self.transfer_timeout,
            "replica_lease": self.replica_lease,
            "idle": self.idle,
            "node": self.node,
        }

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> FileConnector:
        options: dict[str, Any] = check_options(cls.type_name, config, OPTIONS)
        return cls(**options)


OPTIONS = {
    "directory", "namespace", "fsync", "lease", "node_local", "transfer", "bind",
    "secret_env", "transfer_timeout", "replica_lease", "idle", "node",
}


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
