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


#: turns each arm and size takes (see ``run``)
BLOCKS = 5


def run(
    arms: list[Arm], *, sizes: Sequence[int], tasks: int, blocks: int = BLOCKS,
    warmup: int = 20, progress: Any = None,
) -> list[Record]:
    """``tasks`` tasks per arm and size, in ``blocks`` turns that alternate arms and sizes.

    The machine's speed drifts over a run; taking turns in short blocks (the first arm
    rotating) gives every arm and size the same share of fast and slow moments.
    """
    payloads = {n: make_payload("numpy", n) for n in sizes}
    arms = [*arms, WorkOnly(arms[0].sess)] if arms else []
    records: list[Record] = []
    failed: set[str] = set()

    def turn(arm: Arm, nbytes: int, count: int, block: int, bar: Any) -> list[Record]:
        """``count`` tasks of one arm; a peer's failure is recorded and ends its turns."""
        got = attempt(arm, "throughput",
                      partial(_arm, arm, payloads[nbytes], nbytes, count, block, bar),
                      "numpy", "fresh", nbytes)
        if got and got[0].failed:
            failed.add(arm.name)
            records.extend(got)
            return []
        return got

    for nbytes in sizes:
        for arm in arms:
            turn(arm, nbytes, warmup, 0, None)  # warm-up: its records are dropped
    share = [tasks // blocks + (1 if b < tasks % blocks else 0) for b in range(blocks)]
    for block, count in enumerate(share):
        for nbytes in rotated(sizes, block):
            for arm in rotated(arms, block):
                if arm.name not in failed and count:
                    records += turn(arm, nbytes, count, block, progress)
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
    groups: dict[tuple[int, int, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.workers, r.nbytes, r.arm), []).append(r)
    order = {"plain": 0, WorkOnly.name: 2}  # plain first, the reference last
    keys = sorted(groups, key=lambda k: (k[0], k[1], order.get(k[2], 1)))
    rates = {k: tasks_per_second(chosen) for k, chosen in groups.items()
             if not any(r.failed for r in chosen)}
    sizes = sorted({n for _, n, _ in keys})
    several = len(sizes) > 1
    header = ["workers", "bytes", "arm", "tasks/s", "vs plain", "of work-only"]
    if several:
        header.append(f"vs plain at {sizes[0]} B")
    rows: list[list[Any]] = []
    for workers, nbytes, arm in keys:
        rate = rates.get((workers, nbytes, arm))
        if rate is None:
            rows.append([workers, nbytes, arm, "failed", "-", "-"] + (["-"] if several else []))
            continue
        row: list[Any] = [workers, nbytes, arm, rate,
                          _ratio(rate, rates.get((workers, nbytes, "plain"))),
                          _ratio(rate, rates.get((workers, nbytes, WorkOnly.name)))]
        if several:
            row.append(_ratio(rate, rates.get((workers, sizes[0], "plain"))))
        rows.append(row)
    print_table(title, header, rows)
    return header, rows


def _ratio(rate: float, base: float | None) -> str:
    return f"{rate / base:.2f}x" if base else "-"
