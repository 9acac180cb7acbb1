"""An example policy module that config files can name ("examples.policies:...").

Run from the repository root so that ``examples`` is importable (or put such a
module in your own package).
"""

from __future__ import annotations

from typing import Any

from pxexec.policies import SizeAtLeast, TypeIn, policy, policy_factory


@policy
def large_arrays(obj: Any) -> bool:
    """Proxy numpy arrays of 1 MB or more."""
    return type(obj).__module__ == "numpy" and getattr(obj, "nbytes", 0) >= 1_000_000


@policy_factory
def frames_or_large(min_bytes: int = 10_000_000) -> Any:
    """A factory: DataFrames always, anything else from ``min_bytes`` up."""
    return TypeIn("pandas:DataFrame", "polars:DataFrame") | SizeAtLeast(min_bytes)
