"""Task functions of the benchmarks (module level, so every engine can import them)."""

from __future__ import annotations

import itertools
import time
from typing import Any


def make_payload(kind: str, nbytes: int, seed: int = 0) -> Any:
    """A payload of ``nbytes``: a numpy uint8 array or bytes, with varied content."""
    import numpy as np

    arr = np.random.default_rng(seed).integers(0, 255, nbytes, dtype=np.uint8)
    return arr if kind == "numpy" else arr.tobytes()


def fresh_like(kind: str, nbytes: int) -> Any:
    """A new object of ``nbytes`` made on the worker (cheap to generate, not zero)."""
    import numpy as np

    from pxexec.executor.worker import current_store

    store = current_store() if kind == "numpy" else None
    if store is not None:  # built where it will be stored: no copy at the put
        arr = store.empty(nbytes, np.uint8)
        arr.fill(7)
        return arr
    arr = np.full(nbytes, 7, dtype=np.uint8)
    return arr if kind == "numpy" else arr.tobytes()


def check_payload(value: Any, expected_len: int, first: int | None = None) -> None:
    """Fail loudly if a result is not what the task was asked to return."""
    view = memoryview(value) if isinstance(value, (bytes, bytearray)) else None
    length = len(view) if view is not None else int(value.nbytes)
    if length != expected_len:
        raise AssertionError(f"result has {length} bytes, expected {expected_len}")
    if first is not None and length and int(value[0]) != first:
        raise AssertionError(f"result starts with {int(value[0])}, expected {first}")


def noop(data: Any, mode: str, kind: str) -> tuple[Any, float, float]:
    """Return the input unchanged (mode 'input') or a fresh object of its size."""
    start = time.time()
    if mode == "input":
        out = data
    else:
        nbytes = len(data) if isinstance(data, (bytes, bytearray)) else int(data.nbytes)
        out = fresh_like(kind, nbytes)
    return out, start, time.time()


_RANDOM: dict[int, Any] = {}


def consume_produce(data: Any, nbytes: int, seq: int = 0) -> tuple[Any, float, float]:
    """Read every byte of the input; return a fresh random-looking array of ``nbytes``.

    ``seq`` numbers the task and is otherwise unused: it keeps calls distinct for
    executors that submit with Dask's default ``pure=True``, which would run identical
    calls once and hand every caller the same result.

    The output is a copy of a per-process random block with its first bytes set from
    the input, so producing it costs one memory copy (as cheap as the paper's O(1) ms
    generation), the same on every arm.
    """
    import numpy as np

    from pxexec.proxy import extract

    start = time.time()
    data = extract(data)  # C APIs such as np.frombuffer need the real object
    arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    block = _RANDOM.get(nbytes)
    if block is None:
        block = _RANDOM[nbytes] = np.random.default_rng(nbytes).integers(
            0, 255, nbytes, dtype=np.uint8
        )
    out = block.copy()
    out[:8] = int(arr.sum()) % 251
    return out, start, time.time()


_LOCAL: dict[int, Any] = {}


def work_only(nbytes: int, seq: int = 0) -> tuple[Any, float, float]:
    """``consume_produce`` on an input already in this process, keeping the output here.

    What a throughput task costs with no data movement at all: the ceiling of any
    way of passing data (the ``work-only`` reference of ``pxexec bench throughput``).
    """
    data = _LOCAL.get(nbytes)
    if data is None:
        data = _LOCAL[nbytes] = make_payload("numpy", nbytes)
    out, start, end = consume_produce(data, nbytes)
    return out[:0], start, end


def task_times(result: tuple[Any, float, float]) -> tuple[float, float]:
    """The (start, end) of an application task's result, without touching its value."""
    return result[1], result[2]


def _array(value: Any) -> Any:
    from pxexec.bench.arms import real

    if isinstance(value, tuple):
        value = value[0]
    return real(value)


# -- tiled Cholesky -------------------------------------------------------------------


def _solve_lower(lower: Any, rhs: Any) -> Any:
    try:
        from scipy.linalg import solve_triangular
    except ImportError:
        import numpy as np

        return np.linalg.solve(lower, rhs)
    return solve_triangular(lower, rhs, lower=True, check_finite=False)


def potrf(a: Any) -> tuple[Any, float, float]:
    """L_kk = cholesky(A_kk)."""
    import numpy as np

    start = time.time()
    out = np.linalg.cholesky(_array(a))
    return out, start, time.time()


def trsm(l_kk: Any, a_ik: Any) -> tuple[Any, float, float]:
    """L_ik = A_ik L_kk^-T."""
    import numpy as np

    start = time.time()
    out = np.ascontiguousarray(_solve_lower(_array(l_kk), _array(a_ik).T).T)
    return out, start, time.time()


def syrk(a_ii: Any, l_ik: Any) -> tuple[Any, float, float]:
    """A_ii - L_ik L_ik^T."""
    start = time.time()
    low = _array(l_ik)
    out = _array(a_ii) - low @ low.T
    return out, start, time.time()


def gemm(a_ij: Any, l_ik: Any, l_jk: Any) -> tuple[Any, float, float]:
    """A_ij - L_ik L_jk^T."""
    start = time.time()
    out = _array(a_ij) - _array(l_ik) @ _array(l_jk).T
    return out, start, time.time()


# -- federated learning ---------------------------------------------------------------

