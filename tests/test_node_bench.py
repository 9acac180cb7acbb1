"""The benchmark pieces of the node store issue: the pipeline workload, the Ray arm,
and tasks that build their results in the store."""

from __future__ import annotations

import concurrent.futures as cf
import glob
import multiprocessing
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.bench.arms import ray_available
from pxexec.bench.tasks import fresh_like
from pxexec.cli import main
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.node import NodeConnector
from pxexec.executor.facade import StoreExecutor
from pxexec.executor.worker import current_store
from pxexec.policies import SizeAtLeast


@pytest.fixture
def node_store() -> Iterator[Store]:
    shm = tempfile.mkdtemp(prefix="pxexec-node-test-", dir="/dev/shm")
    store = Store(f"nb-{uuid.uuid4().hex[:6]}",
                  NodeConnector(shm, chunk=32 << 20, capacity=256 << 20))
    yield store
    store.close()
    shutil.rmtree(shm, ignore_errors=True)


def test_pipeline_on_processes_with_the_node_store(tmp_path: Any, capsys: Any) -> None:
    assert main(["bench", "pipeline", "--engine", "process", "--connector", "node",
                 "--pipeline-size", "8MB", "--consumers", "3", "--reps", "2",
                 "--out", str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "Pipeline: make 8000000 bytes -> 3 consumers" in out and "pxexec-node" in out
    assert glob.glob(str(tmp_path / "pipeline-process-*-summary.csv"))


def test_ray_arm_runs_or_is_skipped_with_a_message(tmp_path: Any, capsys: Any) -> None:
    code = main(["bench", "roundtrip", "--engine", "thread", "--sizes", "1MB", "--reps", "1",
                 "--kinds", "numpy", "--modes", "fresh", "--arm", "ray",
                 "--out", str(tmp_path), "--no-plot"])
    assert code == 0
    captured = capsys.readouterr()
    if ray_available():
        assert " ray ms" in captured.out
    else:
        assert "Ray is not installed, so the ray arm is skipped" in captured.err


def test_current_store_is_the_running_tasks_store(node_store: Store) -> None:
    assert current_store() is None
    pool = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    with StoreExecutor(pool, node_store, SizeAtLeast(1_000_000)) as ex:
        result = ex.submit(fresh_like, "numpy", 5_000_000).result(timeout=60)
        assert result.nbytes == 5_000_000 and int(result[-1]) == 7
        ex.free(result)
    del result
    assert node_store.connector.stats()["objects"] == 0


def test_empty_without_an_allocating_connector_is_a_plain_array() -> None:
    store = Store(f"plain-{uuid.uuid4().hex[:6]}", LocalConnector())
    arr = store.empty((300, 300))
    assert type(arr) is np.ndarray and arr.flags.writeable
    arr[:] = 1
    key = store.seal(arr)  # a copy, as put would
    assert float(store.get(key).sum()) == 90_000.0
