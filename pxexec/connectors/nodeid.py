"""Which node this process runs on: hostname and boot id.

Node-local stores (shared memory, a node's local disk) put this identity into their
keys, so that a key read on another node says where its object lives. The boot id
tells apart two boots of one host (objects in RAM do not survive a reboot); hosts
that share a kernel (containers, the namespaces of ``pxexec.testbed``) differ by name.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

__all__ = ["NodeId", "this_node"]

_CACHE: tuple[int, NodeId] | None = None


@dataclass(frozen=True)
class NodeId:
    """A node's hostname and boot id (its first 8 hex digits).

    >>> node = NodeId("n1", "0ca583ff")
    >>> node.tag, NodeId.parse(node.tag) == node
    ('n1~0ca583ff', True)
    """

    hostname: str
    boot: str

    @property
    def tag(self) -> str:
        """The form that goes into keys and configs: ``hostname~boot``."""
        return f"{self.hostname}~{self.boot}"

    @classmethod
    def parse(cls, tag: str) -> NodeId:
        hostname, _, boot = tag.rpartition("~")
        return cls(hostname or tag, boot)

    def __str__(self) -> str:
        return f"host {self.hostname!r} (boot {self.boot})"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip().replace("-", "")[:8]
    except OSError:  # not Linux: the boot time stands in for it
        return "00000000"


def this_node() -> NodeId:
    """The node this process runs on (looked up once per process).

    >>> this_node().hostname == __import__("socket").gethostname()
    True
    """
    global _CACHE
    cached = _CACHE
    if cached is None or cached[0] != os.getpid():
        cached = (os.getpid(), NodeId(socket.gethostname().replace("@", "-"), _boot_id()))
        _CACHE = cached
    return cached[1]
