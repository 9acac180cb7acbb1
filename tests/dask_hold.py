"""A Dask worker plugin that forces the ordering of a cancel against a task's end."""

from __future__ import annotations

import os
import time
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class HoldAtMemory(WorkerPlugin):  # type: ignore[misc]
    """Stops the worker just after a ``held_result`` task ended: in its
    "executing -> memory" transition, before the worker tells the scheduler. It
    creates ``reached`` (holding the key) and blocks the worker's event loop until
    ``go`` exists (at most a minute), so a cancel sent meanwhile reaches the worker
    only after the task ended."""

    name = "pxexec-test-hold-at-memory"

    def __init__(self, reached: str, go: str) -> None:
        self.reached = reached
        self.go = go

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if not (start == "executing" and finish == "memory" and "held_result" in str(key)):
            return
        with open(self.reached + ".tmp", "w") as f:
            f.write(str(key))
        os.replace(self.reached + ".tmp", self.reached)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.go) and time.monotonic() < deadline:
            time.sleep(0.01)
