"""Preparing a submission's arguments: what goes by proxy, moved, borrowed or passed.

One preparation for StoreExecutor and the drop-in Dask ``Client``: the policy picks
what is stored (``pxexec.policies.apply``), each stored input is recorded in the
submission's ledger and its lease held; an ``OwnedProxy`` is moved into the task, a
borrow is held until the task completes, other proxies pass through (the caller
keeps them). Proxies travel boxed (``pxexec.executor.worker.Boxed``) so engines do not look
inside them. Runs on the submitting thread only (see ``pxexec.executor.ledger``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pxexec.executor.future import StoreFuture
from pxexec.executor.ledger import Ledger, proxy_key
from pxexec.executor.worker import Boxed
from pxexec.policies.apply import check_policy, tags_for
from pxexec.proxy import Proxy
from pxexec.store.leases import hold as hold_leases
from pxexec.store.ownership import OwnedProxy, RefProxy, hold, plain, take
from pxexec.store.reachable import shallow_map
from pxexec.store.store import Store

__all__ = ["Arguments"]


def _never(obj: Any) -> bool:
    return False


class Arguments:
    """Turns arguments into what the engine gets, recording them in a ledger.

    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("arguments-demo", LocalConnector())
    >>> prepare = Arguments(store, lambda obj: isinstance(obj, list))
    >>> ledger = Ledger()
    >>> sent = prepare.one([1, 2], ledger)
    >>> type(sent).__name__, ledger.input_keys == [sent.value.__px_factory__.key]
    ('Boxed', True)
    """

    def __init__(
        self,
        store: Store,
        policy: Callable[[Any], bool],
        *,
        containers: bool = False,
        hold_inputs: bool = True,
        is_future: Callable[[Any], bool] = _never,
        native_futures: bool = False,
        dependency: Callable[[StoreFuture], Any] | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.containers = containers
        self.hold_inputs = hold_inputs  # keep stored inputs' leases while tasks run
        self.is_future = is_future  # the engine's own futures pass as they are
        self.native_futures = native_futures  # they may be task arguments
        #: what a StoreFuture argument becomes (pxexec.executor.placement); None: its
        #: engine future where the engine takes them, else the StoreFuture (waited on)
        self.dependency = dependency

    def all(self, args: tuple[Any, ...], kwargs: dict[str, Any], ledger: Ledger
            ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The prepared positional and keyword arguments."""
        return (tuple(self.one(a, ledger) for a in args),
                {k: self.one(v, ledger) for k, v in kwargs.items()})

    def one(self, value: Any, ledger: Ledger) -> Any:
        kind = type(value)
        if kind is StoreFuture:
            ledger.record_upstream(value)  # its result must outlive this task
            if self.dependency is not None:
                passed = self.dependency(value)
                if passed is value or type(passed) is Boxed:  # a proxied result comes in
                    ledger.fed = True
                return passed
            if self.native_futures and value.engine_future is not None:
                return value.engine_future
            return value
        if isinstance(value, Proxy):
            return self.pass_proxy(value, ledger)
        if self.is_future(value):
            return value
        if self.containers and (kind is list or kind is tuple or kind is dict):
            return shallow_map(value, lambda item: self._item(item, ledger))
        if check_policy(self.policy, value):
            return self.store_input(value, ledger)
        return value

    def _item(self, item: Any, ledger: Ledger) -> Any:
        if isinstance(item, Proxy):
            return self.pass_proxy(item, ledger)
        if type(item) is StoreFuture or self.is_future(item):
            return item
        if check_policy(self.policy, item):
            return self.store_input(item, ledger)
        return item

    def store_input(self, value: Any, ledger: Ledger) -> Boxed:
        proxy = self.store.proxy(value, tags=tags_for(self.policy, value))
        key = proxy.__px_factory__.key
        ledger.record_stored(key)
        if self.hold_inputs:
            hold_leases(self.store, [key])  # alive while this process lives
        return Boxed(proxy)

    def pass_proxy(self, value: Proxy[Any], ledger: Ledger) -> Boxed:
        if isinstance(value, OwnedProxy):  # moved into the task: freed when it completes
            sent = plain(value)
            ledger.record_stored(take(value))
            return Boxed(sent)
        # sealed: the owner of what these proxies name may live in this process
        if isinstance(value, RefProxy):  # borrowed until the task completes
            ledger.record_borrow(hold(value))
            return Boxed(plain(value), sealed=True)
        key = proxy_key(value)
        if key is not None:
            ledger.record_foreign(key)
        return Boxed(value, sealed=True)
