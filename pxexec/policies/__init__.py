"""should_proxy policies: callables ``obj -> bool`` that decide what goes by proxy.

Built-ins are small picklable classes combinable with ``&``, ``|`` and ``~``::

    SizeAtLeast(1_000_000) | TypeIn("pandas:DataFrame")
"""

from __future__ import annotations

from pxexec.policies.base import (
    DEFAULT_THRESHOLD,
    Always,
    And,
    Never,
    Not,
    Or,
    Policy,
    SizeAtLeast,
    Tagged,
    TypeIn,
)
from pxexec.policies.loading import load_policy, policy, policy_factory

__all__ = [
    "DEFAULT_THRESHOLD",
    "Always",
    "And",
    "Never",
    "Not",
    "Or",
    "Policy",
    "SizeAtLeast",
    "Tagged",
    "TypeIn",
    "load_policy",
    "policy",
    "policy_factory",
]
