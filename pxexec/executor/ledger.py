"""The submission ledger: what one task's submission stored, moved, borrowed and read.

The bookkeeping lives here, not on the user's Future (as CPython keeps it in a work
item): the future is the user's; the ledger is the executor's.

**Which thread may run what.** A ledger is written by the submitting thread while
it prepares the arguments (``record_*``), before the task reaches the engine. From
then on exactly one thread reads and clears it: the one that wins the future's
completion race (``TaskCompletion.claim`` in ``pxexec.executor.future``): a thread waiting
in ``result()``, the engine's callback thread, or a dependency's callback thread.
No lock guards a ledger: its two phases never overlap. The only state shared
between threads while a task runs is the completion race itself (one lock in
``TaskCompletion``) and ``abandoned``, a flag ``map`` sets from the consuming thread
and the winner reads after the future's state is set (a late set is seen by
``map``'s own check of ``done()``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pxexec.proxy import Proxy
from pxexec.store.factory import StoreFactory
from pxexec.store.ownership import release_held

if TYPE_CHECKING:
    from pxexec.store.ownership import _Borrow

__all__ = ["Ledger", "proxy_key"]


def proxy_key(obj: Any) -> str | None:
    """The store key behind a proxy made by a store (None for anything else).

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("ledger-key-demo", LocalConnector())
    >>> key = store.put(1)
    >>> proxy_key(store.proxy_from_key(key)) == key, proxy_key([1])
    (True, None)
    """
    if isinstance(obj, Proxy):
        factory = obj.__px_factory__
        if type(factory) is StoreFactory:
            return factory.key
    return None


class Ledger:
    """One submission's bookkeeping (see the module docstring for its threads).

    >>> ledger = Ledger()
    >>> ledger.record_stored("k1"); ledger.record_foreign("k2")
    >>> ledger.input_keys, ledger.foreign_keys
    (['k1'], {'k2'})
    """

    __slots__ = ("abandoned", "borrows", "fed", "fn", "foreign_keys", "input_keys", "upstream")

    def __init__(self) -> None:
        self.input_keys: list[str] = []  # objects this submission stored (or moved in)
        self.foreign_keys: set[str] = set()  # proxies the caller passed in (not ours)
        self.borrows: list[_Borrow] = []  # borrows held until the task completes
        self.upstream: list[Any] = []  # futures whose results the task reads
        self.abandoned = False  # nobody will read the result: free it on completion
        self.fn: Any = None  # what the task runs (its results say where consumers go)
        self.fed = False  # it reads stored objects (proxies, proxied results of tasks)

    def record_stored(self, key: str) -> None:
        """The submission stored (or an owner moved in) the object under ``key``."""
        self.input_keys.append(key)

    def record_foreign(self, key: str) -> None:
        """The caller passed a proxy of ``key`` it keeps owning."""
        self.foreign_keys.add(key)

    def record_borrow(self, borrow: _Borrow) -> None:
        """A borrow the task holds until it completes."""
        self.borrows.append(borrow)

    def reads_stored(self) -> bool:
        """Whether the task reads stored objects: proxies, or tasks' proxied results
        (``fed``, set as the arguments are prepared)."""
        return bool(self.fed or self.input_keys or self.foreign_keys or self.borrows)

    def record_upstream(self, future: Any) -> None:
        """A future whose result (an owner) must outlive this task, which reads it."""
        self.upstream.append(future)

    def release(self) -> None:
        """The task completed: upstream results and borrows are let go (the winner of
        the completion race calls this, once)."""
        self.upstream = []
        borrows, self.borrows = self.borrows, []
        for borrowed in borrows:
            release_held(borrowed)
