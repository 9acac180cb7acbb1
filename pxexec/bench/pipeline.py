"""Pipeline: one task makes a large array, several consume it, one reduces.

The shape where an engine that keeps intermediate data on its workers (Dask) is
hard to beat: the array never needs to reach the client. Each rep is timed from the
first submit to the reduced result, arms interleaved.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from pxexec.bench.arms import Arm
from pxexec.bench.common import Record, take_turns
from pxexec.bench.tasks import pipeline_consume, pipeline_make, pipeline_reduce

QUIET = 0.08


def run(arms: Sequence[Arm], *, nbytes: int = 100_000_000, consumers: int = 4, reps: int = 5,
        warmup: int = 2, progress: Any = None) -> list[Record]:
    """``reps`` timed pipelines per arm (after ``warmup``), arms taking turns."""
    return take_turns(arms, "pipeline", partial(_once, nbytes, consumers), reps=reps,
                      warmup=warmup, progress=progress, kind="numpy", mode="", nbytes=nbytes)


def _once(nbytes: int, consumers: int, arm: Arm, rep: int) -> list[Record]:
    gc.collect()
    time.sleep(QUIET)
    submit = time.time()
    made = arm.submit(pipeline_make, nbytes, rep)
    parts = [arm.submit(pipeline_consume, made, i, consumers) for i in range(consumers)]
    total = arm.submit(pipeline_reduce, *parts).result()
    received = time.time()
    count = nbytes // 8
    expected = (count - 1 + rep) * sum(i + 1 for i in range(consumers)) / consumers
    if abs(float(total) - expected) > 1e-6 * max(1.0, abs(expected)):
        raise AssertionError(f"pipeline reduced to {total}, expected {expected}")
    del made, parts
    return [Record("pipeline", arm.name, arm.sess.name, "numpy", f"{consumers} consumers",
                   nbytes, rep, submit, submit, received, received, arm.sess.workers)]
