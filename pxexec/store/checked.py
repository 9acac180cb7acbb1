"""Payloads this process has verified: decoded again without checking their digests.

A node store maps the same stored bytes for every read; verifying the XXH3 digests of
a 100 MB array costs about 10 ms, so a worker that runs four tasks on one array would
pay that four times for bytes that cannot have changed: a sealed object is immutable,
and a replaced or re-stored one gets a new id (``IdentifiesContent``). What is
remembered is the pair (key, object id), never the bytes, for the last ``size`` pairs.

>>> checked = CheckedPayloads(2)
>>> calls = []
>>> decode = lambda buffer: calls.append(buffer) or len(buffer)
>>> checked.decode("k", 7, decode, b"abc"), checked.seen("k", 7), checked.seen("k", 8)
(3, True, False)
>>> checked.remember("k", 8); checked.seen("k", 8)  # verified elsewhere (a pull)
True
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from pxexec.codec.integrity import digests_checked
from pxexec.recent import Recent

__all__ = ["CheckedPayloads"]


class CheckedPayloads(Recent[tuple[str, Hashable], bool]):
    """The last ``size`` (key, object id) pairs whose payload decoded and verified."""

    def __init__(self, size: int = 4096) -> None:
        super().__init__(size)

    def seen(self, key: str, ident: Hashable) -> bool:
        return (key, ident) in self

    def decode(self, key: str, ident: Hashable, decode: Callable[[Any], Any],
               buffer: Any, *, checked: bool = False) -> Any:
        """``decode(buffer)``, without digest checks if this pair decoded before or the
        connector verified these bytes itself as it received them (``checked``)."""
        if checked or self.seen(key, ident):
            with digests_checked():
                obj = decode(buffer)
        else:
            obj = decode(buffer)  # raises on a corrupted payload: nothing remembered
        self.remember(key, ident)
        return obj

    def remember(self, key: str, ident: Hashable) -> None:
        """Record that the payload under (key, ident) was verified (here, or by the
        connector as it received the bytes)."""
        self.put((key, ident), True)
