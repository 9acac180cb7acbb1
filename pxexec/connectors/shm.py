"""Node-local shared memory, one file per object on /dev/shm (``shm-files``).

``shm`` names the node store (``pxexec.connectors.node.ShmConnector``), which is
faster on one node; this store stays for what needs one file per object, and it is
the store with direct node-to-node transfer (``SharedMemoryConnector(transfer=True)``,
see docs/multi-node.md): its keys name the host that holds each object.
"""

from __future__ import annotations

import os
from typing import Any

from pxexec.connectors.base import ConnectorConfig, check_options, directory_from_url
from pxexec.connectors.file import OPTIONS, FileConnector

__all__ = ["SharedMemoryConnector", "default_shm_directory"]


def default_shm_directory() -> str:
    """Where shm stores live by default: ``$PXEXEC_SHM_DIR``, else a per-user directory
    in /dev/shm.

    >>> default_shm_directory().startswith("/dev/shm/pxexec-") or "PXEXEC_SHM_DIR" in os.environ
    True
    """
    return os.environ.get("PXEXEC_SHM_DIR") or f"/dev/shm/pxexec-{os.getuid()}"


class SharedMemoryConnector(FileConnector):
    """Objects live in RAM under /dev/shm, visible to every process on this node.

    A read maps the object copy-on-write: numpy arrays view shared memory without a
    copy, and a write by one reader is private to that reader. The directories are
    private to the user (``/dev/shm/pxexec-UID`` is checked to be 0700 and owned by
    you); objects a process holds are reaped once it dies (see ``FileConnector``).

    >>> from pxexec import Store
    >>> import numpy as np
    >>> with Store("shm-demo", SharedMemoryConnector(namespace="demo")) as store:
    ...     key = store.put(np.arange(4))
    ...     print(store.get(key).tolist())
    ...     store.evict(key)
    [0, 1, 2, 3]
    """

    type_name = "shm-files"
    free_in_background = True
    node_local_default = True

    def __init__(
        self, directory: str | None = None, *, namespace: str = "default", fsync: bool = False,
        lease: float | None = None, track_owners: bool = True, create: bool = True,
        **node: Any,
    ) -> None:
        super().__init__(
            directory or default_shm_directory(), namespace=namespace, fsync=False, lease=lease,
            track_owners=track_owners, create=create, **node,
        )

    def _own_parents(self) -> list[str]:
        # /dev/shm/pxexec-UID is pxexec's: it must be private (0700, ours, no symlink)
        default = default_shm_directory()
        return [default] if self.directory == default else []

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> SharedMemoryConnector:
        options: dict[str, Any] = check_options(cls.type_name, config, OPTIONS)
        return cls(**options)

    @classmethod
    def options_from_url(cls, url: str) -> dict[str, Any]:
        """``shm-files`` or ``shm-files:///abs/dir`` (default: ``default_shm_directory()``)."""
        return directory_from_url(url, cls.type_name)
