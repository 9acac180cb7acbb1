"""The special methods a proxy forwards, chosen per target class.

Python and C libraries look special methods up on the *type*: ``callable(p)`` is
true if ``type(p)`` has ``__call__``, numpy dispatches to ``type(p).__array_ufunc__``,
pyarrow and polars look for ``__arrow_c_stream__``, pandas calls anything callable.
So a proxy whose target class is known is an instance of a subclass of its kind
(``Proxy``, ``OwnedProxy``, ...) made once per (kind, target class) that defines
exactly the special methods the target's class defines, each forwarding to the
target. A proxy whose target class is unknown (``Proxy(factory)`` by hand,
``Store.proxy_from_key``) gets every forwarding method.

Two array protocols are never forwarded: numpy reads ``__array_struct__`` without
the dtype's unit, string length or fields (``<M8[ns]`` comes back ``<M8``, ``U5``
as ``U20``), so a proxy answers ``__array__`` with exactly ``np.asarray(target)``.
"""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Callable
from typing import Any

from pxexec.proxy import Proxy, _target

__all__ = ["HIDDEN", "specialize"]

#: attributes a proxy never forwards (see the module docstring)
HIDDEN = frozenset({"__array_struct__", "__array_interface__"})

Method = Callable[..., Any]


def _unary(op: Callable[[Any], Any]) -> Method:
    def method(self: Proxy[Any]) -> Any:
        return op(_target(self))

    return method


def _binary(op: Callable[[Any, Any], Any]) -> Method:
    def method(self: Proxy[Any], other: Any) -> Any:
        return op(_target(self), other)

    return method


def _reflected(op: Callable[[Any, Any], Any]) -> Method:
    def method(self: Proxy[Any], other: Any) -> Any:
        return op(other, _target(self))

    return method


def _inplace(op: Callable[[Any, Any], Any]) -> Method:
    # A mutable target changes in place and the name keeps the proxy; an immutable
    # one gives a new plain object, as with the target itself.
    def method(self: Proxy[Any], other: Any) -> Any:
        target = _target(self)
        result = op(target, other)
        return self if result is target else result

    return method


def _named(name: str) -> Method:
    """Forward ``name`` as a method call with whatever arguments it gets."""

    def method(self: Proxy[Any], *args: Any, **kwargs: Any) -> Any:
        return getattr(_target(self), name)(*args, **kwargs)

    method.__name__ = name
    return method


def _unwrap(value: Any) -> Any:
    """Proxies in ``value`` (top level, or items of a list/tuple/dict) as their targets."""
    if isinstance(value, Proxy):
        return _target(value)
    kind = type(value)
    if kind is tuple or kind is list:
        return kind(_unwrap(v) for v in value)
    if kind is dict:
        return {k: _unwrap(v) for k, v in value.items()}
    return value


def _array_ufunc(self: Proxy[Any], ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
    # numpy calls this because the target's class overrides ufuncs (pandas, xarray,
    # ndarray subclasses): run the ufunc on the targets, so the target's override
    # (keeping index and name) decides the result, exactly as without a proxy.
    return getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))


def _array_function(self: Proxy[Any], func: Any, types: Any, args: Any, kwargs: Any) -> Any:
    return func(*_unwrap(tuple(args)), **_unwrap(dict(kwargs)))


def _fspath(self: Proxy[Any]) -> Any:
    target = _target(self)
    return target if isinstance(target, (str, bytes)) else target.__fspath__()


def _pow(self: Proxy[Any], other: Any, modulo: Any = None) -> Any:
    target = _target(self)
    return pow(target, other) if modulo is None else pow(target, other, modulo)


def _round(self: Proxy[Any], ndigits: Any = None) -> Any:
    return round(_target(self)) if ndigits is None else round(_target(self), ndigits)


def _setitem(self: Proxy[Any], key: Any, value: Any) -> None:
    _target(self)[key] = value


async def _aenter(self: Proxy[Any]) -> Any:
    return await _target(self).__aenter__()


async def _aexit(self: Proxy[Any], *exc: Any) -> Any:
    return await _target(self).__aexit__(*exc)


_BINARY = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "matmul": operator.matmul,
    "truediv": operator.truediv, "floordiv": operator.floordiv, "mod": operator.mod,
    "divmod": divmod, "lshift": operator.lshift, "rshift": operator.rshift,
    "and": operator.and_, "xor": operator.xor, "or": operator.or_,
}
_INPLACE = {
    "add": operator.iadd, "sub": operator.isub, "mul": operator.imul,
    "matmul": operator.imatmul, "truediv": operator.itruediv,
    "floordiv": operator.ifloordiv, "mod": operator.imod, "pow": operator.ipow,
    "lshift": operator.ilshift, "rshift": operator.irshift, "and": operator.iand,
    "xor": operator.ixor, "or": operator.ior,
}

