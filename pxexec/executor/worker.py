"""What runs on the worker: the user's function wrapped to proxy its result.

``ProxyTask`` is picklable (the function, the store config and the result policy)
and rebuilds the store from its config once per worker process.
"""

from __future__ import annotations

import contextvars
import logging
import pickle
import traceback
from collections.abc import Callable
from typing import Any

from pxexec.policies.apply import check_policy, tags_for
from pxexec.proxy import Proxy, forget_target, is_resolved
from pxexec.store.reachable import collect_pickled_keys, shallow_items, shallow_map, shallow_proxies
from pxexec.store.registry import fingerprint, get_or_create_store
from pxexec.store.store import Store

log = logging.getLogger("pxexec")
_CURRENT: contextvars.ContextVar[Store | None] = contextvars.ContextVar("pxexec_store",
                                                                       default=None)


def current_store() -> Store | None:
    """The store of the pxexec task running in this thread (None outside one).

    A task can build a large result in place with it: ``out = current_store().empty(
    shape, dtype)``, fill ``out``, return it; the result then goes into the store
    without a copy.

    >>> current_store() is None
    True
    """
    return _CURRENT.get()


class Boxed:
    """A proxy argument, or a task result, in transit.

    Engines look inside what they move: Dask recurses into anything that passes
    ``isinstance(x, (dict, list, tuple, set))`` (a proxy of a dict does), Parsl
    hashes callables (a proxy is callable), TaskVine compares results with ``==``.
    A box is opaque to all of them; the task unboxes its arguments on the worker
    and StoreExecutor unboxes results on the client.

    ``sealed=True`` (a proxy whose owner may live in this process): the box pickles
    as the proxy's pickled bytes, unpickled only where ``value`` is read. A process
    that merely passes it on (Dask's scheduler, which runs in the client's process
    with a LocalCluster and keeps recent messages) then builds no proxy, and so keeps
    no owner alive (a store proxy unpickled beside its owner keeps it).

    >>> import pickle
    >>> box = pickle.loads(pickle.dumps(Boxed([1, 2], sealed=True)))
    >>> box._pickled is not None, box.value, box._pickled is None
    (True, [1, 2], True)
    """

    __slots__ = ("_pickled", "_value", "refs", "sealed")

    def __init__(self, value: Any, refs: tuple[str, ...] = (), *, sealed: bool = False) -> None:
        self._value = value
        self._pickled: bytes | None = None
        self.refs = refs  # keys a stored result references (proxies pickled inside it)
        self.sealed = sealed

    @property
    def value(self) -> Any:
        pickled = self._pickled
        if pickled is not None:  # unpickled here, on first use
            self._value = pickle.loads(pickled)
            self._pickled = None
        return self._value

    def __reduce__(self) -> tuple[Any, ...]:
        if self.sealed:
            pickled = self._pickled
            return (_sealed_box, (pickled if pickled is not None else _dumps(self._value),
                                  self.refs))
        return (Boxed, (self.value, self.refs) if self.refs else (self.value,))

    def __repr__(self) -> str:
        if self._pickled is not None:
            return f"Boxed(<{len(self._pickled)} pickled bytes>)"
        return f"Boxed({self._value!r})"


def _dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        import cloudpickle  # a proxy with a hand-made factory (a lambda, say)

        pickled: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return pickled


def _sealed_box(pickled: bytes, refs: tuple[str, ...]) -> Boxed:
    box = Boxed(None, refs, sealed=True)
    box._pickled = pickled
    return box


def _open(value: Any) -> Any:
    return value.value if type(value) is Boxed else value


def unbox(value: Any) -> Any:
    """The value with boxes at the top level and one container level replaced.

    >>> unbox(Boxed(1)), unbox([Boxed(2), 3]), unbox({"a": Boxed(4)})
    (1, [2, 3], {'a': 4})
    """
    if type(value) is Boxed:
        return value.value
    if any(type(v) is Boxed for v in shallow_items(value)):
        return shallow_map(value, _open)
    return value


def _unresolved_proxies(values: tuple[Any, ...]) -> list[Proxy[Any]]:
    """Proxies among ``values`` (and one container level below) not resolved yet."""
    return [p for value in values for p in shallow_proxies(value) if not is_resolved(p)]


def _add_note(exc: BaseException, note: str) -> None:
    # BaseException.add_note is 3.11+; the attribute pickles with the exception
    notes = list(getattr(exc, "__notes__", []))
    notes.append(note)
    try:
        exc.__notes__ = notes
    except AttributeError:
        pass


