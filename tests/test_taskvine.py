from __future__ import annotations

import importlib.util
import uuid
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.adapters.taskvine import futures_executor
from pxexec.errors import MissingDependencyError
from pxexec.executor import StoreExecutor
from pxexec.testing import CountingConnector
from tests import workers
from tests.taskvine_standin import FuturesExecutor

N = 200_000


@pytest.fixture
def store(shm_dir: str) -> Any:
    with Store(f"tv-{uuid.uuid4().hex[:6]}", CountingConnector(shm_dir)) as s:
        yield s


def test_standin_is_faithful_about_arrays_and_laziness() -> None:
    vine = FuturesExecutor(port=0)
    assert vine.port != 0
    future = vine.submit(workers.make_array, 3)
    assert vine.ran == 0  # nothing runs until result() is called
    with pytest.raises(ValueError, match="ambiguous"):
        future.result()  # the real FuturesExecutor fails the same way on arrays


def test_store_executor_hides_taskvine_quirks(store: Store) -> None:
    vine = FuturesExecutor(port=0)
    with StoreExecutor(vine, store) as ex:
        fresh = ex.submit(workers.make_array, 3)  # an array result: boxed, not compared
        assert vine.ran == 0
        assert list(fresh.result()) == [1.0, 1.0, 1.0]
        big = ex.submit(workers.double, np.ones(N))
        assert float(big.result().sum()) == 2.0 * N
        assert list(ex.map(workers.add, [1, 2], [10, 20])) == [11, 22]
        ex.free(big.result())
    assert store.connector.keys() == []


def test_futures_only_as_top_level_positional_arguments(store: Store) -> None:
    with StoreExecutor(FuturesExecutor(port=0), store) as ex:
        first = ex.submit(workers.add, 1, 2)
        assert ex.submit(workers.add, first, 1).result() == 4
        with pytest.raises(ValueError, match="top-level positional"):
            ex.submit(workers.add, 1, b=first)
        with pytest.raises(ValueError, match="top-level positional"):
            ex.submit(workers.sizes, [first])


def test_shutdown_drives_pending_tasks(store: Store) -> None:
    vine = FuturesExecutor(port=0)
    ex = StoreExecutor(vine, store)
    futures = [ex.submit(workers.double, np.ones(N)) for _ in range(2)]
    ex.shutdown(wait=True)
    assert vine.ran == 2 and all(f.done() for f in futures)
    for f in futures:
        ex.free(f.result())
    assert store.connector.keys() == []


def test_missing_ndcctools_names_how_to_install() -> None:
    if importlib.util.find_spec("ndcctools") is not None:
        pytest.skip("ndcctools is installed")
    with pytest.raises(MissingDependencyError, match="conda-forge"):
        futures_executor(port=0)


@pytest.mark.skipif(
    importlib.util.find_spec("ndcctools") is None,
    reason="ndcctools (TaskVine) is not installed; it is not on PyPI",
)
def test_real_taskvine(store: Store) -> None:  # pragma: no cover - needs CCTools
    vine = futures_executor(port=0, factory=True, opts={"min_workers": 1, "max_workers": 1})
    with StoreExecutor(vine, store) as ex:
        result = ex.submit(workers.double, np.ones(N)).result()
        assert float(result.sum()) == 2.0 * N
        ex.free(result)
    assert store.connector.keys() == []
