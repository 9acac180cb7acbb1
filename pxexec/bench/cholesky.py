"""Tiled Cholesky: potrf, trsm, syrk and gemm tasks on b x b tiles of an n x n matrix.

Each task takes earlier tasks' futures as inputs, so tiles flow between tasks the way
the engine (or the store) moves them. The client holds the matrix, submits the whole
graph, and the makespan ends when every tile of the factor is in the client's hands.
"""

from __future__ import annotations

import time
from typing import Any

from pxexec.bench.apps import Tracker, repeat
from pxexec.bench.arms import Arm, real
from pxexec.bench.common import Record
from pxexec.bench.tasks import gemm, potrf, syrk, trsm


def spd_matrix(n: int, seed: int = 0) -> Any:
    """A symmetric, strictly diagonally dominant (so positive definite) matrix."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.random((n, n))
    a += a.T
    a[np.diag_indices(n)] += 2.0 * n
    return a


def tiles_of(a: Any, block: int) -> dict[tuple[int, int], Any]:
    """The lower-triangle tiles of ``a`` as contiguous arrays, keyed (row, column)."""
    import numpy as np

    n = a.shape[0]
    if n % block:
        raise ValueError(f"block size {block} must divide the matrix size {n}")
    count = n // block
    return {
        (i, j): np.ascontiguousarray(a[i * block:(i + 1) * block, j * block:(j + 1) * block])
        for i in range(count) for j in range(i + 1)
    }


def task_counts(count: int) -> dict[str, int]:
    """Tasks of each kind for ``count`` tiles per side."""
    return {
        "potrf": count,
        "trsm": count * (count - 1) // 2,
        "syrk": count * (count - 1) // 2,
        "gemm": count * (count - 1) * (count - 2) // 6,
    }


def factor(tracker: Tracker, tiles: dict[tuple[int, int], Any], count: int, nbytes: int) -> Any:
    """Submit the whole factorization; return the futures of the factor's tiles."""
    a: dict[tuple[int, int], Any] = dict(tiles)
    low: dict[tuple[int, int], Any] = {}
    for k in range(count):
        low[k, k] = tracker.submit("potrf", nbytes, potrf, a.pop((k, k)))
        for i in range(k + 1, count):
            low[i, k] = tracker.submit("trsm", nbytes, trsm, low[k, k], a.pop((i, k)))
        for i in range(k + 1, count):
            a[i, i] = tracker.submit("syrk", nbytes, syrk, a[i, i], low[i, k])
            for j in range(k + 1, i):
                a[i, j] = tracker.submit("gemm", nbytes, gemm, a[i, j], low[i, k], low[j, k])
    return low


def assemble(parts: dict[tuple[int, int], Any], count: int, block: int) -> Any:
    import numpy as np

    n = count * block
    out = np.zeros((n, n))
    for (i, j), tile in parts.items():
        out[i * block:(i + 1) * block, j * block:(j + 1) * block] = tile
    return out


def check(a: Any, low: Any) -> float:
    """Relative error of L L^T x against A x for a random x (fails loudly when wrong)."""
    import numpy as np

    x = np.random.default_rng(1).random(a.shape[0])
    error = float(np.linalg.norm(low @ (low.T @ x) - a @ x) / np.linalg.norm(a @ x))
    if not error < 1e-8:
        raise AssertionError(f"Cholesky factor is wrong: relative error {error:.3g}")
    return error


def run(
    arms: list[Arm], *, n: int = 10_000, block: int = 2_500, reps: int = 1, progress: Any = None,
) -> list[Record]:
    a = spd_matrix(n)
    tiles = tiles_of(a, block)
    count = n // block
    nbytes = block * block * 8
    small = tiles_of(spd_matrix(4 * 100), 100)

    def warm_up(arm: Arm) -> list[Record]:  # imports and first connections on the workers
        for f in factor(Tracker("cholesky", arm, -1), small, 4, 100 * 100 * 8).values():
            f.result()
        return []

    def one(arm: Arm, rep: int) -> list[Record]:
        tracker = Tracker("cholesky", arm, rep)
        t0 = time.perf_counter()
        futures = factor(tracker, tiles, count, nbytes)
        parts = {ij: real(f.result()[0]) for ij, f in futures.items()}
        makespan = time.perf_counter() - t0
        check(a, assemble(parts, count, block))
        del parts
        out = tracker.records(makespan)
        for f in futures.values():
            arm.release(f.result())
        return out

    return repeat(arms, "cholesky", warm_up, one, reps, progress)
