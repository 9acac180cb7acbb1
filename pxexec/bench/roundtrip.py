"""Round trip of one no-op task by payload size (one task in flight)."""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from pxexec.bench.arms import Arm, real
from pxexec.bench.common import (
    Record,
    fmt_range,
    human_size,
    print_table,
    quantiles,
    take_turns,
)
from pxexec.bench.tasks import check_payload, make_payload, noop


def run(
    arms: Sequence[Arm],
    *,
    sizes: Sequence[int],
    kinds: Sequence[str] = ("numpy",),
    modes: Sequence[str] = ("fresh",),
    reps: int = 5,
    warmup: int = 2,
    progress: Any = None,
) -> list[Record]:
    """Time ``reps`` round trips per (size, kind, mode) on every arm, interleaved."""
    records: list[Record] = []
    for nbytes in sizes:
        for kind in kinds:
            payloads = [make_payload(kind, nbytes, seed) for seed in range(2)]
            for mode in modes:
                records += take_turns(arms, "roundtrip", partial(_trip, payloads, kind, mode),
                                      reps=reps, warmup=warmup, progress=progress, kind=kind,
                                      mode=mode, nbytes=nbytes)
    return records


#: the pause before each trip: longer than Dask's 10 ms message batching and StoreExecutor's
#: deferred release of finished Dask futures (50 ms), so that no arm's trip waits for a
#: message the previous trip (often another arm's) left behind
QUIET = 0.08


def _trip(payloads: list[Any], kind: str, mode: str, arm: Arm, rep: int) -> list[Record]:
    """One timed round trip of ``payloads[rep % 2]``, checked (a list: the shape
    ``attempt`` runs)."""
    payload = payloads[rep % 2]
    nbytes = len(payload) if isinstance(payload, bytes) else int(payload.nbytes)
    gc.collect()
    time.sleep(QUIET)
    submit = time.time()
    result = arm.submit(noop, payload, mode, kind).result()
    out, start, end = result
    value = real(out)
    arm.release(result)
    received = time.time()
    first = None if mode == "fresh" else int(payload[0])
    check_payload(value, nbytes, 7 if mode == "fresh" else first)
    return [Record("roundtrip", arm.name, arm.sess.name, kind, mode, nbytes, rep, submit, start,
                   end, received, arm.sess.workers)]


def summarize(records: list[Record]) -> tuple[list[str], list[list[Any]]]:
    groups: dict[tuple[str, str, int], dict[str, list[float]]] = {}
    for r in records:
        if r.failed:
            groups.setdefault((r.kind, r.mode, r.nbytes), {}).setdefault(r.arm, [])
            continue
        groups.setdefault((r.kind, r.mode, r.nbytes), {}).setdefault(r.arm, []).append(r.elapsed)
    arms = sorted(dict.fromkeys(r.arm for r in records), key=lambda a: a != "plain")
    header = ["kind", "output", "size"]
    for arm in arms:
        header += [f"{arm} ms", "p10-p90"]
        if arm != "plain":
            header.append("speed-up")
    rows = []
    for (kind, mode, nbytes), by_arm in groups.items():
        row: list[Any] = [kind, mode, human_size(nbytes)]
        base = quantiles(by_arm["plain"])[1] if "plain" in by_arm else None
        for arm in arms:
            if not by_arm.get(arm):
                row += ["failed", "-"] + (["-"] if arm != "plain" else [])
                continue
            p10, med, p90 = quantiles(by_arm[arm])
            row += [med * 1e3, fmt_range(p10 * 1e3, p90 * 1e3)]
            if arm != "plain":
                row.append(f"{base / med:.2f}x" if base else "-")
        rows.append(row)
    return header, rows


def report(records: list[Record], title: str) -> tuple[list[str], list[list[Any]]]:
    header, rows = summarize(records)
    print_table(title, header, rows)
    return header, rows
