"""pxexec: pass large task data by proxy through any concurrent.futures-style engine.

Importing pxexec needs no optional dependency; engines and backends are imported
when first used.
"""

from __future__ import annotations

from pxexec.errors import (
    ConfigError,
    DeserializationError,
    MissingDependencyError,
    MissingKeyError,
    PxexecError,
    StoreConnectionError,
    StoreIOError,
    UnknownConnectorError,
)
from pxexec.executor.facade import StoreExecutor, StoreFuture
from pxexec.executor.worker import current_store
from pxexec.proxy import Proxy, ProxyOr, extract, get_factory, is_proxy, is_resolved, resolve
from pxexec.store.factory import StoreFactory
from pxexec.store.store import Store

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DeserializationError",
    "MissingDependencyError",
    "MissingKeyError",
    "Proxy",
    "ProxyOr",
    "PxexecError",
    "Store",
    "StoreConnectionError",
    "StoreExecutor",
    "StoreFactory",
    "StoreFuture",
    "StoreIOError",
    "UnknownConnectorError",
    "__version__",
    "current_store",
    "extract",
    "get_factory",
    "is_proxy",
    "is_resolved",
    "resolve",
]
