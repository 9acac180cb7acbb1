"""A node-local object store in pre-mapped shared memory (the ``node`` connector).

Modules: ``liveness`` (process identity), ``files`` (private directory, segment and
spill files), ``index`` (the SQLite index all processes share), ``allocator``
(first-fit with coalescing), ``arena`` (object life cycle), ``connector``.
"""

from __future__ import annotations

from pxexec.connectors.node.connector import NodeConnector, ShmConnector, default_node_directory

__all__ = ["NodeConnector", "ShmConnector", "default_node_directory"]