#: layer widths of the federated model: about 5M parameters, 20 MB in float32
MLP_LAYERS = (784, 3136, 784, 196, 10)


def mlp_shapes(layers: tuple[int, ...] = MLP_LAYERS) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    for fan_in, fan_out in itertools.pairwise(layers):
        shapes += [(fan_in, fan_out), (fan_out,)]
    return shapes


def mlp_unpack(flat: Any, layers: tuple[int, ...] = MLP_LAYERS) -> list[Any]:
    """Views of a flat parameter vector as weight matrices and bias vectors."""
    import math

    out, offset = [], 0
    for shape in mlp_shapes(layers):
        size = math.prod(shape)
        out.append(flat[offset:offset + size].reshape(shape))
        offset += size
    return out


def mlp_init(seed: int = 0, layers: tuple[int, ...] = MLP_LAYERS) -> Any:
    """A flat float32 parameter vector with scaled random weights and zero biases."""
    import numpy as np

    rng = np.random.default_rng(seed)
    parts = []
    for shape in mlp_shapes(layers):
        if len(shape) == 2:
            scale = np.float32(1.0 / np.sqrt(shape[0]))
            parts.append(rng.standard_normal(shape, dtype=np.float32) * scale)
        else:
            parts.append(np.zeros(shape, dtype=np.float32))
    return np.concatenate([p.ravel() for p in parts])


def mlp_loss(flat: Any, x: Any, y: Any) -> float:
    """Mean cross-entropy of the model on (x, y)."""
    import numpy as np

    probs = _forward(mlp_unpack(_array(flat)), x)[-1]
    return float(-np.mean(np.log(probs[np.arange(len(y)), y] + 1e-12)))


def _forward(params: list[Any], x: Any) -> list[Any]:
    import numpy as np

    acts = [x]
    for i in range(0, len(params), 2):
        z = acts[-1] @ params[i] + params[i + 1]
        if i + 2 < len(params):
            acts.append(np.maximum(z, 0.0))
        else:
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            acts.append(e / e.sum(axis=1, keepdims=True))
    return acts


def local_train(
    flat: Any, data: Any, epochs: int = 1, batch: int = 32, lr: float = 0.05,
) -> tuple[Any, float, float]:
    """SGD on one client's data, starting from the global model; return new weights."""
    import numpy as np

    start = time.time()
    weights = np.array(_array(flat), dtype=np.float32)  # a private copy to update
    params = mlp_unpack(weights)
    x_all, y_all = _pair(data)
    for _ in range(epochs):
        for lo in range(0, len(y_all), batch):
            x, y = x_all[lo:lo + batch], y_all[lo:lo + batch]
            acts = _forward(params, x)
            grad = acts[-1].copy()
            grad[np.arange(len(y)), y] -= 1.0
            grad /= len(y)
            for layer in range(len(params) // 2 - 1, -1, -1):
                w = params[2 * layer]
                prev = acts[layer]
                back = grad @ w.T if layer else None
                w -= lr * (prev.T @ grad)
                params[2 * layer + 1] -= lr * grad.sum(axis=0)
                if back is not None:
                    grad = back * (prev > 0)
    return weights, start, time.time()


def _pair(data: Any) -> tuple[Any, Any]:
    from pxexec.bench.arms import real

    data = real(data)
    return real(data[0]), real(data[1])


# -- molecular design (a surrogate with no chemistry packages) -------------------------


def simulate(features: Any, seed: int) -> tuple[float, float, float]:
    """A short CPU-bound 'energy' of a candidate: a few hundred small matrix steps."""
    import numpy as np

    start = time.time()
    vec = np.asarray(_array(features), dtype=np.float64)
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((vec.size, vec.size)) / vec.size
    state = vec.copy()
    for _ in range(400):
        state = np.tanh(m @ state + vec)
    return float(state.sum() + np.sin(vec).sum()), start, time.time()


def train_surrogate(table: Any) -> tuple[Any, float, float]:
    """Ridge regression of score on features from a DataFrame (feature columns f*)."""
    import numpy as np

    start = time.time()
    frame = _array(table)
    x = frame.filter(like="f").to_numpy()
    y = frame["score"].to_numpy()
    x1 = np.hstack([x, np.ones((len(x), 1))])
    coef = np.linalg.solve(x1.T @ x1 + 1e-3 * np.eye(x1.shape[1]), x1.T @ y)
    return coef, start, time.time()


def infer(coef: Any, candidates: Any) -> tuple[Any, float, float]:
    """Predicted scores of a batch of candidates."""
    start = time.time()
    c = _array(candidates)
    w = _array(coef)
    return c @ w[:-1] + w[-1], start, time.time()


def pipeline_make(nbytes: int, seq: int = 0) -> Any:
    """Pipeline stage 1: a new array of ``nbytes`` (float64), built in the store if any."""
    import numpy as np

    from pxexec.executor.worker import current_store

    store = current_store()
    count = nbytes // 8
    out = store.empty(count) if store is not None else np.empty(count)
    out[:] = 1.0
    out[0] = float(seq)
    return out


def pipeline_consume(data: Any, part: int, parts: int) -> float:
    """Pipeline stage 2: read the whole array, return a number depending on ``part``."""
    from pxexec.proxy import extract

    arr = extract(data)
    return float(arr.sum()) * (part + 1) / parts


def pipeline_reduce(*values: float) -> float:
    """Pipeline stage 3: combine the consumers' numbers."""
    return float(sum(values))
