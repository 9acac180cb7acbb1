"""The drop-in Dask ``Client``: a ``distributed.Client`` that passes large data by proxy.

``Client(..., ps_store=store, ps_threshold=nbytes)`` is a ``distributed.Client`` whose
``submit`` and ``map`` pass arguments and results of at least ``ps_threshold`` bytes
by proxy, keeping Dask's semantics (``pure``, ``key``, futures as arguments,
``gather``, ``as_completed``).

It submits through the same machinery as StoreExecutor: ``pxexec.executor.arguments``
prepares the arguments into a ``pxexec.executor.ledger.Ledger`` (the policy decides, stored
inputs have their leases held while the task is queued or runs, owners are moved
in, borrows held); what is Dask's own is the key (``pure``/``key``) and the end of
a task: its worker evicts the inputs the result does not reference and reports
what the client owns from then on (``pxexec.engines.dask_results.run_owned``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from pxexec.errors import MissingDependencyError
from pxexec.executor.ledger import Ledger
from pxexec.executor.worker import ProxyTask
from pxexec.policies.apply import DEFAULT_THRESHOLD, default_policy
from pxexec.store.leases import forget as forget_leases
from pxexec.store.ownership import live_owner, own_key
from pxexec.store.store import Store

try:
    import distributed
    from dask.base import tokenize
    from dask.utils import funcname

    from pxexec.engines.dask import _RESERVED
    from pxexec.engines.dask_results import (
        as_key,
        install_result_cleanup,
        record_created,
        run_owned,
    )
    from pxexec.executor.arguments import Arguments
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependencyError("distributed", "dask", "The Dask drop-in Client") from exc

__all__ = ["Client"]


def _is_dask_future(value: Any) -> bool:
    return isinstance(value, distributed.Future)


class Client(distributed.Client):  # type: ignore[misc]
    """A ``distributed.Client`` that passes large arguments and results by proxy.

    ``ps_store`` is the pxexec Store to use; ``ps_threshold`` the size in bytes from
    which an argument or result is proxied (default 1 MB). Without ``ps_store``
    it behaves exactly like ``distributed.Client``. Stored arguments are evicted
    when the future that used them completes; results come back as proxies. As with
    StoreExecutor, an ``OwnedProxy`` argument is moved into the task and a borrow is
    held until the task ends.

    >>> from pxexec import Store
    >>> from pxexec.connectors import connector_from_url
    >>> store = Store("dask-client-demo", connector_from_url("shm", namespace="dask-demo"))
    >>> client = Client(processes=False, n_workers=1, dashboard_address=None,
    ...                 ps_store=store, ps_threshold=1_000)
    >>> future = client.submit(len, bytes(10_000))           # the bytes go by proxy
    >>> future.result()
    10000
    >>> client.close()
    """

    def __init__(
        self, *args: Any, ps_store: Store | None = None,
        ps_threshold: int | str = DEFAULT_THRESHOLD, **kwargs: Any,
    ) -> None:
        self._ps_store = ps_store
        self._ps_policy = default_policy(ps_threshold)
        self._ps_arguments = (
            None if ps_store is None else
            Arguments(ps_store, self._ps_policy, is_future=_is_dask_future,
                      native_futures=True)
        )
        self._ps_tasks: dict[Any, ProxyTask] = {}
        # Dask key -> the owners of what its task stored (results, inputs it returned):
        # held while Dask holds the key; proxies of them in this process keep them too.
        self._ps_results: dict[Any, list[Any]] = {}
        self._ps_topic = f"pxexec-results-{uuid.uuid4().hex}"
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        if ps_store is not None and not self.asynchronous:
            self.subscribe_topic(self._ps_topic, self._ps_on_results)
            install_result_cleanup(self)

    def _ps_task(self, func: Callable[..., Any]) -> ProxyTask:
        task = self._ps_tasks.get(func)
        if task is None:
            task = ProxyTask(func, self._ps_store, self._ps_policy, on_created=record_created)
            self._ps_tasks[func] = task
        return task

    def _ps_on_results(self, event: Any) -> None:
        """A task reported what it stored (before its completion reaches us)."""
        store = self._ps_store
        assert store is not None
        msg = event[1]
        key = as_key(msg["key"])
        owners = [own_key(store, k) for k in msg.get("own", ())]
        owners += [o for o in map(live_owner, msg.get("refs", ())) if o is not None]
        if key in self.futures:
            self._ps_results.setdefault(key, []).extend(owners)
        # else: the key was released (cancelled) meanwhile: the owners go now

    def _release_key(self, key: Any) -> None:
        super()._release_key(key)
        owners = self._ps_results.pop(key, None)  # freed unless referenced elsewhere
        del owners

    def close(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().close(*args, **kwargs)
        finally:
            self._ps_results.clear()

    def _ps_settle_when_done(self, future: Any, ledger: Ledger) -> None:
        """When the task ends: borrows end; on error or cancel its inputs are evicted
        here (the worker freed nothing); on success the worker evicted those the
        result does not reference, and this process stops holding their leases."""
        store = self._ps_store
        assert store is not None
        if not (ledger.input_keys or ledger.borrows):
            return

        def done(fut: Any) -> None:
            keys = ledger.input_keys
            ledger.release()
            if fut.status != "finished":  # error or cancelled: the task freed nothing
                store.evict_or_defer(keys)  # (which ends their leases)
            else:  # inputs the result references are held by their new owners
                forget_leases(store, [k for k in keys if live_owner(k) is None])

        future.add_done_callback(done)

    def submit(self, func: Callable[..., Any], *args: Any, key: Any = None,
               pure: bool | None = None, **kwargs: Any) -> Any:
        arguments = self._ps_arguments
        if arguments is None or not callable(func):
            return super().submit(func, *args, key=key, pure=pure, **kwargs)
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in _RESERVED}
        if key is None:
            # The same call with the same inputs gets the same key, as in Dask.
            if pure is None or pure:
                key = f"{funcname(func)}-{tokenize(func, kwargs, *args)}"
            else:
                key = f"{funcname(func)}-{uuid.uuid4().hex}"
        if key in self.futures:  # already submitted: the same future, nothing stored
            return distributed.Future(key, self)
        ledger = Ledger()
        try:
            new_args, new_kwargs = arguments.all(args, kwargs, ledger)
            future = super().submit(
                run_owned, self._ps_task(func), new_args, new_kwargs,
                tuple(ledger.input_keys), self._ps_topic, key=key, pure=False, **options,
            )
        except BaseException:
            ledger.release()
            arguments.store.evict_or_defer(ledger.input_keys)
            raise
        self._ps_settle_when_done(future, ledger)
        return future

    def map(self, func: Callable[..., Any], *iterables: Iterable[Any], key: Any = None,
            pure: bool = True, **kwargs: Any) -> Any:
        if self._ps_store is None or not callable(func):
            return super().map(func, *iterables, key=key, pure=pure, **kwargs)  # type: ignore[arg-type]
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in _RESERVED or k == "batch_size"}
        calls = list(zip(*iterables))
        if isinstance(key, (list, tuple)):
            keys = list(key)
        else:
            prefix = key if isinstance(key, str) else funcname(func)
            keys = [
                f"{prefix}-{tokenize(func, kwargs, *call)}" if pure
                else f"{prefix}-{uuid.uuid4().hex}"
                for call in calls
            ]
        return [
            self.submit(func, *call, key=k, **options, **kwargs) for k, call in zip(keys, calls)
        ]
