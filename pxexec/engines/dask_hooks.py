"""Hooks Dask loads through entry points (``dask.sizeof``): no import of dask here."""

from __future__ import annotations

from typing import Any


def register_sizeof(sizeof: Any) -> None:
    """Teach ``dask.sizeof`` a proxy's size without resolving it."""
    from pxexec.proxy import Proxy

    def _sizeof_proxy(proxy: Proxy[Any]) -> int:
        return int(proxy.__sizeof__())

    sizeof.register(Proxy, _sizeof_proxy)
