"""The engine conformance suite for pytest, shipped for third-party engine adapters.

An engine adapter (``pxexec.engines.base.Engine``) is what StoreExecutor talks to:
``submit``, ``is_future``, ``add_done_callback``, ``outcome``, ``wait``, ``cancel``,
``check_options``, ``held_by``, ``shutdown``, ``release``, and the flags that say how
the engine behaves (``native_futures``, ``keeps_tracebacks``, ``completes_futures``,
``cancel_may_drop_results``, ``close_cancels_tasks``; ``option_names``; the worker
hook ``on_created``). Subclass ``EngineConformance`` and provide an ``engine``
fixture yielding a running engine (an ``Engine``, or an executor ``engine_for``
wraps); every test below then runs against it. Tasks are the functions of
``pxexec.testing.engine_tasks``, so workers must be able to import pxexec::

    class TestMyEngine(EngineConformance):
        @pytest.fixture
        def engine(self):
            engine = MyEngine(my_executor())
            yield engine
            engine.shutdown(wait=True, cancel_futures=False)

Set ``shuts_down = False`` where the fixture's engine is shared between tests (the
shutdown test then leaves it running).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from pxexec.engines.base import Engine, engine_for
from pxexec.errors import EngineOptionError
from pxexec.testing.engine_tasks import add, fail, sleep_then

__all__ = ["ENGINE_FLAGS", "EngineConformance"]

#: the boolean flags every engine declares (``Engine`` gives the defaults)
ENGINE_FLAGS = ("native_futures", "keeps_tracebacks", "completes_futures",
                "cancel_may_drop_results", "close_cancels_tasks")


class EngineConformance:
    """Behaviour every engine adapter must show. Requires pytest.

    Each test takes the ``adapter`` fixture (the ``Engine`` for the ``engine``
    fixture), so they also run by hand:

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from pxexec.engines.base import Engine
    >>> engine = Engine(ThreadPoolExecutor(2))
    >>> EngineConformance().test_submit_and_wait(engine)
    >>> engine.shutdown(wait=True, cancel_futures=False)
    """

    #: seconds any one task may take to finish on a loaded machine
    timeout: ClassVar[float] = 120.0
    #: whether ``test_shutdown`` may shut the fixture's engine down
    shuts_down: ClassVar[bool] = True

    @pytest.fixture
    def adapter(self, engine: Any) -> Iterator[Engine]:
        adapter = engine_for(engine)
        yield adapter
        adapter.release()

    def _done(self, adapter: Engine, future: Any) -> Any:
        cancelled, exc, result = adapter.wait(future, self.timeout)
        assert not cancelled and exc is None, (cancelled, exc)
        return result

    # -- what it declares --------------------------------------------------------------

    def test_declares_name_options_and_flags(self, adapter: Engine) -> None:
        assert isinstance(adapter, Engine)
        assert isinstance(adapter.name, str) and adapter.name
        assert isinstance(adapter.option_names, frozenset)
        assert all(isinstance(n, str) for n in adapter.option_names)
        for name in ENGINE_FLAGS:
            assert isinstance(getattr(adapter, name), bool), name
        assert adapter.on_created is None or callable(adapter.on_created)

    def test_check_options(self, adapter: Engine) -> None:
        assert adapter.check_options({}) == {}
        with pytest.raises(EngineOptionError) as info:
            adapter.check_options({"no_such_option": 1})
        assert "no_such_option" in str(info.value) and adapter.name in str(info.value)
        for name in adapter.option_names:
            assert adapter.check_options({name: None}) == {name: None}

    # -- submitting and waiting --------------------------------------------------------

    def test_submit_and_wait(self, adapter: Engine) -> None:
        future = adapter.submit(add, (2, 3), {})
        assert adapter.is_future(future)
        assert not adapter.is_future(5)
        assert adapter.wait(future, self.timeout) == (False, None, 5)
        assert adapter.outcome(future) == (False, None, 5)

    def test_keywords_and_empty_options(self, adapter: Engine) -> None:
        first = adapter.submit(add, (2,), {"b": 10})
        second = adapter.submit(add, (1,), {}, {})
        assert self._done(adapter, first) == 12 and self._done(adapter, second) == 1

    def test_a_task_error_is_its_outcome(self, adapter: Engine) -> None:
        future = adapter.submit(fail, ("boom from the worker",), {})
        cancelled, exc, result = adapter.wait(future, self.timeout)
        assert not cancelled and result is None
        assert isinstance(exc, ValueError) and "boom from the worker" in str(exc)
        assert adapter.outcome(future)[1] is not None
        if adapter.keeps_tracebacks:  # the worker's frames travel with the exception
            assert "fail" in "".join(traceback.format_exception(exc))

    def test_wait_times_out_and_the_task_still_completes(self, adapter: Engine) -> None:
        future = adapter.submit(sleep_then, (3.0, "late"), {})
        with pytest.raises(TimeoutError):
            adapter.wait(future, 0.05)
        assert self._done(adapter, future) == "late"

    def test_done_callback(self, adapter: Engine) -> None:
        called = threading.Event()
        seen: list[Any] = []

        def callback(done: Any) -> None:
            seen.append(done)
            called.set()

        future = adapter.submit(add, (1, 1), {})
        adapter.add_done_callback(future, callback)
        if adapter.completes_futures:  # nobody waits: the engine completes it anyway
            assert called.wait(self.timeout), "the done callback never ran"
        else:
            self._done(adapter, future)
            assert called.wait(self.timeout), "the done callback never ran after wait"
        assert seen and adapter.outcome(seen[0]) == (False, None, 2)

    def test_native_futures_are_dependencies(self, adapter: Engine) -> None:
        if not adapter.native_futures:
            pytest.skip(f"the {adapter.name} engine takes no futures as arguments")
        first = adapter.submit(sleep_then, (0.2, 5), {})
        second = adapter.submit(add, (first, 10), {})  # runs once first is done, on its value
        assert self._done(adapter, second) == 15

    def test_held_by_accepts_an_owner(self, adapter: Engine) -> None:
        class Owner:
            pass

        owner = Owner()
        future = adapter.submit(add, (3, 4), {})
        adapter.held_by(owner, future)
        assert self._done(adapter, future) == 7
        del owner

    # -- cancelling and shutting down --------------------------------------------------

    def test_cancel_of_a_finished_task_is_refused(self, adapter: Engine) -> None:
        future = adapter.submit(add, (1, 2), {})
        self._done(adapter, future)
        assert adapter.cancel(future) is False
        assert adapter.outcome(future) == (False, None, 3)

    def test_cancel_of_a_queued_task(self, adapter: Engine) -> None:
        busy = [adapter.submit(sleep_then, (0.5, i), {}) for i in range(6)]
        queued = adapter.submit(add, (20, 22), {})
        accepted = adapter.cancel(queued)
        assert isinstance(accepted, bool)
        cancelled, exc, result = adapter.wait(queued, self.timeout)
        if accepted and not adapter.cancel_may_drop_results:
            assert cancelled and result is None
        else:  # refused, or the engine may have run it before the cancel arrived
            assert cancelled or (exc is None and result == 42)
        assert [self._done(adapter, f) for f in busy] == list(range(6))

    def test_shutdown(self, adapter: Engine) -> None:
        if not self.shuts_down:
            pytest.skip("the fixture's engine is shared (shuts_down = False)")
        future = adapter.submit(add, (5, 5), {})
        assert self._done(adapter, future) == 10
        adapter.shutdown(wait=True, cancel_futures=False)
        adapter.release()  # after shutdown too: nothing left to drop
