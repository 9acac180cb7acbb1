"""NodeConnector: the node-local object store behind the connector contract."""

from __future__ import annotations

import os
import re
import time
import weakref
from collections.abc import Hashable, Sequence
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
from pxexec.connectors.node.arena import Arena, Slot
from pxexec.connectors.node.hosts import TRANSFER_OPTIONS, HostKeys, VerifiedObjects
from pxexec.connectors.node.liveness import alive, this_process
from pxexec.errors import ConfigError, MissingKeyError, StoreIOError
from pxexec.exit_hooks import at_exit_once
from pxexec.forking import renew_locks_after_fork

__all__ = ["ArenaConnector", "NodeConnector", "ShmConnector", "default_capacity",
           "default_node_directory"]

_KEY = re.compile(r"[0-9a-f]{32}")
#: the environment variable naming the default directory (a test run's own, say)
ENV_DIR = "PXEXEC_NODE_DIR"
CHUNK = 256 << 20
READS = ("view", "private")


def default_node_directory() -> str:
    """Where node stores live by default: ``$PXEXEC_NODE_DIR``, else a per-user
    directory in /dev/shm.

    >>> default_node_directory().startswith("/dev/shm/pxexec-node-") or ENV_DIR in os.environ
    True
    """
    return os.environ.get(ENV_DIR) or f"/dev/shm/pxexec-node-{os.getuid()}"


def default_spill_directory() -> str:
    """Where full node stores spill by default (a disk, not RAM)."""
    return f"/var/tmp/pxexec-spill-{os.getuid()}"


def default_capacity(directory: str) -> int:
    """Half of the file system (tmpfs) that holds ``directory``.

    >>> default_capacity("/dev/shm") > 0
    True
    """
    probe = directory
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "/"
    info = os.statvfs(probe)
    return info.f_blocks * info.f_frsize // 2


