"""What a test run left in its own node-store directory (checked after the run).

The run sets ``PXEXEC_NODE_DIR`` to a fresh private directory before anything opens a
node store, and every process it starts inherits it: stores made without a directory
(``shm``, ``node``, the bench's, the docs' and examples' blocks) live there, and no
other process on the machine writes to it. After the run, every namespace in it must
hold zero objects, writes, pins and arena bytes in use (after a sweep of what dead
processes left: crash debris is swept by design; a sealed object nobody freed is not).
The file-per-object store's default directory (``PXEXEC_SHM_DIR``) is the run's own too,
and must hold no object file after the run.
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


def file_leftovers(directory: str) -> dict[str, int]:
    """Per namespace of a file-per-object store directory (``shm-files``), how many
    objects (files named by a 32-hex-digit key) are left."""
    import re

    key = re.compile(r"[0-9a-f]{32}")
    found: dict[str, int] = {}
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return found
    for name in names:
        path = os.path.join(directory, name)
        if not os.path.isdir(path):
            continue
        count = sum(1 for entry in os.listdir(path) if key.fullmatch(entry))
        if count:
            found[name] = count
    return found

