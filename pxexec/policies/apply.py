"""Applying a should_proxy policy: what goes by proxy, and with which routing tags.

StoreExecutor (arguments on the client), the worker side (results) and the drop-in
Dask ``Client`` all decide through ``check_policy``; ``DEFAULT_THRESHOLD`` is the one
default size.
"""

from __future__ import annotations

import enum
import logging
import sys
from collections.abc import Callable
from typing import Any

from pxexec.errors import PolicyError
from pxexec.policies.base import DEFAULT_THRESHOLD, SizeAtLeast

__all__ = ["DEFAULT_THRESHOLD", "SMALL_NUMBER", "check_policy", "default_policy",
           "never_proxied", "tags_for"]

log = logging.getLogger("pxexec")

#: numbers up to this size (``sys.getsizeof``) are never proxied
SMALL_NUMBER = 1024

_SINGLETONS = (type(None), bool, type(Ellipsis), type(NotImplemented))


def default_policy(threshold: int | str = DEFAULT_THRESHOLD) -> SizeAtLeast:
    """The default should_proxy: objects of at least ``threshold`` bytes.

    >>> default_policy().nbytes
    1000000
    """
    return SizeAtLeast(threshold)


def tags_for(policy: Any, obj: Any) -> tuple[str, ...]:
    """The tags a policy attaches to ``obj`` (policies without ``tags_for``: none).

    >>> from pxexec.policies import Tagged
    >>> tags_for(Tagged(default_policy(10), "big"), bytes(20)), tags_for(len, b"")
    (('big',), ())
    """
    method = getattr(policy, "tags_for", None)
    return tuple(sorted(method(obj))) if callable(method) else ()


def never_proxied(obj: Any) -> bool:
    """Objects that stay themselves whatever the policy says.

    Singletons and small immutable values (None, bools, small numbers, empty
    str/bytes/tuple, enum members, classes): a proxy would break ``result is None``
    and identity checks while saving nothing.

    >>> never_proxied(None), never_proxied(True), never_proxied(3), never_proxied([1])
    (True, True, True, False)
    """
    kind = type(obj)
    if kind in _SINGLETONS or isinstance(obj, (type, enum.Enum)):
        return True
    if kind is int or kind is float or kind is complex:
        return sys.getsizeof(obj) <= SMALL_NUMBER
    return (kind is str or kind is bytes or kind is tuple) and not obj


def check_policy(policy: Callable[[Any], bool], obj: Any) -> bool:
    """Apply ``policy`` to ``obj``; an error names the policy and the object's type.

    Objects ``never_proxied`` are never proxied, whatever the policy says.

    >>> check_policy(lambda obj: True, None), check_policy(lambda obj: True, [1])
    (False, True)
    """
    if never_proxied(obj):
        return False
    try:
        decision = bool(policy(obj))
    except Exception as exc:
        raise PolicyError(
            f"The should_proxy policy {policy!r} raised {type(exc).__name__} ({exc}) for an "
            f"argument of type {type(obj).__module__}.{type(obj).__qualname__}. Fix the "
            "policy or make it return False for such objects."
        ) from exc
    if log.isEnabledFor(logging.DEBUG):
        from pxexec.sizing import estimate_nbytes

        log.debug("pxexec: %s a %s of about %d bytes (policy %r)",
                  "proxying" if decision else "not proxying", type(obj).__qualname__,
                  estimate_nbytes(obj), policy)
    return decision
