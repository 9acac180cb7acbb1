"""Host identity in the node store's keys, and direct node-to-node transfer.

``HostKeys`` sits in front of the arena store (``connector.ArenaConnector``): a key is
``token@hostname~boot`` (``@ip:port`` of the node's server added with ``transfer``).
A key of this node goes straight to the arena (a string split and compare, no
system call, no server). A key of another node raises ``ObjectOnOtherHostError``
naming that host, or with ``transfer=True`` is pulled from that node's server once
into this node's arena (``recv_into`` reserved arena space, then sealed; spilled like
any object when the arena is full); every later reader on this node maps that copy.
The node's server (``pxexec.connectors.node_transfer.server``) serves objects with
``sendfile`` straight from the segment file at the object's offset, while a pin keeps
the range from being reused.

Transfer is off by default: turning it on starts a server on each node that stores
an object (a daemon process) and puts its address into keys; a single-node run needs
neither.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from pxexec.connectors.base import Buffer, ConnectorConfig
from pxexec.connectors.node.arena import Arena, Slot
from pxexec.connectors.node_local import NodeTransfer
from pxexec.connectors.nodeid import this_node
from pxexec.errors import MissingKeyError
from pxexec.recent import Recent

__all__ = ["TRANSFER_OPTIONS", "ArenaIncoming", "HostKeys", "VerifiedObjects"]

#: constructor options of the transfer (in configs only when ``transfer`` is on)
TRANSFER_OPTIONS = {"transfer", "bind", "secret_env", "transfer_timeout", "replica_lease",
                    "idle", "transfer_streams"}


class VerifiedObjects:
    """Ids of arena objects whose digests this process checked while receiving them
    (the last ``size``): a sealed object never changes and ids are never reused, so
    reading one of them need not hash its bytes again.

    >>> verified = VerifiedObjects(size=2)
    >>> for obj in (1, 2, 3):
    ...     verified.add(obj)
    >>> 1 in verified, 3 in verified
    (False, True)
    """

    def __init__(self, size: int = 4096) -> None:
        self._ids: Recent[int, bool] = Recent(size)

    def add(self, obj: int) -> None:
        self._ids.put(obj, True)

    def __contains__(self, obj: object) -> bool:
        return obj in self._ids


class ArenaIncoming:
    """An object being received into the arena: reserved space, sealed under ``token``.

    ``seal(verified=True)`` (its digests were checked as it arrived) reports the
    object's id to ``on_verified`` once it is sealed under ``token``.

    >>> import tempfile
    >>> from pxexec.connectors.node import NodeConnector
    >>> store = NodeConnector(tempfile.mkdtemp(), chunk=1 << 20)
    >>> incoming = store.new_object("2" * 32, 3)
    >>> incoming.buffer[:] = b"abc"; incoming.seal(verified=True)
    >>> store.has_local("2" * 32), bytes(store.arena.open("2" * 32))
    (True, b'abc')
    >>> store.get_identified("2" * 32)[2]  # this process checked these bytes
    True
    >>> store.remove_local("2" * 32)
    True
    """

    def __init__(self, arena: Arena, token: str, nbytes: int,
                 on_verified: Callable[[int], None] | None = None) -> None:
        self.arena = arena
        self.token = token
        self.on_verified = on_verified
        self.slot: Slot = arena.reserve(None, nbytes)
        try:
            self.buffer: memoryview = (arena.writable(self.slot) if nbytes
                                       else memoryview(bytearray()))
        except BaseException:
            arena.abort(self.slot.obj)
            raise

    def seal(self, verified: bool = False) -> None:
        self.buffer.release()
        try:
            sealed = self.arena.seal(self.slot.obj, key=self.token)
        except sqlite3.IntegrityError:  # another reader here sealed its copy first
            sealed = False
        if not sealed:
            self.arena.abort(self.slot.obj)
        elif verified and self.on_verified is not None:
            self.on_verified(self.slot.obj)

    def abort(self) -> None:
        self.buffer.release()
        self.arena.abort(self.slot.obj)


class HostKeys(NodeTransfer):
    """Keys that name their node, and transfer between nodes (see the module doc).

    Mixed in before the arena store: relies on its ``arena``, ``path``, ``lease`` and
    its methods taking bare tokens.
    """

    arena: Arena
    path: str
    lease: float | None
    #: objects this process received and verified (``ArenaConnector``)
    verified: VerifiedObjects
    #: received objects go straight into arena space (``recv_into``)
    receive_in_place = True

    def __init__(self, directory: str | None = None, *, transfer: bool = False,
                 bind: str | None = None, secret_env: str | None = None,
                 transfer_timeout: float = 5.0, replica_lease: float = 30.0,
                 idle: float = 60.0, transfer_streams: int = 4, **options: Any) -> None:
        self._set_transfer(transfer, bind, secret_env, transfer_timeout, replica_lease, idle,
                           transfer_streams)
        #: this node (a connector is made anew on each host: from_config, unpickling)
        self._here = this_node().tag
        super().__init__(directory, **options)  # type: ignore[call-arg]

    # -- keys -------------------------------------------------------------------------

    def _key_for(self, token: str) -> str:
        if self.transfer:
            return f"{token}@{self._here}@{self.server_address()}"
        return f"{token}@{self._here}"

    def key_suffix(self) -> str:
        """What this node's keys carry after their token (``@host~boot[@ip:port]``)."""
        return self._suffix()

    def _suffix(self) -> str:
        suffix = f"@{self._here}"
        if self.transfer and not self.serving:
            address = self.known_address()
            suffix += f"@{address}" if address else ""
        return suffix

    def _remote(self, key: str, action: str) -> tuple[str, str | None, str | None]:
        token, holder, address = self._where(key)
        if holder is not None and (not self.transfer or address is None):
            raise self._elsewhere(key, holder, action)
        return token, holder, address

    # -- the connector contract, keys in and out ---------------------------------------

    def put(self, frames: Sequence[Buffer]) -> str:
        return self._key_for(super().put(frames))  # type: ignore[misc]

    def get(self, key: str) -> Buffer | None:
        token, holder, address = self._remote(key, "read")
        if holder is not None and address is not None and not self.has_local(token):
            from pxexec.connectors.node_transfer import replicas

            fetched = replicas.pull(self, token, holder, address)
            if fetched:
                return fetched[0]
        got: Buffer | None = super().get(token)  # type: ignore[misc]
        return got

    def get_identified(self, key: str) -> tuple[Buffer, Hashable, bool] | None:
        """``get(key)`` with the id of the local object (a pulled replica's own id) and
        whether this process verified its digests while pulling it."""
        token, holder, address = self._remote(key, "read")
        if holder is not None and address is not None and not self.has_local(token):
            from pxexec.connectors.node_transfer import replicas

            fetched = replicas.pull(self, token, holder, address)
            if fetched:  # no room here for a copy: this reader's own bytes, unchecked
                return fetched[0], None, False
        got: tuple[Buffer, Hashable, bool] | None = super().get_identified(  # type: ignore[misc]
            token)
        return got

    def get_batch(self, keys: Sequence[str]) -> list[Buffer | None]:
        """Like ``get`` for each key; objects of other nodes that this node lacks are
        pulled over one pipelined connection per node."""
        missing: dict[tuple[str, str], list[str]] = {}
        for key in keys:
            token, holder, address = self._remote(key, "read")
            if holder is not None and address is not None and not self.has_local(token):
                missing.setdefault((holder, address), []).append(token)
        if missing:
            from pxexec.connectors.node_transfer import replicas

            for (holder, address), tokens in missing.items():
                replicas.pull_many(self, tokens, holder, address)
        return [self.get(key) for key in keys]

    def exists(self, key: str) -> bool:
        token, holder, address = self._remote(key, "check")
        if self.has_local(token) or holder is None or address is None:
            return self.has_local(token)
        return bool(self.transfer_client().has(holder, address, [token])[0])

    def evict(self, key: str) -> None:
        self.evict_batch([key])

    def evict_batch(self, keys: Sequence[str]) -> None:
        local, remote = [], []
        for key in keys:
            token, holder, address = self._remote(key, "free")
            if holder is None:
                local.append(token)
            else:
                remote.append((token, holder, address))
        if not self.transfer:
            super().evict_batch(local)  # type: ignore[misc]
        else:
            for token in local:
                self.free_here(token)
        failed = []
        for token, holder, address in remote:
            self.drop_copy(token)
            try:
                self.transfer_client().evict(holder, address, token, self.known_address())
            except ConnectionError as exc:
                failed.append(exc)
        if failed:
            raise failed[0]

    def replace(self, key: str, frames: Sequence[Buffer]) -> None:
        try:
            super().replace(self._local_token(key, "replace"), frames)  # type: ignore[misc]
        except MissingKeyError as exc:  # name the key the caller gave, not its token
            raise MissingKeyError(key, exc.store, exc.detail) from None

    def allocate(self, nbytes: int) -> tuple[str, Any]:
        token, buffer = super().allocate(nbytes)  # type: ignore[misc]
        return self._key_for(token), buffer

    def seal(self, key: str) -> None:
        super().seal(self._local_token(key, "seal"))  # type: ignore[misc]

    def object_id(self, key: str) -> int | None:
        found: int | None = super().object_id(  # type: ignore[misc]
            self._local_token(key, "identify"))
        return found

    def locate(self, key: str) -> tuple[str, int, int] | None:
        where: tuple[str, int, int] | None = super().locate(  # type: ignore[misc]
            self._local_token(key, "locate"))
        return where

    def path_of(self, key: str) -> str:
        """The segment or spill file that holds ``key``'s object on this node ("" if none)."""
        where = self.locate(key)
        return where[0] if where else ""

    def keys(self) -> list[str]:
        suffix = self._suffix()
        tokens: list[str] = super().keys()  # type: ignore[misc]
        return [t + suffix for t in tokens]

    # -- leases across nodes ----------------------------------------------------------

    def adopt(self, owner: str, keys: Sequence[str]) -> None:
        # objects of other nodes are held there (renew records the owner on that node)
        tokens = [t for t, holder, _ in map(self._where, keys) if holder is None]
        super().adopt(owner, tokens)  # type: ignore[misc]

    def renew(self, owner: str, keys: Sequence[str], seconds: float) -> None:
        super().renew(owner, keys, seconds)  # type: ignore[misc]
        if self.lease is None or not self.transfer:
            return
        self.renew_elsewhere(owner, keys)

    def hold_for(self, owner: str, tokens: Sequence[str]) -> list[bool]:
        """(The node server's side of ``renew``.) Record ``owner``, a process on another
        host, as holding ``tokens`` here, alive while its heartbeat (renewed by each
        call) is younger than the lease; whether each object exists."""
        found = [self.has_local(t) for t in tokens]
        if self.lease is not None:
            super().adopt(owner, [t for t, ok in zip(tokens, found) if ok])  # type: ignore[misc]
        return found

    # -- the transfer seam (pxexec.connectors.node_transfer.seam) ----------------------

    def has_local(self, token: str) -> bool:
        exists: bool = super().exists(token)  # type: ignore[misc]
        return exists

    def remove_local(self, token: str) -> bool:
        existed = self.has_local(token)
        super().evict_batch([token])  # type: ignore[misc]
        return existed

    def new_object(self, token: str, nbytes: int) -> ArenaIncoming:  # type: ignore[override]
        if len(token) != 32 or token.strip("0123456789abcdef"):
            raise KeyError(f"{token!r} is not a token of a node store.")
        return ArenaIncoming(self.arena, token, nbytes, on_verified=self.verified.add)

    def sealed_file(self, token: str) -> tuple[int, int, int] | None:
        raise NotImplementedError("the node store serves through sealed_range")

    def sealed_range(self, token: str) -> tuple[int, int, int, Any] | None:
        """(fd, offset, length, hold) of a sealed object, for ``sendfile``: ``hold``
        pins the range until dropped. ``fd`` is -1 for a small object: send ``hold``."""
        view = self.arena.open(token) if not token.strip("0123456789abcdef") else None
        if view is None:
            return None
        if isinstance(view, bytearray):
            return -1, 0, len(view), view
        where = super().locate(token)  # type: ignore[misc]
        if where is None:  # evicted since: what the pinned view holds is still whole
            return -1, 0, memoryview(view).nbytes, view
        path, offset, length = where
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC), offset, length, view

    def config(self) -> ConnectorConfig:
        config: ConnectorConfig = super().config()  # type: ignore[misc]
        if self.transfer:
            config.update(transfer=True, bind=self.bind, secret_env=self.secret_env,
                          transfer_timeout=self.transfer_timeout,
                          replica_lease=self.replica_lease, idle=self.idle,
                          transfer_streams=self.transfer_streams)
        return config
