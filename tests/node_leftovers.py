"""What a test run left in its own node-store directory (checked after the run).

The run sets ``PXEXEC_NODE_DIR`` to a fresh private directory before anything opens a
node store, and every process it starts inherits it: stores made without a directory
(``shm``, ``node``, the bench's, the docs' and examples' blocks) live there, and no
other process on the machine writes to it. After the run, every namespace in it must
hold zero objects, writes, pins and arena bytes in use (after a sweep of what dead
processes left: crash debris is swept by design; a sealed object nobody freed is not).
"""

from __future__ import annotations

import gc
import os

from pxexec.connectors.node import NodeConnector


def leftovers(directory: str) -> dict[str, dict[str, int]]:
    """Per namespace of ``directory``, the stats of stores that are not empty."""
    gc.collect()
    found: dict[str, dict[str, int]] = {}
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return found
    for name in names:
        if not os.path.exists(os.path.join(directory, name, "index.sqlite")):
            continue
        connector = NodeConnector(directory, namespace=name, create=False)
        stats = connector.stats()
        if any(stats[k] for k in ("objects", "writing", "pins", "bytes_in_use",
                                  "spilled_objects_now")):
            found[name] = stats
        else:
            connector.trim()
        connector.arena.index.close()
    return found
