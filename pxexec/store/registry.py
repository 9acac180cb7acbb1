"""The per-process store registry: one Store per config in each process.

Workers receive store configs (inside proxies' factories), never live stores; the
first use of a config in a process builds its store here, later uses reuse it.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from pxexec.connectors import connector_from_config
from pxexec.errors import ConfigError
from pxexec.forking import on_fork_child

if TYPE_CHECKING:
    from pxexec.store.store import Store

__all__ = ["clear_registry", "fingerprint", "get_or_create_store", "register",
           "registered_stores", "unregister"]

_STORES: dict[str, Store] = {}
_STORES_LOCK = threading.Lock()


def fingerprint(config: dict[str, Any]) -> str:
    """A stable identity of a store config (name, connector and codecs).

    >>> fingerprint({"name": "a", "cache_size": 1}) == fingerprint({"cache_size": 1, "name": "a"})
    True
    """
    return json.dumps(config, sort_keys=True, default=_describe_callable)


def _describe_callable(value: Any) -> str:
    return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', repr(value))}"


def register(store: Store) -> None:
    """Make ``store`` this process's store for its config (a store made first wins).

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("register-demo", LocalConnector(), register=False)
    >>> register(store); get_or_create_store(store.config()) is store
    True
    >>> unregister(store)
    """
    on_fork_child(_renew_registry_lock)
    with _STORES_LOCK:
        _STORES.setdefault(store.fingerprint, store)


def _renew_registry_lock() -> None:
    global _STORES_LOCK
    _STORES_LOCK = threading.Lock()


def unregister(store: Store) -> None:
    """Forget ``store`` in this process (``Store.close``).

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("unregister-demo", LocalConnector())
    >>> unregister(store); store in registered_stores()
    False
    """
    with _STORES_LOCK:
        if _STORES.get(store.fingerprint) is store:
            del _STORES[store.fingerprint]


def get_or_create_store(config: dict[str, Any], fp: str | None = None) -> Store:
    """This process's store for ``config``: reused if already built, else created.

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("get-demo", LocalConnector())
    >>> get_or_create_store(store.config()) is store
    True
    """
    fp = fp or fingerprint(config)
    store = _STORES.get(fp)
    if store is not None:
        return store
    with _STORES_LOCK:
        store = _STORES.get(fp)
        if store is None:
            from pxexec.store.store import Store

            try:
                options = {k: config[k] for k in ("serializer", "deserializer", "cache_size")}
                options["secret_env"] = config.get("secret_env")
                store = Store(
                    config["name"],
                    connector_from_config(config["connector"]),
                    register=False,
                    **options,
                )
            except KeyError as exc:
                raise ConfigError(f"Store config lacks the key {exc.args[0]!r}.") from None
            _STORES[fp] = store
    return store


def registered_stores() -> list[Store]:
    """The stores this process has built or registered.

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("registry-demo", LocalConnector())
    >>> store in registered_stores()
    True
    """
    with _STORES_LOCK:
        return list(_STORES.values())


def clear_registry(close: bool = True) -> None:
    """Forget (and by default close) every registered store of this process.

    Workers rebuild a store from a proxy's config once per process; tests that change a
    store's location call this to start afresh.

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("clear-demo", LocalConnector())
    >>> clear_registry(close=False)
    >>> store in registered_stores()
    False
    """
    with _STORES_LOCK:
        stores = list(_STORES.values())
        _STORES.clear()
    if close:
        for store in stores:
            store.connector.close()