#: name -> forwarding method, for the special methods a target class may define
OPTIONAL: dict[str, Method] = {
    "__bytes__": _unary(bytes),
    "__int__": _unary(int),
    "__float__": _unary(float),
    "__complex__": _unary(complex),
    "__index__": _unary(operator.index),
    "__len__": _unary(len),
    "__iter__": _unary(iter),
    "__reversed__": _unary(reversed),
    "__neg__": _unary(operator.neg),
    "__pos__": _unary(operator.pos),
    "__abs__": _unary(operator.abs),
    "__invert__": _unary(operator.invert),
    "__trunc__": _unary(math.trunc),
    "__floor__": _unary(math.floor),
    "__ceil__": _unary(math.ceil),
    "__length_hint__": _unary(operator.length_hint),
    "__next__": _unary(next),
    "__round__": _round,
    "__fspath__": _fspath,
    "__buffer__": _unary(memoryview),  # Python 3.12+ buffer protocol
    "__contains__": _binary(operator.contains),
    "__getitem__": _binary(operator.getitem),
    "__delitem__": _binary(operator.delitem),
    "__setitem__": _setitem,
    "__call__": _named("__call__"),
    "__enter__": _named("__enter__"),
    "__exit__": _named("__exit__"),
    "__aenter__": _aenter,
    "__aexit__": _aexit,
    "__await__": _named("__await__"),
    "__aiter__": _named("__aiter__"),
    "__anext__": _named("__anext__"),
    "__pow__": _pow,
    "__rpow__": _reflected(pow),
    "__array_ufunc__": _array_ufunc,
    "__array_function__": _array_function,
    "__array_namespace__": _named("__array_namespace__"),
    "__arrow_c_stream__": _named("__arrow_c_stream__"),
    "__arrow_c_array__": _named("__arrow_c_array__"),
    "__arrow_c_schema__": _named("__arrow_c_schema__"),
    "__arrow_c_device_array__": _named("__arrow_c_device_array__"),
    "__arrow_c_device_stream__": _named("__arrow_c_device_stream__"),
    "__arrow_array__": _named("__arrow_array__"),
    "__dataframe__": _named("__dataframe__"),
    "__dlpack__": _named("__dlpack__"),
    "__dlpack_device__": _named("__dlpack_device__"),
    "__cuda_array_interface__": _named("__cuda_array_interface__"),
}
for _op, _fn in _BINARY.items():
    OPTIONAL[f"__{_op}__"] = _binary(_fn)
    OPTIONAL[f"__r{_op}__"] = _reflected(_fn)
for _op, _fn in _INPLACE.items():
    OPTIONAL[f"__i{_op}__"] = _inplace(_fn)
OPTIONAL.pop("__cuda_array_interface__")  # an attribute, not a method: forwarded by getattr

# A reflected operator is offered when the target has it or its forward form: ``[1] +
# list_proxy`` fails in list.__add__ (it needs a real list) and then works here.
_REFLECTED_FROM = {f"__r{op}__": f"__{op}__" for op in (*_BINARY, "pow")}


def _defines(cls: type[Any], name: str) -> bool:
    """Whether instances of ``cls`` have the special method ``name`` (not its metaclass)."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name] is not None  # ``__iter__ = None`` opts out
    return False


def _wanted(name: str, target_cls: type[Any] | None) -> bool:
    if target_cls is None:
        return True
    if _defines(target_cls, name):
        return True
    if name == "__fspath__":  # os.fspath/open take a str or bytes proxy as a path
        return issubclass(target_cls, (str, bytes))
    forward = _REFLECTED_FROM.get(name)
    return forward is not None and _defines(target_cls, forward)


#: (kind or specialized class, target class) -> specialized class: the fast path
SPECIALIZED: dict[tuple[type[Any], type[Any] | None], type[Any]] = {}
_LOCK = threading.Lock()


def kind_of(cls: type[Any]) -> type[Any]:
    """The kind (Proxy, OwnedProxy, ...) a specialized proxy class was made from."""
    kind: type[Any] = cls.__dict__.get("__px_kind__", cls)
    return kind


def specialize(kind: type[Any], target_cls: type[Any] | None) -> type[Any]:
    """The subclass of ``kind`` with the special methods of ``target_cls`` (cached).

    >>> from pxexec.proxy import Proxy, ProxyInfo
    >>> cls = specialize(Proxy, int)
    >>> cls is specialize(Proxy, int), "__add__" in vars(cls), "__call__" in vars(cls)
    (True, True, False)
    >>> callable(Proxy(lambda: 1, info=ProxyInfo(cls=int)))
    False
    """
    asked = kind
    kind = kind_of(kind)
    made = SPECIALIZED.get((kind, target_cls))
    if made is not None:
        SPECIALIZED[(asked, target_cls)] = made
        return made
    own = {n for k in kind.__mro__ if k is not Proxy and issubclass(k, Proxy) for n in k.__dict__}
    methods = {n: m for n, m in OPTIONAL.items() if n not in own and _wanted(n, target_cls)}
    # The qualified name carries the target's: libraries that sniff a type's module
    # (polars looks for "pyarrow." in str(type(obj).mro())) then treat it as the target.
    qualname = kind.__qualname__
    if target_cls is not None:
        qualname += f"[{target_cls.__module__}.{target_cls.__qualname__}]"
    namespace: dict[str, Any] = {
        "__slots__": (), "__px_kind__": kind, "__qualname__": qualname,
        "__module__": kind.__dict__["__module__"], **methods,
    }
    metaclass: Any = type(kind)
    # C functions that need the exact object name its type in their TypeError
    # ("expected string or bytes-like object, got '...'"): the name says what to do.
    target_name = target_cls.__qualname__ if target_cls is not None else "?"
    name = f"{kind.__name__}[{target_name}] (pass pxexec.extract(proxy) where the exact " \
        "object is needed)"
    made = metaclass(name, (kind,), namespace)
    with _LOCK:  # one class per pair, even when threads race to make it
        made = SPECIALIZED.setdefault((kind, target_cls), made)
        SPECIALIZED[(asked, target_cls)] = made
    return made
