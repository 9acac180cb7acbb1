"""Shared file system connector: one file per object, published atomically."""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import queue
import re
import sys
import threading
from collections.abc import Sequence
from typing import Any

from pxexec.connectors.base import (
    BaseConnector,
    Buffer,
    ConnectorConfig,
    check_directory_options,
    check_options,
    directory_from_url,
    new_token,
)
from pxexec.connectors.node_local import NodeTransfer
from pxexec.connectors.nodeid import this_node
from pxexec.connectors.owners import LEASES, OWNER, ReapReport, process_owner, reap_store
from pxexec.connectors.private_dir import check_trusted_parent, ensure_private_directory
from pxexec.errors import ConfigError, MissingKeyError, StoreIOError
from pxexec.forking import on_fork_child, renew_locks_after_fork

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
    """A private, copy-on-write mapping of a file: writes never reach the file.

    The mapping holds no file descriptor (Python's ``mmap`` keeps a duplicate of
    the file's for as long as the mapping lives, so a reader holding many objects
    would run out of descriptors): an anonymous mapping is made, and the file is
    mapped over it in place. The pages go when the last view of it is released.
    """
    if size == 0:
        return memoryview(bytearray())
    flags, prot = mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE
    libc = _libc()
    if libc is None:  # pragma: no cover - no libc mmap: Python's mapping (holds an fd)
        return memoryview(mmap.mmap(fd, size, flags=flags, prot=prot))
    mapped = mmap.mmap(-1, size, flags=flags, prot=prot)
    anchor = ctypes.c_char.from_buffer(mapped)
    address = ctypes.addressof(anchor)
    del anchor  # releases the export, the address stays valid while ``mapped`` lives
    placed = libc.mmap(address, size, prot, flags | _MAP_FIXED, fd, 0)
    if placed != address:
        err = ctypes.get_errno()
        mapped.close()
        raise OSError(err, f"mmap of a stored object failed: {os.strerror(err)}")
    return memoryview(mapped)


_MAP_FIXED = 0x10  # Linux, every architecture
_LIBC: list[Any] = []


def _libc() -> Any:
    if not _LIBC:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.mmap.restype = ctypes.c_void_p
            libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                  ctypes.c_int, ctypes.c_int, ctypes.c_long]
            _LIBC.append(libc if sys.platform.startswith("linux") else None)
        except (OSError, AttributeError):  # pragma: no cover
            _LIBC.append(None)
    return _LIBC[0]


