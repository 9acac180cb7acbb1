"""pxexec's stored bytes in Dask's own views: worker metrics, the dashboard, the client.

Dask's dashboard counts a proxy as the few hundred bytes it pickles to, while its
object sits in the store. ``install(client)`` registers a worker plugin that adds
pxexec's figures to every worker's metrics; Dask then shows them as extra columns of
the dashboard's Workers table (``/workers``), and ``stored_bytes(client)`` reads them:

- ``pxexec_node_stored_bytes``: bytes held by the node-local (shm and file) stores this
  worker has used, on its node (every worker of a node reports the same figure);
- ``pxexec_node_stored_objects``: how many objects those are;
- ``pxexec_bytes_put`` / ``pxexec_bytes_got``: bytes this worker process wrote to and
  read from any store (results it proxied, arguments it resolved), since it started.

The figures are computed at each worker heartbeat from the store directories (no
object data is read). Redis and DAOS stores count in ``bytes_put``/``bytes_got`` only:
use ``pxexec du redis://...`` for their contents.
"""

from __future__ import annotations

from typing import Any

import distributed

from pxexec.store.registry import registered_stores
from pxexec.store.usage import stored_objects

__all__ = ["METRICS", "StoreUsagePlugin", "install", "stored_bytes"]


def _node_objects(worker: Any) -> list[Any]:
    from pxexec.connectors.file import FileConnector

    seen: dict[str, Any] = {}
    for store in registered_stores():
        connector = store.connector
        if isinstance(connector, FileConnector):
            seen.setdefault(connector.path, connector)
    return [o for c in seen.values() for o in stored_objects(c)]


def _node_stored_bytes(worker: Any) -> int:
    return sum(o.nbytes for o in _node_objects(worker))


def _node_stored_objects(worker: Any) -> int:
    return len(_node_objects(worker))


def _bytes_put(worker: Any) -> int:
    return sum(s.metrics.bytes_put for s in registered_stores())


def _bytes_got(worker: Any) -> int:
    return sum(s.metrics.bytes_got for s in registered_stores())


#: the metrics the plugin adds to each worker, by name
METRICS = {
    "pxexec_node_stored_bytes": _node_stored_bytes,
    "pxexec_node_stored_objects": _node_stored_objects,
    "pxexec_bytes_put": _bytes_put,
    "pxexec_bytes_got": _bytes_got,
}


class StoreUsagePlugin(distributed.WorkerPlugin):  # type: ignore[misc]
    """Adds pxexec's figures (``METRICS``) to the metrics of every worker.

    >>> StoreUsagePlugin.name
    'pxexec-store-usage'
    """

    name = "pxexec-store-usage"

    def setup(self, worker: Any) -> None:
        worker.metrics.update(METRICS)

    def teardown(self, worker: Any) -> None:
        for name in METRICS:
            worker.metrics.pop(name, None)


def install(client: Any) -> None:
    """Register the plugin on every worker of ``client``'s cluster (and future ones).

    >>> from distributed import Client
    >>> client = Client(processes=False, n_workers=1, dashboard_address=None)
    >>> install(client)
    >>> sorted(stored_bytes(client).popitem()[1])  # doctest: +SKIP
    ['pxexec_bytes_got', 'pxexec_bytes_put', 'pxexec_node_stored_bytes', ...]
    >>> client.close()
    """
    client.register_plugin(StoreUsagePlugin())


def stored_bytes(client: Any) -> dict[str, dict[str, float]]:
    """pxexec's figures per worker address, as of each worker's last heartbeat.

    >>> stored_bytes  # doctest: +ELLIPSIS
    <function stored_bytes at ...>
    """
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {address: {k: v for k, v in info.get("metrics", {}).items() if k in METRICS}
            for address, info in workers.items()}
