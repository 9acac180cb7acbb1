"""The engine conformance suite (pxexec.testing.EngineConformance) over every engine
adapter pxexec ships: thread and process pools, Dask, Parsl and TaskVine (stand-in)."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Iterator
from typing import Any

import pytest

from pxexec.engines.base import Engine, engine_for
from pxexec.testing import EngineConformance
from tests.conftest import taskvine_executor


class TestThreadPool(EngineConformance):
    @pytest.fixture
    def engine(self) -> Iterator[Engine]:
        engine = Engine(cf.ThreadPoolExecutor(2))
        yield engine
        engine.shutdown(wait=True, cancel_futures=True)


class TestProcessPool(EngineConformance):
    @pytest.fixture
    def engine(self) -> Iterator[Engine]:
        pool = cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
        engine = engine_for(pool)
        yield engine
        engine.shutdown(wait=True, cancel_futures=True)


class TestDask(EngineConformance):
    @pytest.fixture
    def engine(self, dask_cluster: Any) -> Iterator[Engine]:
        from distributed import Client

        client = Client(dask_cluster)
        engine = engine_for(client)
        assert engine.name == "dask"
        yield engine
        engine.shutdown(wait=True, cancel_futures=True)


class TestParslThreads(EngineConformance):
    @pytest.fixture
    def engine(self, tmp_path: Any) -> Iterator[Engine]:
        from parsl.config import Config
        from parsl.executors.threads import ThreadPoolExecutor as ParslThreads

        from pxexec.engines.parsl import executor_from_config

        config = Config(executors=[ParslThreads(label="threads", max_threads=2)],
                        run_dir=str(tmp_path), initialize_logging=False)
        engine = engine_for(executor_from_config(config))
        assert engine.name == "parsl"
        yield engine
        engine.shutdown(wait=True, cancel_futures=False)


class TestParslHighThroughput(EngineConformance):
    """Parsl's pilot-job executor with worker processes (one pool for the session)."""

    shuts_down = False

    @pytest.fixture
    def engine(self, parsl_htex: Any) -> Iterator[Engine]:
        yield engine_for(parsl_htex)


class TestTaskVineStandin(EngineConformance):
    @pytest.fixture
    def engine(self, request: Any) -> Iterator[Engine]:
        engine = engine_for(taskvine_executor(request, real=False))
        assert engine.name == "taskvine"
        yield engine
        engine.shutdown(wait=True, cancel_futures=True)


class _Forgetful(Engine):
    """An adapter that forgets to report task errors: the suite must catch it."""

    def outcome(self, future: Any) -> tuple[bool, BaseException | None, Any]:
        cancelled, _, result = super().outcome(future)
        return cancelled, None, result

    def wait(self, future: Any, timeout: float | None) -> tuple[bool, BaseException | None, Any]:
        cancelled, _, result = super().wait(future, timeout)
        return cancelled, None, result


def test_the_suite_fails_a_broken_adapter() -> None:
    engine = _Forgetful(cf.ThreadPoolExecutor(1))
    try:
        with pytest.raises(AssertionError):
            EngineConformance().test_a_task_error_is_its_outcome(engine)
    finally:
        engine.shutdown(wait=True, cancel_futures=True)
