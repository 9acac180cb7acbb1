"""Built-in policies and their combinators."""

from __future__ import annotations

from typing import Any

from pxexec.errors import ConfigError
from pxexec.sizing import estimate_nbytes
from pxexec.type_names import type_matches, type_name

__all__ = ["DEFAULT_THRESHOLD", "Always", "And", "Never", "Not", "Or", "Policy", "SizeAtLeast",
           "Tagged", "TypeIn", "as_policy"]

#: the size (bytes) from which an object goes by proxy when no policy is given
DEFAULT_THRESHOLD = 1_000_000


class Policy:
    """Base of the built-in policies: callable, picklable, combinable.

    A subclass implements ``__call__(obj) -> bool`` (and may give ``tags_for``).

    >>> class LongText(Policy):
    ...     def __call__(self, obj):
    ...         return isinstance(obj, str) and len(obj) > 5
    >>> policy = LongText() | SizeAtLeast(1_000_000)
    >>> policy("a longer text"), policy("short")
    (True, False)
    """

    def __call__(self, obj: Any) -> bool:
        raise NotImplementedError

    def __and__(self, other: Any) -> Policy:
        return And(self, as_policy(other))

    def __or__(self, other: Any) -> Policy:
        return Or(self, as_policy(other))

    def __invert__(self) -> Policy:
        return Not(self)

    def tags_for(self, obj: Any) -> frozenset[str]:
        """Tags to store ``obj`` with (routing hints for a MultiConnector)."""
        return frozenset()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self)))


class _Wrapped(Policy):
    """A plain callable adapted to the combinators."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, obj: Any) -> bool:
        return bool(self.fn(obj))

    def __repr__(self) -> str:
        return repr(self.fn)


def as_policy(value: Any) -> Policy:
    """``value`` as a Policy: a Policy as it is, any other callable ``obj -> bool`` wrapped.

    >>> size = SizeAtLeast(10)
    >>> as_policy(size) is size, as_policy(len)(b"x")
    (True, True)
    """
    if isinstance(value, Policy):
        return value
    if callable(value):
        return _Wrapped(value)
    raise TypeError(f"Cannot combine a policy with {type(value).__name__}: not callable.")


class Always(Policy):
    """Proxy everything.

    >>> Always()(1), Always()(b"")
    (True, True)
    """

    def __call__(self, obj: Any) -> bool:
        return True

    def __repr__(self) -> str:
        return "Always()"


class Never(Policy):
    """Proxy nothing.

    >>> Never()(bytes(10**8))
    False
    """

    def __call__(self, obj: Any) -> bool:
        return False

    def __repr__(self) -> str:
        return "Never()"


class SizeAtLeast(Policy):
    """Proxy objects whose estimated data size is at least ``nbytes``.

    The size is estimated per type (buffer ``nbytes``, numpy/pandas/polars/pyarrow
    native sizes, str/bytes length, a bounded walk of containers), never by
    serializing the object.

    ``nbytes`` is a number of bytes or a size with a unit (``"10MB"``, ``"1MiB"``).

    >>> policy = SizeAtLeast(1_000_000)
    >>> policy(bytes(2_000_000)), policy("small"), policy([bytes(600_000)] * 2)
    (True, False, True)
    >>> SizeAtLeast("1MiB")
    SizeAtLeast(1048576)
    """

    def __init__(self, nbytes: int | str) -> None:
        if isinstance(nbytes, str):
            from pxexec.units import parse_bytes

            nbytes = parse_bytes(nbytes)
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
            raise ConfigError(f"SizeAtLeast needs a byte count >= 0, got {nbytes!r}.")
        self.nbytes = nbytes

    def __call__(self, obj: Any) -> bool:
        return estimate_nbytes(obj) >= self.nbytes

    def __repr__(self) -> str:
        return f"SizeAtLeast({self.nbytes})"


class TypeIn(Policy):
    """Proxy instances of the given classes (or subclasses).

    Classes may be given as ``"module:QualName"`` strings so that a config need not
    import them: a string matches a class in the object's hierarchy with that
    qualified name defined in that module or one of its submodules (so
    ``"pandas:DataFrame"`` matches ``pandas.core.frame.DataFrame``).

    >>> import collections
    >>> policy = TypeIn(bytes, "collections:OrderedDict")
    >>> policy(b"x"), policy(collections.OrderedDict()), policy("x")
    (True, True, False)
    """

    def __init__(self, *types: type[Any] | str) -> None:
        if not types:
            raise ConfigError("TypeIn needs at least one class or 'module:Name' string.")
        wanted = {type_name(t, "TypeIn") for t in types}
        self.names = tuple(sorted(tuple(name.split(":")) for name in wanted))
        self._wanted = tuple(f"{m}:{n}" for m, n in self.names)

    def __call__(self, obj: Any) -> bool:
        return type_matches(type(obj), self._wanted)

    def __repr__(self) -> str:
        return f"TypeIn({', '.join(map(repr, self._wanted))})"


class Tagged(Policy):
    """``policy``, and the objects it accepts are stored with ``tags``.

    >>> policy = Tagged(SizeAtLeast(1_000), "bulk")   # routed by a MultiConnector's tags
    >>> policy(bytes(5_000)), sorted(policy.tags_for(bytes(5_000)))
    (True, ['bulk'])
    """

    def __init__(self, policy: Any, *tags: str) -> None:
        self.policy = as_policy(policy)
        self.tags = frozenset(tags)

    def __call__(self, obj: Any) -> bool:
        return self.policy(obj)

    def tags_for(self, obj: Any) -> frozenset[str]:
        return self.tags | self.policy.tags_for(obj)

    def __repr__(self) -> str:
        return f"Tagged({self.policy!r}, {', '.join(repr(t) for t in sorted(self.tags))})"


class And(Policy):
    """Proxy what every one of ``policies`` proxies (also ``a & b``).

    >>> policy = And(SizeAtLeast(10), TypeIn(bytes))
    >>> policy(bytes(20)), policy("x" * 20)
    (True, False)
    """

    def __init__(self, *policies: Policy) -> None:
        self.policies = policies

    def __call__(self, obj: Any) -> bool:
        return all(p(obj) for p in self.policies)

    def tags_for(self, obj: Any) -> frozenset[str]:
        return frozenset().union(*(p.tags_for(obj) for p in self.policies))

    def __repr__(self) -> str:
        return " & ".join(f"({p!r})" for p in self.policies)


class Or(Policy):
    """Proxy what any one of ``policies`` proxies (also ``a | b``).

    >>> policy = Or(TypeIn(bytes), SizeAtLeast(10))
    >>> policy(b""), policy("x" * 20), policy("x")
    (True, True, False)
    """

    def __init__(self, *policies: Policy) -> None:
        self.policies = policies

    def __call__(self, obj: Any) -> bool:
        return any(p(obj) for p in self.policies)

    def tags_for(self, obj: Any) -> frozenset[str]:
        return frozenset().union(*(p.tags_for(obj) for p in self.policies if p(obj)))

    def __repr__(self) -> str:
        return " | ".join(f"({p!r})" for p in self.policies)


class Not(Policy):
    """Proxy what ``policy`` does not (also ``~policy``).

    >>> Not(TypeIn(str))("text"), (~TypeIn(str))(b"bytes")
    (False, True)
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def __call__(self, obj: Any) -> bool:
        return not self.policy(obj)

    def __repr__(self) -> str:
        return f"~({self.policy!r})"
