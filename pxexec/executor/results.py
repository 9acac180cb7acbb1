"""Settling a completed task: which stored objects to free, which results to own.

Run by the winner of the future's completion race only (see ``pxexec.executor.future``). The
objects a submission stored are freed, except those the result references (at any
depth, or from inside a stored result): the result's owners keep those alive.
Results this run stored come back as ``OwnedProxy`` objects.
"""

from __future__ import annotations

from typing import Any

from pxexec.executor.ledger import Ledger, proxy_key
from pxexec.proxy import Proxy
from pxexec.store.ownership import OwnedProxy, into_owned, keep_alive, kept_by, live_owner, own_key
from pxexec.store.reachable import keys_of, proxies_in, shallow_map, shallow_proxies
from pxexec.store.store import Store

__all__ = ["free_owners", "settle", "unread"]


def settle(store: Store, ledger: Ledger, result: Any, refs: tuple[str, ...]
           ) -> tuple[Any, list[str]]:
    """The result to hand out (with owners) and the keys to free, for a task that
    succeeded with ``result`` (``refs``: keys referenced from inside stored results).

    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("settle-demo", LocalConnector())
    >>> ledger = Ledger()
    >>> ledger.record_stored(store.put(b"input"))
    >>> made = store.proxy(b"result")                  # what the task stored
    >>> owned, to_free = settle(store, ledger, made, ())
    >>> type(owned).__name__.partition("[")[0], to_free == ledger.input_keys
    ('OwnedProxy', True)
    """
    # Inputs may hide anywhere in the result (a dataclass, a list three levels down,
    # a stored container: its refs): look everywhere then.
    found = proxies_in(result) if ledger.input_keys else shallow_proxies(result)
    returned = keys_of(found, proxy_key) | set(refs)
    foreign = ledger.foreign_keys
    if ledger.abandoned:  # not what another owner here holds (an upstream's)
        mine = {k for k in returned if live_owner(k) is None}
        return result, sorted((mine | set(ledger.input_keys)) - foreign)
    to_free = [k for k in ledger.input_keys if k not in returned]
    if returned - foreign:
        result = shallow_map(result, lambda item: _own(item, foreign))
        _keep_referenced(store, ledger, result, found, returned)
    return result, to_free


def _own(item: Any, foreign: set[str]) -> Any:
    key = proxy_key(item)
    return into_owned(item) if key is not None and key not in foreign else item


def _keep_referenced(store: Store, ledger: Ledger, result: Any, found: list[Proxy[Any]],
                     returned: set[str]) -> None:
    """Keep alive, as long as the result, the objects it references below the top.

    Owners at the top level (or one container below) were made by ``settle``; an
    input found deeper, or referenced from inside a stored result (``returned``
    holds its refs), gets an owner that the proxies holding it, and the result's
    owners, keep alive.
    """
    tops = [p for p in shallow_proxies(result) if isinstance(p, OwnedProxy)]
    top_keys = keys_of(list(tops), proxy_key)
    inputs = set(ledger.input_keys)
    for key in sorted(returned - top_keys - ledger.foreign_keys):
        owner = own_key(store, key) if key in inputs else live_owner(key)
        if owner is None:
            continue
        for proxy in found:
            if proxy_key(proxy) == key and not isinstance(proxy, OwnedProxy):
                keep_alive(proxy, owner)
        for top in tops:
            keep_alive(top, owner)


def free_owners(result: Any) -> list[str]:
    """Free the owners behind ``result`` (and those its proxies keep); return the keys
    of the other store proxies it references (for the caller to evict).

    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("free-owners-demo", LocalConnector())
    >>> owner, other = store.owned_proxy(b"x"), store.proxy(b"y")
    >>> key = owner.__px_factory__.key
    >>> free_owners([owner, other]) == [other.__px_factory__.key], store.exists(key)
    (True, False)
    """
    found = proxies_in(result)
    for item in found:
        for owner in [*kept_by(item), item]:
            if isinstance(owner, OwnedProxy):
                owner.free()
    return sorted(keys_of(found, proxy_key))


def unread(ledger: Ledger, result: Any) -> list[str]:
    """The keys to free for a result nobody will read (an abandoned map's).

    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("unread-demo", LocalConnector())
    >>> kept, mine = store.proxy(1.5), store.proxy(2.5)
    >>> ledger = Ledger()
    >>> ledger.record_foreign(kept.__px_factory__.key)   # the caller's: not freed
    >>> unread(ledger, [kept, mine]) == [mine.__px_factory__.key]
    True
    """
    return [k for k in free_owners(result) if k not in ledger.foreign_keys]