class ProxyTask:
    """Calls ``fn`` with unboxed arguments and proxies its result by the policy."""

    __slots__ = (
        "__name__",
        "__qualname__",
        "__wrapped__",
        "box_result",
        "containers",
        "fn",
        "note_traceback",
        "on_created",
        "policy",
        "store_config",
        "store_fp",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        store: Store | None,
        policy: Callable[[Any], bool] | None,
        *,
        containers: bool = False,
        box_result: bool = False,
        store_config: dict[str, Any] | None = None,
        store_fp: str | None = None,
        note_traceback: bool = False,
        on_created: Callable[[Store, list[str]], None] | None = None,
    ) -> None:
        self.fn = fn
        self.on_created = on_created  # told the keys of results stored (Dask's cleanup)
        if store is not None:
            store_config, store_fp = store.config(), store.fingerprint
        elif store_config is not None and store_fp is None:
            store_fp = fingerprint(store_config)
        self.store_config = store_config
        self.store_fp = store_fp
        self.policy = policy
        self.containers = containers
        self.box_result = box_result
        self.note_traceback = note_traceback
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result, refs, _ = self.run(args, kwargs)
        return Boxed(result, tuple(refs)) if self.box_result else result

    def run(self, args: tuple[Any, ...], kwargs: dict[str, Any]
            ) -> tuple[Any, list[str], list[str]]:
        """Call ``fn``; return the (proxied) result, the keys it references from inside
        stored objects, and the keys of the results this call stored."""
        args = tuple(unbox(a) for a in args)
        kwargs = {k: unbox(v) for k, v in kwargs.items()}
        fresh = _unresolved_proxies((*args, *kwargs.values()))
        token = None
        if self.policy is not None and self.store_config is not None:
            token = _CURRENT.set(get_or_create_store(self.store_config, self.store_fp))
        try:
            result = self.fn(*args, **kwargs)
        except Exception as exc:
            if self.note_traceback:  # for engines that send exceptions without it
                _add_note(exc, "Worker traceback:\n" + traceback.format_exc())
            raise
        finally:
            # Engines keep a task's arguments while its result is held (Dask keeps the
            # run spec): the proxies must not keep their (possibly freed) objects
            # mapped meanwhile. What the result still uses stays alive by reference.
            for proxy in fresh:
                forget_target(proxy)
            if token is not None:
                _CURRENT.reset(token)
        refs: list[str] = []
        created: list[str] = []
        if self.policy is not None:
            result = self.proxy_result(result, refs, created)
            if created and self.on_created is not None:
                self.on_created(get_or_create_store(self.store_config or {}, self.store_fp),
                                created)
        return result, refs, created

    def proxy_result(self, result: Any, refs: list[str] | None = None,
                     created: list[str] | None = None) -> Any:
        """The result with what the policy selects stored and proxied.

        The keys of proxies stored inside a proxied result (a task returning its input
        in a container that is then stored) are added to ``refs``: the client keeps
        them alive as long as the result.
        """
        kind = type(result)
        if isinstance(result, Proxy):
            return result
        if self.containers and (kind is list or kind is tuple):
            return kind(self.proxy_result_item(r, refs, created) for r in result)
        if self.containers and kind is dict:
            return {k: self.proxy_result_item(v, refs, created) for k, v in result.items()}
        return self.proxy_result_item(result, refs, created)

    def proxy_result_item(self, obj: Any, refs: list[str] | None = None,
                          created: list[str] | None = None) -> Any:
        assert self.policy is not None and self.store_config is not None
        if isinstance(obj, Proxy) or not check_policy(self.policy, obj):
            return obj
        store = get_or_create_store(self.store_config, self.store_fp)
        with collect_pickled_keys() as keys:
            proxy = store.proxy(obj, tags=tags_for(self.policy, obj))
        if refs is not None:
            refs.extend(keys)
        if created is not None:
            created.append(proxy.__px_factory__.key)
        return proxy

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_task, (self.fn, self.store_config, self.policy, self.containers,
                                self.box_result, self.store_fp, self.note_traceback,
                                self.on_created))

    def __repr__(self) -> str:
        return f"ProxyTask({self.fn!r})"


def _rebuild_task(
    fn: Callable[..., Any],
    store_config: dict[str, Any] | None,
    policy: Callable[[Any], bool] | None,
    containers: bool,
    box_result: bool,
    store_fp: str | None = None,
    note_traceback: bool = False,
    on_created: Callable[[Store, list[str]], None] | None = None,
) -> ProxyTask:
    return ProxyTask(
        fn, None, policy, containers=containers, box_result=box_result,
        store_config=store_config, store_fp=store_fp, note_traceback=note_traceback,
        on_created=on_created,
    )
