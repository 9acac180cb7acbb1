"""Hooks Dask loads through entry points (``dask.sizeof``): no import of dask here.

What Dask's ``sizeof`` is for: the bytes a value costs the worker that holds it, to
move it to another worker (``decide_worker``'s and work stealing's transfer cost) and
to keep it (memory management: what spilling it would free). For a proxy both are
its pickled form, the factory (a key and a store config, a few hundred bytes): moving
a proxy moves no data, and spilling it frees nothing of the store. Only a proxy that
has resolved in this process holds its target, and counts it too.
"""

from __future__ import annotations

import pickle
from typing import Any

#: what a proxy whose factory cannot be pickled here is taken to cost
UNPICKLABLE_FACTORY = 1000


def register_sizeof(sizeof: Any) -> None:
    """Teach ``dask.sizeof`` a proxy's size without resolving it."""
    from pxexec.proxy import Proxy

    def _sizeof_proxy(proxy: Proxy[Any]) -> int:
        return proxy_cost(proxy, sizeof)

    sizeof.register(Proxy, _sizeof_proxy)


def proxy_cost(proxy: Any, sizeof: Any) -> int:
    """What holding ``proxy`` costs a Dask worker: its pickled factory, plus its
    target's size once it has resolved in this process."""
    from pxexec.proxy import _UNSET

    try:
        # the factory alone: pickling the proxy would report its key to a borrow collector
        cost = len(pickle.dumps(proxy.__px_factory__, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        cost = UNPICKLABLE_FACTORY
    target = proxy.__px_target__
    if target is not _UNSET:
        cost += int(sizeof(target))
    return cost
