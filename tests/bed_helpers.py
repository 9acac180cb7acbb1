"""Small helpers shared by the multi-host tests (the test bed is pxexec.testbed)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
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


@contextlib.contextmanager
def small_disk(bed: Any, host: str, path: str, size: str) -> Iterator[None]:
    """A tmpfs of ``size`` (``"8m"``) mounted at ``path`` on ``host`` only (its own mount
    namespace); at the end the node servers of stores under it are stopped (they hold
    the mount) and it is unmounted."""
    bed.check_output(host, ["sh", "-c", f"mkdir -p {path} && chmod 700 {path} && "
                                        f"mount -t tmpfs -o size={size},mode=0700 tmpfs {path}"])
    try:
        yield
    finally:
        states = bed.check_output(host, ["sh", "-c", f"cat {path}/*/.node-server.json "
                                                     "2>/dev/null || true"])
        for state in states.replace("}{", "}\n{").splitlines():
            server = json.loads(state)["pid"]
            with contextlib.suppress(ProcessLookupError):
                os.kill(server, signal.SIGKILL)
            assert wait_until(lambda s=server: not os.path.exists(f"/proc/{s}"))
        bed.check_output(host, ["umount", path])
