"""What the application workloads share: timed task submission and per-task records.

Every application task returns ``(value, start, end)`` (worker clock), so the records
hold when each task ran without the client fetching large results to find out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pxexec.bench.arms import Arm
from pxexec.bench.common import Record, attempt, fmt_range, print_table, quantiles, rotated
from pxexec.bench.tasks import task_times


class Tracker:
    """Submits tasks on one arm and remembers when each was submitted and done."""

    def __init__(self, workload: str, arm: Arm, rep: int) -> None:
        self.workload = workload
        self.arm = arm
        self.rep = rep
        self._tasks: list[tuple[str, int, float, Any]] = []
        self._received: dict[int, float] = {}
        self._lock = threading.Lock()

    def submit(self, kind: str, nbytes: int, fn: Callable[..., Any], *args: Any) -> Any:
        index = len(self._tasks)
        submitted = time.time()
        future = self.arm.submit(fn, *args)
        self._tasks.append((kind, nbytes, submitted, future))

        received, lock = self._received, self._lock  # not self: no cycle through the future

        def done(_: Any, index: int = index) -> None:
            with lock:
                received[index] = time.time()

        future.add_done_callback(done)
        return future

    def records(self, makespan: float) -> list[Record]:
        """One record per task, plus a ``makespan`` record (call after the timed part)."""
        futures = [task[3] for task in self._tasks]
        if self.arm.sess.name == "dask":  # ask the workers: do not fetch large results
            times = [f.result() for f in [self.arm.submit(task_times, f) for f in futures]]
        else:
            times = [tuple(f.result()[1:3]) for f in futures]
        sess = self.arm.sess
        out = []
        for i, ((kind, nbytes, submitted, _), (start, end)) in enumerate(zip(self._tasks, times)):
            out.append(Record(self.workload, self.arm.name, sess.name, kind, "", nbytes, self.rep,
                              submitted, start, end, self._received.get(i, end), sess.workers))
        first = min((t[2] for t in self._tasks), default=0.0)
        out.append(Record(self.workload, self.arm.name, sess.name, "makespan", "", 0, self.rep,
                          first, first, first + makespan, first + makespan, sess.workers))
        self._tasks.clear()
        return out


def repeat(
    arms: list[Arm], workload: str, warm_up: Callable[[Arm], list[Record]],
    one: Callable[[Arm, int], list[Record]], reps: int, progress: Any,
) -> list[Record]:
    """Warm every arm up, then run ``one(arm, rep)`` for each rep, arms interleaved
    (in a rotated order each rep, so no arm always runs first or right after another).

    An arm of a peer library that fails is reported once and not run again.
    """
    records: list[Record] = []
    failed: set[str] = set()
    for arm in arms:
        lost = attempt(arm, workload, lambda arm=arm: warm_up(arm))  # type: ignore[misc]
        if lost:
            failed.add(arm.name)
            records += lost
    for rep in range(reps):
        for arm in rotated(arms, rep):
            if arm.name not in failed:
                got = attempt(arm, workload, lambda arm=arm, rep=rep: one(arm, rep))  # type: ignore[misc]
                if any(r.failed for r in got):
                    failed.add(arm.name)
                records += got
            if progress is not None:
                progress.update(1)
    return records


def makespans(records: list[Record]) -> dict[str, list[float]]:
    """Makespans per arm (an empty list for an arm that failed)."""
    by_arm: dict[str, list[float]] = {}
    for r in records:
        if r.kind == "makespan":
            values = by_arm.setdefault(r.arm, [])
            if not r.failed:
                values.append(r.end - r.start)
    return dict(sorted(by_arm.items(), key=lambda item: item[0] != "plain"))


def report(records: list[Record], title: str) -> tuple[list[str], list[list[Any]]]:
    """A table of makespan per arm (median, p10-p90) and speed-up over plain."""
    by_arm = makespans(records)
    base = quantiles(by_arm["plain"])[1] if "plain" in by_arm else None
    header = ["arm", "makespan s", "p10-p90", "tasks", "speed-up"]
    rows: list[list[Any]] = []
    for arm, values in by_arm.items():
        if not values:
            rows.append([arm, "failed", "-", "-", "-"])
            continue
        p10, med, p90 = quantiles(values)
        tasks = sum(1 for r in records if r.arm == arm and r.kind != "makespan") // len(values)
        ratio = f"{base / med:.2f}x" if base else "-"
        rows.append([arm, med, fmt_range(p10, p90), tasks, ratio])
    print_table(title, header, rows)
    return header, rows
