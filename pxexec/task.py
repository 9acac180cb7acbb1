"""What runs on the worker: the user's function wrapped to proxy its result.

``ProxyTask`` is picklable (the function, the store config and the result policy)
and rebuilds the store from its config once per worker process.
"""

from __future__ import annotations

import contextvars
import traceback
from collections.abc import Callable
from typing import Any

from pxexec.errors import PolicyError
from pxexec.proxy import Proxy
from pxexec.store import Store, fingerprint, get_or_create_store

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
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Boxed, (self.value,))

    def __repr__(self) -> str:
        return f"Boxed({self.value!r})"


def unbox(value: Any) -> Any:
    """The value with boxes at the top level and one container level replaced."""
    kind = type(value)
    if kind is Boxed:
        return value.value
    if kind is list or kind is tuple:
        if any(type(v) is Boxed for v in value):
            return kind(v.value if type(v) is Boxed else v for v in value)
    elif kind is dict and any(type(v) is Boxed for v in value.values()):
        return {k: v.value if type(v) is Boxed else v for k, v in value.items()}
    return value


def _add_note(exc: BaseException, note: str) -> None:
    # BaseException.add_note is 3.11+; the attribute pickles with the exception
    notes = list(getattr(exc, "__notes__", []))
    notes.append(note)
    try:
        exc.__notes__ = notes
    except AttributeError:
        pass


def tags_for(policy: Any, obj: Any) -> tuple[str, ...]:
    """The tags a policy attaches to ``obj`` (policies without ``tags_for``: none)."""
    method = getattr(policy, "tags_for", None)
    return tuple(sorted(method(obj))) if callable(method) else ()


def check_policy(policy: Callable[[Any], bool], obj: Any) -> bool:
    """Apply ``policy`` to ``obj``; an error names the policy and the object's type."""
    try:
        return bool(policy(obj))
    except Exception as exc:
        raise PolicyError(
            f"The should_proxy policy {policy!r} raised {type(exc).__name__} ({exc}) for an "
            f"argument of type {type(obj).__module__}.{type(obj).__qualname__}. Fix the "
            "policy or make it return False for such objects."
        ) from exc


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
    ) -> None:
        self.fn = fn
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
        args = tuple(unbox(a) for a in args)
        kwargs = {k: unbox(v) for k, v in kwargs.items()}
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
            if token is not None:
                _CURRENT.reset(token)
        if self.policy is not None:
            result = self.proxy_result(result)
        return Boxed(result) if self.box_result else result

    def proxy_result(self, result: Any) -> Any:
        kind = type(result)
        if isinstance(result, Proxy):
            return result
        if self.containers and (kind is list or kind is tuple):
            return kind(self.proxy_result_item(r) for r in result)
        if self.containers and kind is dict:
            return {k: self.proxy_result_item(v) for k, v in result.items()}
        return self.proxy_result_item(result)

    def proxy_result_item(self, obj: Any) -> Any:
        assert self.policy is not None and self.store_config is not None
        if isinstance(obj, Proxy) or not check_policy(self.policy, obj):
            return obj
        store = get_or_create_store(self.store_config, self.store_fp)
        return store.proxy(obj, tags=tags_for(self.policy, obj))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_task, (self.fn, self.store_config, self.policy, self.containers,
                                self.box_result, self.store_fp, self.note_traceback))

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
) -> ProxyTask:
    return ProxyTask(
        fn, None, policy, containers=containers, box_result=box_result,
        store_config=store_config, store_fp=store_fp, note_traceback=note_traceback,
    )
