"""Molecular design surrogate: an active-learning loop of many short tasks on small data.

Start with ``initial`` simulations of random candidates; then, until ``search``
candidates are simulated: retrain a small model on a DataFrame of the results, score
the whole candidate pool in ``batches`` inference tasks, and simulate the ``batch`` best
candidates not yet simulated. Every object is small (the policy proxies none of them
by default), so this measures what pxexec costs when it has nothing to win.
"""

from __future__ import annotations

import time
from typing import Any

from pxexec.bench.apps import Tracker, repeat
from pxexec.bench.arms import Arm, real
from pxexec.bench.common import Record
from pxexec.bench.tasks import infer, simulate, train_surrogate

FEATURES = 32


def candidates(pool: int, seed: int = 0) -> Any:
    import numpy as np

    return np.random.default_rng(seed).standard_normal((pool, FEATURES)).astype(np.float32)


def design(
    tracker: Tracker, pool: Any, *, initial: int, search: int, batch: int, batches: int,
) -> tuple[list[int], list[float]]:
    import numpy as np
    import pandas as pd

    chosen: list[int] = list(range(initial))
    scores: list[float] = []
    pending = [tracker.submit("simulate", FEATURES * 4, simulate, pool[i], i) for i in chosen]
    while True:
        scores += [f.result()[0] for f in pending]
        if len(chosen) >= search:
            return chosen, scores
        frame = pd.DataFrame(pool[chosen], columns=[f"f{i}" for i in range(FEATURES)])
        frame["score"] = scores
        model = tracker.submit("train", int(frame.memory_usage().sum()), train_surrogate, frame)
        parts = np.array_split(np.arange(len(pool)), batches)
        predicted = [
            tracker.submit("infer", int(pool[p].nbytes), infer, model, pool[p]) for p in parts
        ]
        ranked = np.concatenate([real(f.result()[0]) for f in predicted])
        taken = set(chosen)
        new = [int(i) for i in np.argsort(-ranked) if int(i) not in taken][:batch]
        chosen += new
        pending = [tracker.submit("simulate", FEATURES * 4, simulate, pool[i], i) for i in new]


def run(
    arms: list[Arm], *, pool: int = 8192, initial: int = 8, search: int = 64, batch: int = 8,
    batches: int = 8, reps: int = 1, progress: Any = None,
) -> list[Record]:
    candidates_ = candidates(pool)
    reference: list[list[int]] = []

    def warm_up(arm: Arm) -> list[Record]:  # imports and first connections on the workers
        design(Tracker("moldesign", arm, -1), candidates_[:256], initial=initial,
               search=initial + batch, batch=batch, batches=batches)
        return []

    def one(arm: Arm, rep: int) -> list[Record]:
        tracker = Tracker("moldesign", arm, rep)
        t0 = time.perf_counter()
        chosen, scores = design(tracker, candidates_, initial=initial, search=search,
                                batch=batch, batches=batches)
        makespan = time.perf_counter() - t0
        if len(set(chosen)) != len(chosen) or len(scores) != len(chosen):
            raise AssertionError(f"moldesign on {arm.name}: a candidate was lost or repeated")
        if not reference:
            reference.append(chosen)
        elif chosen != reference[0]:
            raise AssertionError(f"moldesign on {arm.name}: chose other candidates than "
                                 f"the {arms[0].name} arm")
        return tracker.records(makespan)

    return repeat(arms, "moldesign", warm_up, one, reps, progress)
