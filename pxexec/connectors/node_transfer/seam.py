"""What the transfer needs from a node-local store (see the package doc)."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Incoming", "NodeLocalStore"]


class Incoming(Protocol):
    """A new object being received: fill ``buffer``, then ``seal()`` or ``abort()``.

    ``seal(verified=True)`` says the digests of the received bytes were checked as
    they arrived: a store that names its objects (``IdentifiesContent``) remembers it,
    so that this process does not hash them again when it reads them.

    >>> import tempfile
    >>> from pxexec.connectors.file import FileConnector
    >>> store = FileConnector(tempfile.mkdtemp(), node_local=True)
    >>> incoming: Incoming = store.new_object("0" * 32, 3)
    >>> incoming.buffer[:] = b"abc"; incoming.seal()
    >>> store.has_local("0" * 32)
    True
    >>> import shutil; shutil.rmtree(store.directory)
    """

    buffer: memoryview

    def seal(self, verified: bool = False) -> None: ...

    def abort(self) -> None: ...


class NodeLocalStore(Protocol):
    """The local side of a transfer (implemented by FileConnector and its subclasses).

    >>> import os, tempfile
    >>> from pxexec.connectors.shm import SharedMemoryConnector
    >>> local: NodeLocalStore = SharedMemoryConnector(tempfile.mkdtemp(dir="/dev/shm"))
    >>> token = local.put([b"hello"]).partition("@")[0]
    >>> fd, offset, length = local.sealed_file(token); os.close(fd); length
    5
    >>> import shutil; shutil.rmtree(local.directory)
    """

    path: str

    def sealed_file(self, token: str) -> tuple[int, int, int] | None: ...

    def new_object(self, token: str, nbytes: int) -> Incoming: ...

    def remove_local(self, token: str) -> bool: ...

    def has_local(self, token: str) -> bool: ...

    def known_address(self) -> str: ...

    def server_address(self) -> str: ...

    def transfer_client(self) -> Any: ...

    def config(self) -> dict[str, Any]: ...