class FileConnector(NodeTransfer, BaseConnector):
    """Stores each object as a file under ``directory/namespace``.

    Writes go to a hidden temporary file that is renamed into place, so a reader sees
    a whole object or none. Files are private to the user (0600, directories 0700,
    checked: a directory another user could change is refused, see private_dir.py).
    Reads map the file copy-on-write: arrays view the page cache without a copy.
    Objects a process holds (owned proxies, a StoreExecutor's task inputs) are
    recorded under it (``track_owners``), so that when the process dies they are
    reaped by the next pxexec process on the host (or, with ``lease``, by any host
    once its heartbeat stops). Objects nobody holds are never reaped.

    With ``node_local=True`` (the default of the shm-files store) keys name the host
    that holds the object (``token@hostname~boot``): a read on another host raises
    ``ObjectOnOtherHostError`` naming it, and ``transfer=True`` copies the object
    from that host's node server instead (see ``pxexec.connectors.node_transfer``).

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
        lease: float | None = None, track_owners: bool = True, create: bool = True,
        node_local: bool | None = None, transfer: bool = False,
        bind: str | None = None, secret_env: str | None = None,
        transfer_timeout: float = 5.0, replica_lease: float = 30.0, idle: float = 60.0,
        transfer_streams: int = 4, node: str | None = None,
    ) -> None:
        node_local = self.node_local_default if node_local is None else bool(node_local)
        if transfer and not node_local:
            raise ConfigError(
                "transfer=True copies objects between the node-local stores of different "
                "hosts; it needs node_local=True (a directory private to each host, such as "
                "/dev/shm or a local disk). A shared file system needs no transfer."
            )
        self._set_transfer(transfer, bind, secret_env, transfer_timeout, replica_lease, idle,
                           transfer_streams)
        self.node_local = node_local
        #: the node whose process made this store's config (hostname~boot)
        self.node = node or (this_node().tag if node_local else None)
        if not directory:
            raise ConfigError("The file connector needs a directory, e.g. 'file:///scratch/px'.")
        check_directory_options(self.type_name, directory, namespace, lease)
        self.directory = os.path.normpath(os.path.abspath(os.path.expanduser(directory)))
        self.namespace = namespace
        self.fsync = fsync
        self.path = os.path.join(self.directory, namespace)
        self.lease = float(lease) if lease is not None else None
        #: record which process holds which object, so that objects of a process that
        #: died are reaped by the next pxexec process on this host (see owners.py)
        self.track_owners = bool(track_owners)
        self.leases = os.path.join(self.path, LEASES)
        #: owner -> [descriptor of its record, keys written to it] (this process's)
        self._records: dict[str, list[int]] = {}
        #: owner -> keys it holds here and has not evicted (what a compaction keeps)
        self._held: dict[str, set[str]] = {}
        self._records_pid = os.getpid()
        self._records_lock = threading.Lock()
        renew_locks_after_fork(self, "_records_lock")
        self._ensure_dir(create)
        #: what was reaped when this connector was created (owners that died meanwhile)
        self.start_report = self.reap_report() if self.tracks_owners else ReapReport(self.path)
        self.reaped_on_start = len(self.start_report.objects)

    @property
    def lease_seconds(self) -> float | None:
        return self.lease

    @property
    def tracks_owners(self) -> bool:
        """Whether objects held by a process are recorded under it (leases, liveness)."""
        return self.track_owners or self.lease is not None

    #: parent directories pxexec itself makes for this connector (checked private)
    def _own_parents(self) -> list[str]:
        return []

    def _ensure_dir(self, create: bool = True) -> None:
        """Create (``create``) and check the store's directories (see private_dir.py)."""
        parents = self._own_parents()
        if not parents:
            if os.path.lexists(self.directory):
                check_trusted_parent(self.directory)
            else:
                parents = [self.directory]  # pxexec creates it: private like the rest
        ensure_private_directory(self.path, create=create, parents=parents)

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

    def new_key(self, nbytes: int) -> str:
        return self._key_for(new_token())

    def put_at(self, key: str, frames: Sequence[Buffer]) -> None:
        token = self._local_token(key, "write")
        self._file(token)  # a key of ours
        self._write(token, frames)

    def replace(self, key: str, frames: Sequence[Buffer]) -> None:
        token = self._local_token(key, "replace")
        if not self.has_local(token):
            raise MissingKeyError(key, self.path, self.describe_key(key))
        self._write(token, frames)

    def _write(self, key: str, frames: Sequence[Buffer]) -> None:
        final = os.path.join(self.path, key)
        temp = os.path.join(self.path, f".{key}.{process_owner()}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                fd = os.open(temp, flags, 0o600)
            except FileNotFoundError:
                self._ensure_dir()  # the directory was removed: recreate it once
                fd = os.open(temp, flags, 0o600)
            try:
                write_frames(fd, frames)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
        except OSError as exc:
            _unlink(temp)
            if isinstance(exc, StoreIOError):
                raise
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
            fd = os.open(self._file(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except KeyError:
            return None
        except FileNotFoundError:
            if not os.path.isdir(self.path):
                raise StoreIOError(
                    f"The store directory {self.path!r} does not exist (removed while in "
                    "use, or a different directory on this host)."
                ) from None
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink in place of an object: never follow
                return None
            raise
        try:
            return map_private(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)  # the mapping needs no descriptor

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
        token = os.path.basename(path)
        for held in list(self._held.values()):
            held.discard(token)
        if self.free_in_background:
            _unlink_later(path)
        else:
            _unlink(path)

    # -- owner records (see owners.py): a file per owner process lists the keys it
    # holds (one append per adopt call); its modification time is the heartbeat ----

    def _record(self, owner: str) -> list[int]:
        """[descriptor, keys written] of ``owner``'s record, opened on first use."""
        if self._records_pid != os.getpid():  # a forked child: the parent's are not ours
            self._records, self._held, self._records_pid = {}, {}, os.getpid()
        entry = self._records.get(owner)
        if entry is None:
            if not OWNER.fullmatch(owner):
                raise ValueError(f"{owner!r} is not an owner name of pxexec.")
            ensure_private_directory(self.leases)
            entry = [_open_record(os.path.join(self.leases, owner), append=True), 0]
            self._records[owner] = entry
            self._held[owner] = set()
        return entry

    def adopt(self, owner: str, keys: Sequence[str]) -> None:
        if not self.tracks_owners:
            return
        # records list tokens of this node's objects; objects of other nodes are held
        # there (renew asks their node server to record this owner, see below)
        keys = [t for t, holder, _ in map(self._where, keys)
                if holder is None and _KEY.fullmatch(t)]
        if not keys:
            return
        with self._records_lock:
            entry = self._record(owner)
            os.write(entry[0], ("\n".join(keys) + "\n").encode())
            entry[1] += len(keys)
            held = self._held[owner]
            held.update(keys)
            if entry[1] > 4096 + 4 * len(held):  # mostly freed keys: rewrite it
                self._compact(owner, entry, held)

    def _compact(self, owner: str, entry: list[int], held: set[str]) -> None:
        record = os.path.join(self.leases, owner)
        temp = os.path.join(self.leases, f".{owner}.compact")
        fd = _open_record(temp, append=False)
        try:
            os.write(fd, "".join(f"{k}\n" for k in list(held)).encode())
        finally:
            os.close(fd)
        os.replace(temp, record)
        os.close(entry[0])
        entry[0], entry[1] = _open_record(record, append=True), len(held)

    def renew(self, owner: str, keys: Sequence[str], seconds: float) -> None:
        if self.lease is None:
            return
        try:
            with self._records_lock:
                self._record(owner)
            os.utime(os.path.join(self.leases, owner), follow_symlinks=False)
        except (FileNotFoundError, StoreIOError):
            if not os.path.lexists(self.path):  # removed, and what it held with it
                return
            raise
        if not self.transfer:
            return
        # objects of other nodes held by ``owner``: renewed on their nodes
        self.renew_elsewhere(owner, keys)

    def hold_for(self, owner: str, tokens: Sequence[str]) -> list[bool]:
        """(The node server's side of ``renew``.) Record ``owner``, a process on another
        host, as holding ``tokens`` here and renew its heartbeat; whether each exists."""
        found = [self.has_local(t) for t in tokens]
        if self.lease is None or not OWNER.fullmatch(owner):
            return found
        with self._records_lock:
            self._record(owner)
            new = [t for t, ok in zip(tokens, found) if ok and t not in self._held[owner]]
        if new:
            self.adopt(owner, new)
        os.utime(os.path.join(self.leases, owner), follow_symlinks=False)
        return found

    def reap(self) -> int:
        """Delete the objects held by owners that are gone; return how many.

        An owner is gone when its process no longer runs on this host, or (with a
        lease) when its heartbeat is older than the lease. Objects that no owner
        record holds are never deleted. See ``reap_report`` for what was removed.
        """
        return len(self.reap_report().objects)

    def reap_report(self) -> ReapReport:
        """Reap (see ``reap``) and say which objects, temporary files and owners went."""
        report = reap_store(self.path, self.lease)
        if self.node_local:  # keys as this store hands them out (naming this node)
            suffix = self._suffix()
            report.objects = [t + suffix for t in report.objects]
        return report

    def _suffix(self) -> str:
        """What follows a token in the keys of this node's objects."""
        suffix = f"@{this_node().tag}"
        if self.transfer and not self.serving:
            address = self.known_address()
            suffix += f"@{address}" if address else ""
        return suffix

    def keys(self) -> list[str]:
        """Keys of the objects currently stored in this namespace."""
        try:
            tokens = [n for n in os.listdir(self.path)
                      if _KEY.fullmatch(n) and self.has_local(n)]
        except FileNotFoundError:
            return []
        if not self.node_local:
            return tokens
        suffix = self._suffix()
        return [t + suffix for t in tokens]

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
            "track_owners": self.track_owners,
            "node_local": self.node_local,
            "transfer": self.transfer,
            "bind": self.bind,
            "secret_env": self.secret_env,
            "transfer_timeout": self.transfer_timeout,
            "replica_lease": self.replica_lease,
            "idle": self.idle,
            "transfer_streams": self.transfer_streams,
            "node": self.node,
        }

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> FileConnector:
        options: dict[str, Any] = check_options(cls.type_name, config, OPTIONS)
        return cls(**options)

    @classmethod
    def options_from_url(cls, url: str) -> dict[str, Any]:
        """``file:///abs/path`` (a directory is required).

        >>> FileConnector.options_from_url("file:///scratch/px")
        {'directory': '/scratch/px'}
        """
        return directory_from_url(url, cls.type_name, required=True)


OPTIONS = {
    "directory", "namespace", "fsync", "lease", "track_owners", "create", "node_local",
    "transfer", "bind", "secret_env", "transfer_timeout", "replica_lease", "idle",
    "transfer_streams", "node",
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

    def close(self, fd: int) -> None:
        pending = self._queue
        if pending is None:
            on_fork_child(self._forget)  # on first use, never at import
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


def _open_record(path: str, *, append: bool) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(path, flags | (os.O_APPEND if append else os.O_TRUNC), 0o600)
