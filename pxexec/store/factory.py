"""StoreFactory: what a proxy made by a store pickles to (a key and a store config)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["StoreFactory"]

if TYPE_CHECKING:
    from pxexec.store.store import Store


class StoreFactory:
    """Resolves one key through the store its config describes.

    On a worker the store is rebuilt from the config once per process (through the
    store registry); the factory itself pickles to the key and the config only.

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("factory-class-demo", LocalConnector())
    >>> factory = StoreFactory(store.put("hello"), store.config(), store=store)
    >>> factory()
    'hello'
    """

    __slots__ = ("_fingerprint", "_store", "key", "store_config")

    def __init__(self, key: str, store_config: dict[str, Any], *, store: Store | None = None):
        self.key = key
        self.store_config = store_config
        self._store = store
        self._fingerprint: str | None = None

    def store(self) -> Store:
        """The store this factory reads from (built in this process on first use)."""
        if self._store is None:
            from pxexec.store.registry import fingerprint, get_or_create_store

            if self._fingerprint is None:
                self._fingerprint = fingerprint(self.store_config)
            self._store = get_or_create_store(self.store_config, self._fingerprint)
        return self._store

    def __call__(self) -> Any:
        return self.store().get(self.key)

    def describe(self) -> str:
        return f"key={self.key!r} store={self.store_config.get('name')!r}"

    def __repr__(self) -> str:
        return f"StoreFactory({self.describe()})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (StoreFactory, (self.key, self.store_config))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, StoreFactory)
            and other.key == self.key
            and other.store_config == self.store_config
        )

    def __hash__(self) -> int:
        return hash((self.key, self.store_config.get("name")))
