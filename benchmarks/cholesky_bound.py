"""How close each Cholesky arm came to what its tasks' own compute allows.

Reads the per-task records of ``pxexec bench cholesky`` and prints, per arm and run, the
makespan and a lower bound for any schedule on W workers of those same task durations:
max(total task time / W, longest dependency chain). The bound of the plain engine's
tasks also caps what any data path could gain over it.

Run: ``python benchmarks/cholesky_bound.py docs/benchmarks/suite/cholesky.csv``
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict


def chain(durations: list[float], tiles: int) -> float:
    """Longest dependency chain of the tiled factorization (tasks in submission order)."""
    it = iter(durations)
    ready = {(i, j): 0.0 for i in range(tiles) for j in range(i + 1)}
    low: dict[tuple[int, int], float] = {}
    for k in range(tiles):
        low[k, k] = ready[k, k] + next(it)
        for i in range(k + 1, tiles):
            low[i, k] = max(low[k, k], ready[i, k]) + next(it)
        for i in range(k + 1, tiles):
            ready[i, i] = max(ready[i, i], low[i, k]) + next(it)
            for j in range(k + 1, i):
                ready[i, j] = max(ready[i, j], low[i, k], low[j, k]) + next(it)
    return max(low.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("records")
    args = parser.parse_args()
    with open(args.records, newline="") as f:
        rows = [r for r in csv.DictReader(f) if not r.get("error")]
    runs: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        runs[r["arm"], r["rep"]].append(r)
    bounds: dict[str, list[float]] = defaultdict(list)
    spans: dict[str, list[float]] = defaultdict(list)
    print(f"{'arm':<14} {'run':>3} {'makespan':>9} {'tasks/W':>8} {'chain':>6} {'bound':>6}")
    for (arm, rep), records in runs.items():
        tasks = [r for r in records if r["kind"] != "makespan"]
        span = next(float(r["end"]) - float(r["start"]) for r in records if r["kind"] == "makespan")
        durations = [float(r["end"]) - float(r["start"]) for r in tasks]
        workers = int(tasks[0]["workers"])
        tiles = sum(1 for r in tasks if r["kind"] == "potrf")
        per_worker, longest = sum(durations) / workers, chain(durations, tiles)
        bound = max(per_worker, longest)
        bounds[arm].append(bound)
        spans[arm].append(span)
        print(f"{arm:<14} {rep:>3} {span:9.2f} {per_worker:8.2f} {longest:6.2f} {bound:6.2f}")
    plain = statistics.median(spans["plain"]) if "plain" in spans else None
    print()
    for arm in spans:
        line = (f"{arm:<14} median makespan {statistics.median(spans[arm]):6.2f} s, "
                f"bound {statistics.median(bounds[arm]):6.2f} s")
        if plain:
            line += (f"; speed-up over plain {plain / statistics.median(spans[arm]):.2f}x, "
                     f"at most {plain / statistics.median(bounds[arm]):.2f}x with these tasks")
        print(line)


if __name__ == "__main__":
    main()
