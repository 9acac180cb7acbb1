"""Classes named as ``"module:QualName"`` strings, so a config need not import them.

A name matches a class in an object's hierarchy with that qualified name, defined in
that module or one of its submodules (``"pandas:DataFrame"`` matches
``pandas.core.frame.DataFrame``). Policies (``TypeIn``) and routes (``Route.types``)
both use these rules.

>>> type_name(dict, "types"), type_name("numpy:ndarray", "types")
('builtins:dict', 'numpy:ndarray')
>>> import collections
>>> type_matches(collections.OrderedDict, ("builtins:dict",))
True
"""

from __future__ import annotations

import functools
from typing import Any

from pxexec.errors import ConfigError

__all__ = ["type_matches", "type_name"]


def type_name(value: Any, what: str) -> str:
    """``value`` (a class or a ``"module:Name"`` string) as a ``"module:Name"`` string;
    a ConfigError naming ``what`` for anything else."""
    if isinstance(value, type):
        return f"{value.__module__}:{value.__qualname__}"
    if isinstance(value, str) and value.count(":") == 1 and all(value.split(":")):
        return value
    raise ConfigError(f"{what} takes classes or 'module:Name' strings, got {value!r}.")


def type_matches(obj_type: type[Any], names: tuple[str, ...]) -> bool:
    """Whether a class in ``obj_type``'s hierarchy is one of ``names``."""
    wanted = _parsed(names)
    for cls in obj_type.__mro__:
        module = cls.__module__
        for want_module, want_name in wanted:
            if cls.__qualname__ == want_name and (
                module == want_module or module.startswith(want_module + ".")
            ):
                return True
    return False


@functools.lru_cache(maxsize=256)
def _parsed(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((module, name) for module, _, name in (n.partition(":") for n in names))
