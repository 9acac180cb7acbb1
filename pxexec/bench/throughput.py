"""Throughput: T tasks of N bytes in and N bytes out, W tasks in flight for W workers."""

from __future__ import annotations

import queue
import time
from typing import Any

from pxexec.bench.arms import Arm
from pxexec.bench.common import Record, attempt, print_table
from pxexec.bench.tasks import check_payload, consume_produce, make_payload


def run(
    arms: list[Arm], *, nbytes: int, tasks: int, warmup: int = 20, progress: Any = None,
) -> list[Record]:
    payload = make_payload("numpy", nbytes)
    records: list[Record] = []
    for arm in arms:

        def measure(arm: Arm = arm) -> list[Record]:
            _arm(arm, payload, nbytes, warmup, None)
            return _arm(arm, payload, nbytes, tasks, progress)

        records += attempt(arm, "throughput", measure, "numpy", "fresh", nbytes)
    return records


def _arm(arm: Arm, payload: Any, nbytes: int, tasks: int, progress: Any) -> list[Record]:
    done: queue.Queue[tuple[Any, float]] = queue.Queue()
    submit_fn = arm.submit
    sess = arm.sess

    def launch() -> None:
        t = time.time()
        future = submit_fn(consume_produce, payload, nbytes)

        def finished(f: Any, t: float = t) -> None:
            done.put((f, t))

        future.add_done_callback(finished)

    in_flight = min(sess.workers, tasks)
    for _ in range(in_flight):
        launch()
    submitted = in_flight
    records = []
    for i in range(tasks):
        future, submitted_at = done.get(timeout=600)
        result = future.result()
        out, start, end = result
        received = time.time()
        if submitted < tasks:
            launch()
            submitted += 1
        check_payload(out, nbytes)  # a pxexec proxy answers from its metadata: no fetch
        arm.release(result)
        records.append(Record("throughput", arm.name, sess.name, "numpy", "fresh", nbytes, i,
                              submitted_at, start, end, received, sess.workers))
        if progress is not None:
            progress.update(1)
    return records


def tasks_per_second(records: list[Record]) -> float:
    first = min(r.submit for r in records)
    last = max(r.received for r in records)
    return len(records) / (last - first)


def report(records: list[Record], title: str) -> tuple[list[str], list[list[Any]]]:
    rows: list[list[Any]] = []
    keys = list(dict.fromkeys((r.workers, r.nbytes, r.arm) for r in records))
    base: dict[tuple[int, int], float] = {}
    for workers, nbytes, arm in keys:
        chosen = [r for r in records if (r.workers, r.nbytes, r.arm) == (workers, nbytes, arm)]
        if any(r.failed for r in chosen):
            rows.append([workers, nbytes, arm, "failed", "-"])
            continue
        rate = tasks_per_second(chosen)
        if arm == "plain":
            base[(workers, nbytes)] = rate
        ratio = rate / base[(workers, nbytes)] if (workers, nbytes) in base else float("nan")
        rows.append([workers, nbytes, arm, rate, f"{ratio:.2f}x"])
    header = ["workers", "bytes", "arm", "tasks/s", "vs plain"]
    print_table(title, header, rows)
    return header, rows
