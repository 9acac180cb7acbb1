"""Shared pieces of the benchmarks: arms, records, statistics, output."""

from __future__ import annotations

import csv
import math
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any


@dataclass
class Record:
    """One task as the benchmark saw it (times are ``time.time()`` seconds)."""

    workload: str
    arm: str
    engine: str
    kind: str
    mode: str
    nbytes: int
    rep: int
    submit: float
    start: float
    end: float
    received: float
    workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        return self.received - self.submit

    @property
    def failed(self) -> bool:
        return "error" in self.extra


def failure(arm: Any, workload: str, kind: str, mode: str, nbytes: int,
            exc: BaseException) -> Record:
    """The record of a point a peer arm could not run (its error, no times)."""
    nan = float("nan")
    message = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    print(f"  {arm.name} failed on {workload} {kind} {mode} {nbytes} B: {message}", flush=True)
    return Record(workload, arm.name, arm.sess.name, kind, mode, nbytes, 0, nan, nan, nan, nan,
                  arm.sess.workers, {"error": message})


def attempt(arm: Any, workload: str, run: Callable[[], list[Record]], kind: str = "makespan",
            mode: str = "", nbytes: int = 0) -> list[Record]:
    """Run one arm's part; a peer arm's failure becomes a record instead of an error."""
    try:
        return run()
    except Exception as exc:
        if not arm.peer:
            raise  # the plain engine and pxexec must not fail
        return [failure(arm, workload, kind, mode, nbytes, exc)]


def take_turns(arms: Sequence[Any], workload: str, turn: Callable[[Any, int], list[Record]], *,
               reps: int, warmup: int, progress: Any, kind: str, mode: str,
               nbytes: int) -> list[Record]:
    """``warmup`` untimed then ``reps`` timed turns ``turn(arm, rep)`` of every arm, the
    arms taking turns (the first one rotating); an arm that fails sits out the rest, its
    failure recorded. Each turn is one step of ``progress``."""
    records: list[Record] = []
    failed: set[str] = set()
    for rep in range(-warmup, reps):
        for arm in rotated(arms, rep):
            if progress is not None:
                progress.update(1)
            if arm.name in failed:
                continue
            got = attempt(arm, workload, partial(turn, arm, rep), kind, mode, nbytes)
            if got[0].failed:
                failed.add(arm.name)
                records += got
            elif rep >= 0:
                records += got
    return records


def rotated(items: Sequence[Any], turn: int) -> list[Any]:
    """``items`` starting at position ``turn`` (modulo their number), wrapping around."""
    if not items:
        return []
    start = turn % len(items)
    return [*items[start:], *items[:start]]


def quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(p10, median, p90) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan"), float("nan"), float("nan")
    if len(ordered) == 1:
        return ordered[0], ordered[0], ordered[0]
    deciles = statistics.quantiles(ordered, n=10, method="inclusive")
    return deciles[0], statistics.median(ordered), deciles[-1]


def write_csv(path: str, records: Sequence[Record]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        fields = [k for k in asdict(records[0]) if k != "extra"] if records else []
        writer.writerow([*fields, "elapsed", "error"])
        for r in records:
            row = asdict(r)
            writer.writerow([*(row[k] for k in fields), r.elapsed, r.extra.get("error", "")])


def read_csv(path: str) -> list[Record]:
    """The records ``write_csv`` wrote (to draw a plot again from a run's CSV file)."""
    records = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            error = row.get("error") or ""
            records.append(Record(
                row["workload"], row["arm"], row["engine"], row["kind"], row["mode"],
                int(row["nbytes"]), int(row["rep"]), float(row["submit"]), float(row["start"]),
                float(row["end"]), float(row["received"]), workers=int(row.get("workers") or 0),
                extra={"error": error} if error else {},
            ))
    return records


def write_rows(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return fmt_number(value)
    return str(value)


def fmt_number(value: float) -> str:
    """Three significant digits, never in exponent notation: 0.0123, 12.3, 255, 1040."""
    if value != value:  # NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if value == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"


def fmt_range(low: float, high: float) -> str:
    """A p10-p90 range in the table's number format (``255-1040``)."""
    return f"{fmt_number(low)}-{fmt_number(high)}"


def human_size(nbytes: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:g}{unit}"
    return f"{nbytes}B"


def parse_size(text: str) -> int:
    """Bytes named by ``text`` (``10kB``, ``1MiB``, ``2GB``; see ``pxexec.units``)."""
    from pxexec.units import parse_bytes

    return parse_bytes(text)


#: set by the first Ctrl-C of a run: the run stops at its next step (see ``stop_on_interrupt``)
STOP = threading.Event()


@contextmanager
def stop_on_interrupt() -> Iterator[None]:
    """Turn the first Ctrl-C into a stop at the next step of the run (between tasks).

    A KeyboardInterrupt raised at an arbitrary point (inside a finalizer, a lock, Dask's
    client) can leave a lock taken and hang the clean-up; raised at a step boundary, every
    ``with`` block unwinds and frees what it holds. A second Ctrl-C interrupts at once.
    ``STOP`` stays set afterwards: an error that follows the stop (such as a pool whose
    workers got the terminal's Ctrl-C too) is the interrupt's, not the run's.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP.clear()

    def first(signum: int, frame: Any) -> None:
        STOP.set()
        print("\ninterrupted: stopping after the current step (Ctrl-C again to stop now)",
              file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    check_stop()  # stopped during the clean-up at the end: still an interrupted run


def check_stop() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C asked the run to stop."""
    if STOP.is_set():
        raise KeyboardInterrupt


@contextmanager
def progress(total: int, label: str) -> Iterator[Any]:
    """A progress bar on a terminal (tqdm when installed), else a line every 10%; each
    step is also where a Ctrl-C stops the run."""
    if not sys.stderr.isatty():
        yield _Stopping(_Lines(total, label))
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield _Stopping(_Lines(total, label))
        return
    with tqdm(total=total, desc=label, leave=False) as bar:
        yield _Stopping(bar)


class _Stopping:
    """A progress bar whose every step checks for a requested stop."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        check_stop()


class _Lines:
    """Progress as plain lines on stderr (logs, CI, ``scripts/main.sh``): one per 10%."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done, self.shown = max(total, 1), label, 0, 0
        self.started = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        tenth = min(10, self.done * 10 // self.total)
        if tenth > self.shown:
            self.shown = tenth
            elapsed = time.monotonic() - self.started
            print(f"  {self.label}: {tenth * 10}% ({self.done}/{self.total}, "
                  f"{elapsed:.0f} s)", file=sys.stderr, flush=True)