class ArenaConnector(BaseConnector):
    """Every process of a node shares pre-mapped segments; a get is a zero-copy view.

    ``capacity`` (bytes; default half of /dev/shm) bounds the segments, grown
    ``chunk`` bytes at a time; what does not fit goes to ``spill_directory``.
    ``reads="view"`` (default) gives read-only views of shared memory: arrays come
    back read-only (``np.array(x)`` for a private writable copy). ``reads="private"``
    maps each large object copy-on-write instead: writable, private to the reader,
    slower. Either way a view stays valid while it is held, even after an evict.

    >>> import tempfile
    >>> import numpy as np
    >>> from pxexec import Store
    >>> connector = NodeConnector(tempfile.mkdtemp(), namespace="demo", chunk=1 << 20)
    >>> with Store("node-demo", connector) as store:
    ...     key = store.put(np.arange(100_000))
    ...     view = store.get(key)
    ...     print(int(view.sum()), view.flags.writeable)
    ...     store.evict(key)
    4999950000 False
    >>> del view; connector.stats()["bytes_in_use"]
    0
    """

    type_name = "node"
    cacheable = False

    def __init__(
        self,
        directory: str | None = None,
        *,
        namespace: str = "default",
        capacity: int | None = None,
        chunk: int = CHUNK,
        spill_directory: str | None = None,
        lease: float | None = None,
        reads: str = "view",
        create: bool = True,
    ) -> None:
        check_directory_options(self.type_name, directory, namespace, lease)
        if reads not in READS:
            raise ConfigError(f"reads must be one of {READS}, got {reads!r}.")
        for name, value in (("capacity", capacity), ("chunk", chunk)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{name} must be a positive number of bytes, got {value!r}.")
        self.directory = os.path.abspath(os.path.expanduser(directory or default_node_directory()))
        self.namespace = namespace
        self.path = os.path.join(self.directory, namespace)
        self.capacity_option = capacity
        self.chunk = chunk
        self.spill_option = spill_directory
        self.spill_directory = os.path.join(
            os.path.abspath(os.path.expanduser(spill_directory or default_spill_directory())),
            namespace,
        )
        self.lease = float(lease) if lease is not None else None
        self.reads = reads
        self.readonly_views = reads == "view"
        if not create and not os.path.isdir(self.path):  # pxexec gc: never make a store
            raise StoreIOError(
                f"The node store {self.path!r} does not exist: there is nothing to collect. "
                "Check the directory and the namespace."
            )
        self.arena = Arena(
            self.path, capacity=capacity or default_capacity(self.directory), chunk=chunk,
            spill=self.spill_directory, reads=reads,
        )
        #: objects whose digests this process checked while receiving them (pulls)
        self.verified = VerifiedObjects()
        renew_locks_after_fork(self.verified, "_lock")
        _opened(self)
        #: objects that dead processes left, freed when this connector was created
        self.swept_on_start = self.sweep()
        #: objects reaped when this connector was created (owners that died meanwhile)
        self.reaped_on_start = self.reap() if self.lease is not None else 0

    @property
    def lease_seconds(self) -> float | None:
        return self.lease

    @property
    def tracks_owners(self) -> bool:
        """Holders are recorded only with a lease (liveness alone needs none)."""
        return self.lease is not None

    @classmethod
    def options_from_url(cls, url: str) -> dict[str, Any]:
        """``node``/``shm``, or ``node:///abs/dir`` (default: ``default_node_directory()``).

        >>> NodeConnector.options_from_url("node:///dev/shm/px")
        {'directory': '/dev/shm/px'}
        """
        return directory_from_url(url, cls.type_name)

    # -- objects ----------------------------------------------------------------------

    def put(self, frames: Sequence[Buffer]) -> str:
        key = new_token()
        length = sum(memoryview(f).nbytes for f in frames)
        slot = self.arena.reserve(key, length)
        try:
            self.arena.write(slot, frames)
        except BaseException:
            self.arena.abort(slot.obj)
            raise
        self.arena.seal(slot.obj)
        return key

    def get(self, key: str) -> Buffer | None:
        if not _KEY.fullmatch(key):
            return None
        return self.arena.open(key)

    def get_identified(self, key: str) -> tuple[Buffer, Hashable, bool] | None:
        """``get(key)``, the object's id in this node's index and whether this process
        verified its digests while receiving it (``IdentifiesContent``)."""
        if not _KEY.fullmatch(key):
            return None
        opened = self.arena.open_identified(key)
        if opened is None:
            return None
        buffer, obj = opened
        return buffer, obj, obj in self.verified

    def object_id(self, key: str) -> int | None:
        """The id ``get_identified`` gives the sealed object under ``key``, without
        opening it (None if there is none)."""
        if not _KEY.fullmatch(key):
            return None
        with self.arena.index.transaction() as db:
            row = db.execute("SELECT id FROM objects WHERE key = ? AND state = 'sealed'",
                             (key,)).fetchone()
        return None if row is None else int(row[0])

    def exists(self, key: str) -> bool:
        if not _KEY.fullmatch(key):
            return False
        with self.arena.index.transaction() as db:
            return db.execute("SELECT 1 FROM objects WHERE key = ? AND state = 'sealed'",
                              (key,)).fetchone() is not None

    def evict(self, key: str) -> None:
        self.evict_batch([key])

    def evict_batch(self, keys: Sequence[str]) -> None:
        keys = [k for k in keys if _KEY.fullmatch(k)]
        if not keys:
            return
        with self.arena.index.transaction() as db:
            for key in keys:
                self.arena.retire(db, key)

    def replace(self, key: str, frames: Sequence[Buffer]) -> None:
        length = sum(memoryview(f).nbytes for f in frames)
        slot = self.arena.reserve(None, length)
        try:
            self.arena.write(slot, frames)
            with self.arena.index.transaction() as db:
                row = db.execute("SELECT id FROM objects WHERE key = ? AND state = 'sealed'",
                                 (key,)).fetchone()
                if row is None:
                    raise MissingKeyError(key, self.path)
                db.execute("UPDATE objects SET key = NULL WHERE id = ?", (row[0],))
                self.arena.retire_object(db, row[0])
                db.execute("UPDATE objects SET key = ?, state = 'sealed' WHERE id = ?",
                           (key, slot.obj))
        except BaseException:
            self.arena.abort(slot.obj)
            raise

    # -- building objects in place (Store.empty, node-to-node pulls) ------------------

    def allocate(self, nbytes: int) -> tuple[str, Any]:
        """Reserve ``nbytes`` for a new object; return its key and a writable buffer.

        Fill the buffer (``recv_into``, ``np.add(..., out=...)``), then ``seal(key)``;
        nobody sees the object before. Dropping the buffer unsealed gives the space
        back; after sealing, the buffer is a view like any other (valid while held).
        """
        if nbytes < 0:
            raise ConfigError(f"Cannot allocate {nbytes} bytes.")
        key = new_token()
        slot = self.arena.reserve(key, nbytes, pinned=True)
        try:
            buffer = self.arena.pin_writer_view(slot, self.arena.writable(slot))
        except BaseException:
            self.arena.abort(slot.obj, pinned=True)
            raise
        self._slots[key] = slot
        return key, buffer

    def seal(self, key: str) -> None:
        """Publish an object filled through ``allocate``'s buffer."""
        slot = self._slots.pop(key, None)
        if slot is None or not self.arena.seal(slot.obj):
            raise KeyError(f"{key!r} is not an unsealed allocation of this process.")

    def locate(self, key: str) -> tuple[str, int, int] | None:
        """(file, offset, length) of a sealed object, for ``sendfile``.

        The range stays valid while the caller holds a view from ``get(key)``.
        """
        if not _KEY.fullmatch(key):
            return None
        with self.arena.index.transaction() as db:
            row = db.execute("SELECT path, seg, off, length FROM objects "
                             "WHERE key = ? AND state = 'sealed'", (key,)).fetchone()
        if row is None:
            return None
        path, seg, off, length = row
        if seg is None:
            return path, 0, length
        return self.arena.segment_path(seg), off, length

    # -- leases -----------------------------------------------------------------------

    def adopt(self, owner: str, keys: Sequence[str]) -> None:
        if self.lease is None:
            return
        with self.arena.index.transaction() as db:
            _beat(db, owner)
            db.executemany("INSERT OR IGNORE INTO holds VALUES (?, ?)",
                           [(owner, k) for k in keys if _KEY.fullmatch(k)])

    def renew(self, owner: str, keys: Sequence[str], seconds: float) -> None:
        if self.lease is not None:
            with self.arena.index.transaction() as db:
                _beat(db, owner)

    def reap(self) -> int:
        """Free what dead processes left; with a lease, also evict expired objects.

        An owner whose process is gone (pid and start time), or whose heartbeat is
        older than the lease, loses its objects at once unless another owner holds
        them; objects nobody holds that are older than the lease go too.
        Returns how many objects were evicted for expiry.
        """
        with self.arena.index.transaction() as db:
            self.arena.sweep(db)
            if self.lease is None:
                return 0
            now = time.time()
            orphans: set[str] = set()
            for owner, pid, start, beat in db.execute("SELECT * FROM owners").fetchall():
                if now - beat > self.lease or not alive((pid, start)):
                    orphans.update(k for (k,) in db.execute(
                        "SELECT key FROM holds WHERE owner = ?", (owner,)).fetchall())
                    db.execute("DELETE FROM holds WHERE owner = ?", (owner,))
                    db.execute("DELETE FROM owners WHERE owner = ?", (owner,))
            orphans.difference_update(k for (k,) in db.execute("SELECT key FROM holds"))
            orphans.update(k for (k,) in db.execute(
                "SELECT key FROM objects WHERE state = 'sealed' AND created < ? "
                "AND key NOT IN (SELECT key FROM holds)", (now - self.lease,)
            ).fetchall())
            return sum(self.arena.retire(db, key) for key in orphans)

    # -- housekeeping -----------------------------------------------------------------

    def sweep(self) -> int:
        """Free what dead processes left (unsealed writes, views); return objects freed.

        Runs without a lease too: it needs only process liveness (pid + start time).
        """
        with self.arena.index.transaction() as db:
            return self.arena.sweep(db)

    def stats(self) -> dict[str, int]:
        """Objects, pins and bytes of this node store (all processes), after a sweep."""
        return self.arena.stats()

    def keys(self) -> list[str]:
        with self.arena.index.transaction() as db:
            return [k for (k,) in db.execute(
                "SELECT key FROM objects WHERE state = 'sealed'").fetchall()]

    def trim(self) -> bool:
        """Give the segments' memory back if the store is empty (True if it was)."""
        return self.arena.trim()

    def close(self) -> None:
        """Give the memory back if the store is empty; objects stay otherwise."""
        self.arena.trim()

    def config(self) -> ConnectorConfig:
        return {
            "type": self.type_name,
            "directory": self.directory,
            "namespace": self.namespace,
            "capacity": self.capacity_option,
            "chunk": self.chunk,
            "spill_directory": self.spill_option,
            "lease": self.lease,
            "reads": self.reads,
        }

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> ArenaConnector:
        options: dict[str, Any] = check_options(
            cls.type_name, config,
            {"directory", "namespace", "capacity", "chunk", "spill_directory", "lease", "reads"}
            | TRANSFER_OPTIONS,
        )
        return cls(**options)

    def __repr__(self) -> str:
        return f"NodeConnector({self.path!r})"

    @property
    def _slots(self) -> dict[str, Slot]:
        slots: dict[str, Slot] | None = self.__dict__.get("_pending")
        if slots is None:
            slots = self.__dict__["_pending"] = {}
        return slots


class NodeConnector(HostKeys, ArenaConnector):
    """The node store (``node``): the arena behind keys that name their node.

    Keys are ``token@hostname~boot``; ``transfer=True`` (with ``bind``, ``secret_env``,
    ``transfer_timeout``, ``replica_lease``, ``idle``, ``transfer_streams``, as for the
    shm-files store) pulls objects of other nodes into this node's arena (see
    ``node.hosts``).

    >>> import tempfile
    >>> from pxexec.connectors.nodeid import this_node
    >>> connector = NodeConnector(tempfile.mkdtemp(), chunk=1 << 20)
    >>> key = connector.put([b"x" * 10])
    >>> key.partition("@")[2] == this_node().tag
    True
    >>> connector.evict(key)
    """


class ShmConnector(NodeConnector):
    """What ``shm`` names: the node store with copy-on-write reads.

    Arrays come back writable and private to their reader, as they did from the
    file-per-object store (still there as ``shm-files``,
    ``pxexec.connectors.shm.SharedMemoryConnector``). ``fsync`` is accepted, for
    configs written for that store, and ignored (RAM has nothing to sync).

    >>> import tempfile
    >>> import numpy as np
    >>> from pxexec import Store
    >>> connector = ShmConnector(tempfile.mkdtemp(), chunk=1 << 20)
    >>> with Store("shm-node-demo", connector) as store:
    ...     key = store.put(np.arange(100_000))
    ...     out = store.get(key)
    ...     out[0] = -1                      # writable, and private to this reader
    ...     print(int(store.get(key)[0]), out.flags.writeable)
    ...     store.evict(key)
    0 True
    """

    type_name = "shm"

    def __init__(
        self,
        directory: str | None = None,
        *,
        namespace: str = "default",
        capacity: int | None = None,
        chunk: int = CHUNK,
        spill_directory: str | None = None,
        lease: float | None = None,
        reads: str = "private",
        fsync: bool = False,
        create: bool = True,
        **transfer: Any,
    ) -> None:
        super().__init__(directory, namespace=namespace, capacity=capacity, chunk=chunk,
                         spill_directory=spill_directory, lease=lease, reads=reads,
                         create=create, **transfer)

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> ShmConnector:
        options: dict[str, Any] = check_options(
            cls.type_name, config,
            {"directory", "namespace", "capacity", "chunk", "spill_directory", "lease", "reads",
             "fsync"} | TRANSFER_OPTIONS,
        )
        return cls(**options)


def _beat(db: Any, owner: str) -> None:
    pid, start = this_process()
    db.execute("INSERT INTO owners VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET beat = ?",
               (owner, pid, start, time.time(), time.time()))


_OPEN: weakref.WeakSet[ArenaConnector] = weakref.WeakSet()


def _opened(connector: ArenaConnector) -> None:
    """Remember an open connector; the first one registers the exit hook (not the import)."""
    _OPEN.add(connector)
    at_exit_once(_trim_all)


def _trim_all() -> None:
    # at exit, empty stores give their segments' memory back
    for connector in list(_OPEN):
        try:
            connector.arena.trim()
        except Exception:
            pass
