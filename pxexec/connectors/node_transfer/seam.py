"""What the transfer needs from a node-local store (see the package doc)."""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["Incoming", "NodeLocalStore"]


class Incoming(Protocol):
    """A new object being received: fill ``buffer``, then ``seal()`` or ``abort()``."""

    buffer: memoryview

    def seal(self) -> None: ...

    def abort(self) -> None: ...


class NodeLocalStore(Protocol):
    """The local side of a transfer (implemented by FileConnector and its subclasses)."""

    path: str

    def sealed_file(self, token: str) -> tuple[int, int, int] | None: ...

    def new_object(self, token: str, nbytes: int) -> Incoming: ...

    def remove_local(self, token: str) -> bool: ...

    def has_local(self, token: str) -> bool: ...

    def config(self) -> dict[str, Any]: ...
