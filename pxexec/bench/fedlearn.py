"""Federated averaging of a numpy MLP (about 5M parameters, 20 MB) over C clients.

Each round the client submits one task per participant with the global model and that
participant's data; each task returns updated weights and the client averages them.
The data is synthetic and MNIST-shaped (784 features, 10 classes), made locally.
"""

from __future__ import annotations

import time
from typing import Any

from pxexec.bench.apps import Tracker, repeat
from pxexec.bench.arms import Arm, real
from pxexec.bench.common import Record
from pxexec.bench.tasks import local_train, mlp_init, mlp_loss


def client_data(clients: int, samples: int, seed: int = 0) -> list[tuple[Any, Any]]:
    """Per-client (x, y): x in [0, 1) float32, labels from a fixed random linear teacher."""
    import numpy as np

    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((784, 10)).astype(np.float32)
    out = []
    for _ in range(clients):
        x = rng.random((samples, 784), dtype=np.float32)
        y = np.argmax((x - 0.5) @ teacher, axis=1)
        out.append((x, y))
    return out


def train(
    tracker: Tracker, model: Any, data: list[tuple[Any, Any]], rounds: int, epochs: int,
) -> Any:
    import numpy as np

    arm = tracker.arm
    for _ in range(rounds):
        futures = [
            tracker.submit("train", int(model.nbytes), local_train, model, part, epochs)
            for part in data
        ]
        total = np.zeros_like(model)
        for f in futures:
            result = f.result()
            total += real(result[0])
            arm.release(result)
        model = total / len(futures)
    return model


def run(
    arms: list[Arm], *, clients: int = 8, rounds: int = 3, samples: int = 64, epochs: int = 1,
    reps: int = 1, progress: Any = None,
) -> list[Record]:
    import numpy as np

    data = client_data(clients, samples)
    start_model = mlp_init()
    x_test = np.concatenate([d[0] for d in data])
    y_test = np.concatenate([d[1] for d in data])
    before = mlp_loss(start_model, x_test, y_test)
    reference: list[Any] = []

    def warm_up(arm: Arm) -> list[Record]:  # imports and first connections on the workers
        train(Tracker("fedlearn", arm, -1), start_model, data[:2], 1, epochs)
        return []

    def one(arm: Arm, rep: int) -> list[Record]:
        tracker = Tracker("fedlearn", arm, rep)
        t0 = time.perf_counter()
        model = train(tracker, start_model, data, rounds, epochs)
        makespan = time.perf_counter() - t0
        after = mlp_loss(model, x_test, y_test)
        if not after < before:
            raise AssertionError(
                f"fedlearn on {arm.name}: loss did not fall ({before:.4f} -> {after:.4f})"
            )
        if not reference:
            reference.append(model)
        elif not np.allclose(model, reference[0], rtol=1e-3, atol=1e-5):
            raise AssertionError(f"fedlearn on {arm.name}: the model differs from "
                                 f"the {arms[0].name} arm's")
        return tracker.records(makespan)

    return repeat(arms, "fedlearn", warm_up, one, reps, progress)
