"""Policies from config values: built-in names with arguments, or "module:attribute"."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pxexec.errors import ConfigError
from pxexec.policies.base import Always, And, Never, Not, Or, Policy, SizeAtLeast, TypeIn, as_policy

__all__ = ["load_policy", "policy", "policy_factory"]

BUILTINS = ("always", "never", "size_at_least", "type_in", "all", "any", "not")


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _import(target: str, where: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise _fail(where, f"{target!r} must look like 'package.module:attribute'.")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise _fail(where, f"cannot import module {module_name!r} ({exc}).") from exc
    except Exception as exc:  # the module itself raised while being imported
        raise _fail(where, f"importing module {module_name!r} raised "
                    f"{type(exc).__name__}: {exc}. Fix that module.") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _fail(where, f"module {module_name!r} has no attribute {attr!r}.") from None
    return obj


def load_policy(spec: Any, *, where: str = "policy") -> Callable[[Any], bool]:
    """Build a should_proxy policy from a config value.

    ``spec`` is a callable (returned as is), a ``"package.module:attribute"`` string, or
    a table whose ``type`` is a built-in (``always``, ``never``, ``size_at_least``
    with ``nbytes``, ``type_in`` with ``types``, ``all``/``any`` with ``policies``,
    ``not`` with ``policy``) or a ``"module:attribute"``: a policy object, or a
    factory called with the table's other keys. ``where`` names the place in the
    config file for error messages.

    >>> policy = load_policy({"type": "any", "policies": [
    ...     {"type": "type_in", "types": ["pandas:DataFrame"]},
    ...     {"type": "size_at_least", "nbytes": 1000}]})
    >>> policy(bytes(2000)), policy(b"x")
    (True, False)
    >>> load_policy({"type": "size_at_least"})
    Traceback (most recent call last):
    ...
    pxexec.errors.ConfigError: policy: policy 'size_at_least' needs the key(s) ['nbytes'].
    """
    if callable(spec) and not isinstance(spec, type):
        return spec  # type: ignore[no-any-return]
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise _fail(where, f"a policy is a table or a 'module:attribute' string, got {spec!r}.")
    options = dict(spec)
    kind = options.pop("type", None)
    if not isinstance(kind, str):
        raise _fail(where, f"needs a 'type': one of {', '.join(BUILTINS)} or 'module:attribute'.")
    if ":" in kind:
        return _user_policy(kind, options, where)
    return _builtin(kind, options, where)


def _builtin(kind: str, options: dict[str, Any], where: str) -> Policy:
    allowed = {
        "always": set(), "never": set(), "size_at_least": {"nbytes"}, "type_in": {"types"},
        "all": {"policies"}, "any": {"policies"}, "not": {"policy"},
    }
    if kind not in allowed:
        raise _fail(where, f"unknown policy type {kind!r}; use one of {', '.join(BUILTINS)} "
                    "or 'package.module:attribute'.")
    extra = set(options) - allowed[kind]
    missing = allowed[kind] - set(options)
    if extra:
        raise _fail(where, f"unknown key(s) {sorted(extra)} for policy {kind!r}; allowed: "
                    f"{sorted(allowed[kind]) or 'none'}.")
    if missing:
        raise _fail(where, f"policy {kind!r} needs the key(s) {sorted(missing)}.")
    if kind == "always":
        return Always()
    if kind == "never":
        return Never()
    if kind == "size_at_least":
        nbytes = options["nbytes"]
        if isinstance(nbytes, str):  # a size with a unit: "10MB", "1MiB"
            from pxexec.units import parse_bytes

            try:
                nbytes = parse_bytes(nbytes)
            except ConfigError as exc:
                raise _fail(f"{where}.nbytes", str(exc)) from None
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise _fail(f"{where}.nbytes", "must be a whole number of bytes >= 0 or a size "
                                           f"such as '10MB', got {nbytes!r}.")
        return SizeAtLeast(nbytes)
    if kind == "type_in":
        types = options["types"]
        if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
            raise _fail(f"{where}.types", "must be a non-empty list of 'module:Name' strings.")
        return TypeIn(*types)
    if kind == "not":
        return Not(as_policy(load_policy(options["policy"], where=f"{where}.policy")))
    items = options["policies"]
    if not isinstance(items, list) or not items:
        raise _fail(f"{where}.policies", "must be a non-empty list of policy tables.")
    parts = [
        as_policy(load_policy(p, where=f"{where}.policies[{i}]")) for i, p in enumerate(items)
    ]
    return And(*parts) if kind == "all" else Or(*parts)


def policy(fn: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """Mark a function ``obj -> bool`` as a policy that config files may name.

    A config's ``type = "module:attribute"`` names only what is checked to be a
    policy (a ``Policy`` object or subclass, or a function marked with ``policy`` or
    ``policy_factory``): naming any callable, such as ``os:system``, would call it on
    every task argument.

    >>> @policy
    ... def long_text(obj):
    ...     return isinstance(obj, str) and len(obj) > 100
    >>> load_policy(long_text)("x" * 200)
    True
    """
    fn.__pxexec_policy__ = "predicate"  # type: ignore[attr-defined]
    return fn


def policy_factory(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a function that returns a policy (called with a config table's other keys).

    >>> from pxexec.policies import SizeAtLeast
    >>> @policy_factory
    ... def at_least(mb=1):
    ...     return SizeAtLeast(mb * 1_000_000)
    >>> at_least(2)
    SizeAtLeast(2000000)
    """
    fn.__pxexec_policy__ = "factory"  # type: ignore[attr-defined]
    return fn


def _user_policy(target: str, options: dict[str, Any], where: str) -> Callable[[Any], bool]:
    obj = _import(target, where)
    mark = getattr(obj, "__pxexec_policy__", None) if callable(obj) else None
    if (isinstance(obj, type) and issubclass(obj, Policy)) or mark == "factory":
        try:
            obj = obj(**options)
        except Exception as exc:
            raise _fail(where, f"calling {target} with {sorted(options)} failed: "
                        f"{type(exc).__name__}: {exc}.") from exc
        if not isinstance(obj, Policy) and getattr(obj, "__pxexec_policy__", None) != "predicate":
            raise _fail(where, f"{target} returned {type(obj).__name__}, not a policy; a "
                        "policy factory must return a pxexec Policy.")
        return obj  # type: ignore[no-any-return]
    if isinstance(obj, Policy) or mark == "predicate":
        if options:
            raise _fail(where, f"{target} is a policy, not a factory: it takes no keys, "
                        f"got {sorted(options)}.")
        return obj  # type: ignore[no-any-return]
    raise _fail(
        where, f"{target} is not a policy ({type(obj).__name__}). A config may name only "
        "a pxexec Policy object or subclass, or a function marked with "
        "@pxexec.policies.policy (obj -> bool) or @pxexec.policies.policy_factory, since "
        "whatever it names is called on task arguments."
    )
