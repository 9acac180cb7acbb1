"""Small helpers shared by the multi-host tests (the test bed is pxexec.testbed)."""

from __future__ import annotations

import time
from typing import Any


def wait_until(check: Any, timeout: float = 10.0) -> bool:
    """Poll ``check`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def network(bed: Any) -> str:
    """The test bed's private subnet (what node servers bind to)."""
    return bed.head_address.rsplit(".", 1)[0] + ".0/24"
