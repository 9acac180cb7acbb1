"""Throughput: T tasks of N bytes in and N bytes out, W tasks in flight for W workers.

Besides the arms, a ``work-only`` reference runs the same task on an input already in
the worker and keeps its output there: the rate no data path can exceed.
"""

from __future__ import annotations

import itertools
import queue
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from pxexec.bench.arms import Arm
from pxexec.bench.common import Record, attempt, print_table, rotated
from pxexec.bench.tasks import check_payload, consume_produce, make_payload, work_only


class WorkOnly(Arm):
    """The reference: each task's input is already on its worker; nothing comes back."""

    name = "work-only"
    reference = True

    def submit(self, fn: Any, *args: Any) -> Any:
        return self._submit(work_only, *args[1:])  # (payload, nbytes, seq): not the payload


def run(
    arms: list[Arm], *, sizes: Sequence[int], tasks: int, blocks: int = 5, warmup: int = 20,
    progress: Any = None,
) -> list[Record]:
    """``tasks`` tasks per arm and size, in ``blocks`` turns that alternate arms and sizes.

    The machine's speed drifts over a run; taking turns in short blocks (the first arm
    rotating) gives every arm and size the same share of fast and slow moments.
    """
    payloads = {n: make_payload("numpy", n) for n in sizes}
    arms = [*arms, WorkOnly(arms[0].sess)] if arms else []
    records: list[Record] = []
    failed: set[str] = set()
    for nbytes in sizes:
        for arm in arms:
            warm = attempt(arm, "throughput",
                           partial(_arm, arm, payloads[nbytes], nbytes, warmup, 0, None),
                           "numpy", "fresh", nbytes)
            if warm and warm[0].failed:
                failed.add(arm.name)
                records += warm
    share = [tasks // blocks + (1 if b < tasks % blocks else 0) for b in range(blocks)]
    for block, count in enumerate(share):
        for nbytes in rotated(sizes, block):
            for arm in rotated(arms, block):
                if arm.name in failed or not count:
                    continue
                got = attempt(arm, "throughput",
                              partial(_arm, arm, payloads[nbytes], nbytes, count, block, progress),
                              "numpy", "fresh", nbytes)
                if got and got[0].failed:
                    failed.add(arm.name)
                records += got
    return records


def _arm(
    arm: Arm, payload: Any, nbytes: int, tasks: int, block: int, progress: Any,
) -> list[Record]:
    """One block: ``tasks`` tasks, one in flight per worker; a record per task."""
    done: queue.Queue[tuple[Any, float]] = queue.Queue()
    submit_fn = arm.submit
    sess = arm.sess
    reference = arm.reference

    seq = itertools.count()

    def launch() -> None:
        t = time.time()
        future = submit_fn(consume_produce, payload, nbytes, next(seq))

        def finished(f: Any, t: float = t) -> None:
            done.put((f, t))

        future.add_done_callback(finished)

    in_flight = min(sess.workers, tasks)
    for _ in range(in_flight):
        launch()
    submitted = in_flight
    records = []
    for _ in range(tasks):
        future, submitted_at = done.get(timeout=600)
        result = future.result()
        out, start, end = result
        received = time.time()
        if submitted < tasks:
            launch()
            submitted += 1
        if not reference:
            check_payload(out, nbytes)
        arm.release(result)
        # dropped now, after the next submit: a Dask future dropped when the next result
        # arrives would be released just before the next submit and delay it (Dask's
        # client batches its messages every 10 ms), which would handicap the plain arm
        del future, result, out
        records.append(Record("throughput", arm.name, sess.name, "numpy", "fresh", nbytes, block,
                              submitted_at, start, end, received, sess.workers))
        if progress is not None:
            progress.update(1)
    return records


def tasks_per_second(records: list[Record]) -> float:
    """Tasks over the time their blocks took (a block: first submit to last result)."""
    busy = 0.0
    for block in {r.rep for r in records}:
        chosen = [r for r in records if r.rep == block]
        busy += max(r.received for r in chosen) - min(r.submit for r in chosen)
    return len(records) / busy


def report(records: list[Record], title: str) -> tuple[list[str], list[list[Any]]]:
    """Tasks/s per worker count, size and arm: against plain at the same size, as a
    share of the work-only reference, and (several sizes) against plain at the smallest."""
    arms = sorted(dict.fromkeys(r.arm for r in records),
                  key=lambda a: (a != "plain", a == WorkOnly.name))
    keys = sorted({(r.workers, r.nbytes) for r in records})
    smallest = min(n for _, n in keys)
    rates: dict[tuple[int, int, str], float] = {}
    for workers, nbytes in keys:
        for arm in arms:
            chosen = [r for r in records if (r.workers, r.nbytes, r.arm) == (workers, nbytes, arm)]
            if chosen and not any(r.failed for r in chosen):
                rates[(workers, nbytes, arm)] = tasks_per_second(chosen)
    several = len({n for _, n in keys}) > 1
    header = ["workers", "bytes", "arm", "tasks/s", "vs plain", "of work-only"]
    if several:
        header.append(f"vs plain at {smallest} B")
    rows: list[list[Any]] = []
    for workers, nbytes in keys:
        for arm in arms:
            if not any((r.workers, r.nbytes, r.arm) == (workers, nbytes, arm) for r in records):
                continue
            rate = rates.get((workers, nbytes, arm))
            if rate is None:
                rows.append([workers, nbytes, arm, "failed", "-", "-"] + (["-"] if several else []))
                continue
            row: list[Any] = [workers, nbytes, arm, rate,
                              _ratio(rate, rates.get((workers, nbytes, "plain"))),
                              _ratio(rate, rates.get((workers, nbytes, WorkOnly.name)))]
            if several:
                row.append(_ratio(rate, rates.get((workers, smallest, "plain"))))
            rows.append(row)
    print_table(title, header, rows)
    return header, rows


def _ratio(rate: float, base: float | None) -> str:
    return f"{rate / base:.2f}x" if base else "-"
