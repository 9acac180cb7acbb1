"""A mypy plugin: attribute access on ``Proxy[T]`` type-checks as on ``T``.

Enable it in the mypy configuration::

    [tool.mypy]
    plugins = ["pxexec.mypy_plugin"]

Without it, any attribute of a proxy is ``Any`` (a proxy forwards them at run time).
With it, ``proxy.attr`` on a ``Proxy[T]``, ``OwnedProxy[T]``, ``RefProxy[T]`` or
``RefMutProxy[T]`` has the type ``T.attr`` has, and an attribute ``T`` lacks is reported
as it would be on ``T``. Members the proxy classes define themselves (``free``,
``__px_factory__`` ...) keep their own types. The plugin never fails mypy: whatever it
cannot work out falls back to the default type.

>>> from pxexec.mypy_plugin import plugin
>>> plugin("1.10").__name__
'ProxyPlugin'
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from mypy.nodes import TypeInfo
from mypy.plugin import AttributeContext, Plugin
from mypy.types import AnyType, Instance, Type, TypeVarType, UnionType, get_proper_type

from mypy.maptype import map_instance_to_supertype  # isort: skip  (after mypy.types: cycle)

__all__ = ["ProxyPlugin", "plugin"]

#: the class whose ``__getattr__`` forwards attributes to the target
PROXY = "pxexec.proxy.Proxy"


def _proxy_base(typ: Type) -> tuple[Instance, TypeInfo] | None:
    proper = get_proper_type(typ)
    if not isinstance(proper, Instance):
        return None
    base = next((b for b in proper.type.mro if b.fullname == PROXY), None)
    return (proper, base) if base is not None else None


#: union member access: which proxy item of the union (per expression) comes next
_union_turns: dict[int, int] = {}


def _accessed_proxy(ctx: AttributeContext) -> tuple[Instance, TypeInfo] | None:
    """The proxy instance type whose attribute is being looked up.

    For a union mypy passes the whole union and looks the attribute up on each item
    in order, so with several proxy items the n-th call is about the n-th of them.
    """
    found = _proxy_base(ctx.type)
    if found is not None:
        return found
    proper = get_proper_type(ctx.type)
    if not isinstance(proper, UnionType):
        return None
    items = [f for f in (_proxy_base(item) for item in proper.items) if f is not None]
    if len(items) <= 1:
        return items[0] if items else None
    turn = _union_turns.get(id(ctx.context), 0)
    _union_turns[id(ctx.context)] = turn + 1
    if len(_union_turns) > 10_000:
        _union_turns.clear()
    return items[turn % len(items)]


def _target_type(ctx: AttributeContext) -> Type | None:
    """``T`` of the proxy type being accessed, or None when it is not known."""
    found = _accessed_proxy(ctx)
    if found is None:
        return None
    proxy_type, base = found
    as_proxy = map_instance_to_supertype(proxy_type, base)
    if len(as_proxy.args) != 1:
        return None
    target = get_proper_type(as_proxy.args[0])
    if isinstance(target, (AnyType, TypeVarType)):
        return None
    return target


def _forward_attribute(name: str, ctx: AttributeContext) -> Type:
    try:
        found = _proxy_base(ctx.type)
        if found is not None and found[0].type.get(name) is not None:
            return ctx.default_attr_type  # defined by the proxy class itself
        target = _target_type(ctx)
        if target is None or ctx.is_lvalue:
            return ctx.default_attr_type
        checker = getattr(ctx.api, "expr_checker", None)
        if checker is None:
            return ctx.default_attr_type
        result: Type = checker.analyze_external_member_access(name, target, ctx.context)
        return result
    except Exception:  # never crash mypy: fall back to what it would have said
        return ctx.default_attr_type


class ProxyPlugin(Plugin):
    """Types attributes reached through ``Proxy.__getattr__`` from the proxy's target.

    >>> from mypy.options import Options
    >>> hook = ProxyPlugin(Options()).get_attribute_hook("pxexec.proxy.Proxy.shape")
    >>> hook is not None, ProxyPlugin(Options()).get_attribute_hook("builtins.int.real")
    (True, None)
    """

    def get_attribute_hook(self, fullname: str) -> Callable[[AttributeContext], Type] | None:
        prefix, _, name = fullname.rpartition(".")
        if prefix == PROXY and name:
            return partial(_forward_attribute, name)
        return None


def plugin(version: str) -> type[Plugin]:
    """The entry point mypy calls with its version.

    >>> plugin("1.8.0") is ProxyPlugin
    True
    """
    return ProxyPlugin
