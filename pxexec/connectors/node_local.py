"""What makes a file-per-object store a node-local store with direct transfer.

``NodeTransfer`` is the part of ``FileConnector`` (and ``SharedMemoryConnector``) that
implements the seam of ``pxexec.connectors.node_transfer`` (sealed objects as file
ranges, new objects to receive into) and the handles the transfer needs (its client,
this node's server address); ``IncomingFile`` is an object being received.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
import threading
import time
from collections.abc import Sequence
from typing import Any

from pxexec.connectors.nodeid import this_node
from pxexec.connectors.owners import process_owner
from pxexec.errors import ConfigError, ObjectOnOtherHostError, StoreIOError

__all__ = ["IncomingFile", "NodeTransfer", "check_transfer_options"]

Buffer = Any


def check_transfer_options(transfer: bool, secret_env: str | None, **seconds: float) -> None:
    """Refuse bad transfer options before any I/O: periods (``transfer_timeout``,
    ``replica_lease``, ``idle``) must be positive seconds; a secret variable must be set.

    >>> check_transfer_options(True, None, idle=0)
    Traceback (most recent call last):
    ...
    pxexec.errors.ConfigError: idle must be a positive number of seconds, got 0.
    """
    for name, value in seconds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}.")
    if transfer and secret_env is not None and not os.environ.get(secret_env):
        raise ConfigError(
            f"The transfer secret variable {secret_env!r} is not set in this process; set "
            "it to the same value on every host (or leave secret_env out)."
        )


class NodeTransfer:
    """Mixed into FileConnector; relies on its ``path``, ``_file``, ``_write`` and
    ``_evict_local`` (see the module doc).

    >>> import tempfile
    >>> from pxexec.connectors.file import FileConnector
    >>> store = FileConnector(tempfile.mkdtemp(), node_local=True)
    >>> isinstance(store, NodeTransfer), store.has_local("0" * 32)
    (True, False)
    """

    path: str
    type_name: str
    bind: str | None
    secret_env: str | None
    transfer: bool
    transfer_timeout: float
    _client: Any
    _server: tuple[float, str] | None

    def _set_transfer(self, transfer: bool, bind: str | None, secret_env: str | None,
                      transfer_timeout: float, replica_lease: float, idle: float,
                      streams: int) -> None:
        """Check the transfer options (before any I/O) and keep them; no server yet."""
        check_transfer_options(transfer, secret_env, transfer_timeout=transfer_timeout,
                               replica_lease=replica_lease, idle=idle)
        if isinstance(streams, bool) or not isinstance(streams, int) or not 1 <= streams <= 64:
            raise ConfigError(
                f"transfer_streams must be a whole number of connections from 1 to 64 "
                f"(a large object is pulled over that many at once), got {streams!r}."
            )
        self.transfer = bool(transfer)
        self.bind = bind
        self.secret_env = secret_env
        self.transfer_timeout = float(transfer_timeout)
        self.replica_lease = float(replica_lease)
        self.idle = float(idle)
        self.transfer_streams = streams
        self.serving = False  # set in the node server itself (it never starts another)
        self._client = None
        self._server = None

    @property
    def located(self) -> bool:
        """A read on another node pulls the object there (the ``located`` flag)."""
        return self.transfer

    def _file(self, key: str) -> str:
        raise NotImplementedError

    def _write(self, key: str, frames: Sequence[Buffer]) -> None:
        raise NotImplementedError

    def _evict_local(self, key: str) -> None:
        raise NotImplementedError

    # -- keys that name their node: token@host~boot[@ip:port] ---------------------------

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

    def _local_token(self, key: str, action: str) -> str:
        """The token of ``key`` if its object lives on this node, else raise."""
        token, holder, _ = self._where(key)
        if holder is not None:
            raise self._elsewhere(key, holder, action)
        return token

    def renew_elsewhere(self, owner: str, keys: Sequence[str]) -> None:
        """Renew ``owner``'s hold on the objects of ``keys`` that live on other nodes.

        Their node server records the owner there and renews its heartbeat, so that
        node's reaper spares them while the owner lives and reaps them once it stops
        (one round trip per node).
        """
        remote: dict[tuple[str, str], list[str]] = {}
        for key in keys:
            token, holder, address = self._where(key)
            if holder is not None and address is not None:
                remote.setdefault((holder, address), []).append(token)
        failed = []
        for (holder, address), tokens in remote.items():
            try:
                self.transfer_client().touch(holder, address, tokens, owner)
            except ConnectionError as exc:
                failed.append(str(exc))
        if failed:
            raise StoreIOError("Could not renew leases on other nodes: " + "; ".join(failed))

    def transfer_secret(self) -> bytes | None:
        if self.secret_env is None:
            return None
        value = os.environ.get(self.secret_env)
        return value.encode() if value else None

    def transfer_client(self) -> Any:
        if self._client is None:
            from pxexec.connectors.node_transfer import TransferClient

            self._client = TransferClient(self.transfer_secret(), self.transfer_timeout,
                                          self.transfer_streams)
        return self._client

    def server_address(self) -> str:
        """This node's server address for this store (starting the server if needed)."""
        cached = self._server
        if cached is not None and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        from pxexec.connectors.node_transfer.addresses import resolve_bind
        from pxexec.connectors.node_transfer.server import ensure_server

        address = ensure_server(self, resolve_bind(self.bind))
        self._server = (time.monotonic(), address)
        return address

    def known_address(self) -> str:
        """This node's server address if one runs (never starts one)."""
        from pxexec.connectors.node_transfer.server import _alive, _read_state

        state = _read_state(self.path)
        return str(state["address"]) if state and _alive(int(state["pid"])) else ""

    def _pull(self, token: str, holder: str, address: str) -> list[Buffer] | None:
        from pxexec.connectors.node_transfer import replicas

        return replicas.pull(self, token, holder, address)

    def write_object(self, token: str, frames: Sequence[Buffer]) -> None:
        """Publish ``frames`` as the object ``token`` (the seam's fast write)."""
        self._file(token)  # validates the token
        self._write(token, frames)

    def sealed_file(self, token: str) -> tuple[int, int, int] | None:
        """(fd, offset, length) of a stored object: a regular file, never a symlink."""
        try:
            fd = os.open(self._file(token), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (KeyError, FileNotFoundError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink in place of an object: never follow
                return None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return fd, 0, st.st_size

    def new_object(self, token: str, nbytes: int) -> IncomingFile:
        self._file(token)  # validates the token
        return IncomingFile(self.path, token, nbytes)

    def has_local(self, token: str) -> bool:
        """Whether this node holds ``token`` (a regular file; a symlink is not one)."""
        try:
            return stat.S_ISREG(os.lstat(self._file(token)).st_mode)
        except (KeyError, FileNotFoundError):
            return False

    def remove_local(self, token: str) -> bool:
        existed = self.has_local(token)
        self._evict_local(token)
        return existed

    def drop_copy(self, token: str) -> None:
        """Remove this node's copy of another node's object (and its record)."""
        from pxexec.connectors.node_transfer import replicas

        replicas.drop_copy(self, token)

    def free_here(self, token: str, skip: str = "") -> None:
        """Free ``token`` on this node and, with transfer, every copy of it elsewhere."""
        if not self.transfer:
            self.remove_local(token)
            return
        from pxexec.connectors.node_transfer import replicas

        replicas.free_here(self, token, skip)


class IncomingFile:
    """A received object: a private temporary file mapped writable, renamed into place.

    The temporary file is named as a writer's (``.<token>.<owner>.<thread>.tmp``), so
    that one a crashed receiver left is reaped like any writer's (owners.TEMP); it is
    created exclusively and never through a symlink.

    >>> import tempfile
    >>> incoming = IncomingFile(tempfile.mkdtemp(), "1" * 32, 2)
    >>> incoming.buffer[:] = b"ok"; incoming.seal()
    >>> open(incoming.final, "rb").read()
    b'ok'
    """

    def __init__(self, directory: str, token: str, nbytes: int) -> None:
        self.final = os.path.join(directory, token)
        self.temp = os.path.join(
            directory, f".{token}.{process_owner()}.{threading.get_ident()}.tmp")
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self.fd = os.open(self.temp, flags, 0o600)
        except FileExistsError:  # left by an aborted receive of this thread
            _unlink(self.temp)
            self.fd = os.open(self.temp, flags, 0o600)
        self._map: mmap.mmap | None = None
        try:
            if nbytes:
                try:  # every block now: a full disk is this error, not a SIGBUS mid-receive
                    os.posix_fallocate(self.fd, 0, nbytes)
                except OSError as exc:
                    raise StoreIOError(
                        f"Could not make room for a received object of {nbytes} bytes in "
                        f"{directory!r}: {exc.strerror or exc}. Free space there or give "
                        "the store a directory with room for what this host reads."
                    ) from exc
                self._map = mmap.mmap(self.fd, nbytes)
                self.buffer = memoryview(self._map)
            else:
                self.buffer = memoryview(bytearray())
        except BaseException:
            self.abort()
            raise

    def _close(self) -> None:
        self.buffer.release()
        if self._map is not None:
            self._map.close()
            self._map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def seal(self, verified: bool = False) -> None:
        """Rename the file into place (``verified`` is not kept: files have no ids)."""
        self._close()
        os.replace(self.temp, self.final)

    def abort(self) -> None:
        with contextlib.suppress(AttributeError):
            self._close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        _unlink(self.temp)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
