"""Arms of a benchmark: the plain engine, pxexec, and (optionally) ProxyStore.

Every arm offers the same ``submit(fn, *args)``, where an argument may be a future of
the same arm, so one workload function runs unchanged on all of them.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pxexec.bench.engines import Session
from pxexec.errors import MissingDependencyError
from pxexec.policies import DEFAULT_THRESHOLD
from pxexec.store.store import Store


class Arm:
    """One way of running tasks on a session's workers."""

    name = "plain"
    #: a peer library's arm: its failures are reported as findings, not raised
    peer = False
    #: a reference point, not a way of running the workload (its results are not checked)
    reference = False

    def __init__(self, sess: Session) -> None:
        self.sess = sess
        self._native = sess.name in ("dask", "parsl")  # engines that take futures as arguments

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._native or not any(isinstance(a, cf.Future) for a in args):
            return self._submit(fn, *args)
        return _after(self._submit, fn, args)

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Submit to what this arm runs on (futures among ``args`` already resolved)."""
        return self.sess.submit(fn, *args)

    def release(self, result: Any) -> None:
        """Free what a result holds in a store (nothing for the plain engine)."""

    def close(self) -> None:
        """Release what the arm started (not the session)."""


class PxexecArm(Arm):
    def __init__(self, sess: Session, name: str, store: Store, policy: Any) -> None:
        super().__init__(sess)
        self.name = name
        self.executor = sess.pxexec(store, policy)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.executor.submit(fn, *args)

    def release(self, result: Any) -> None:
        self.executor.free(result)

    def close(self) -> None:
        self.executor.flush(60)


class ProxyStoreArm(Arm):
    """The ProxyStore library's StoreExecutor on the same engine (a peer to compare)."""

    name = "proxystore"
    peer = True

    def __init__(self, sess: Session, store_dir: str, threshold: int) -> None:
        super().__init__(sess)
        require_proxystore()
        from proxystore.connectors.file import FileConnector
        from proxystore.store import Store as PSStore
        from proxystore.store.executor import StoreExecutor as PSExecutor

        from pxexec.policies import SizeAtLeast

        self._store = PSStore("pxexec-bench-peer", FileConnector(store_dir), register=True)
        # ProxyStore's ownership mode does not follow Dask futures passed as arguments;
        # its default (ownership) is used everywhere else.
        self.executor = PSExecutor(
            sess.engine, self._store, should_proxy=SizeAtLeast(threshold),
            ownership=sess.name != "dask", close_store=False,
        )

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.executor.submit(fn, *args)

    def close(self) -> None:
        from proxystore.store import unregister_store

        unregister_store(self._store)
        self._store.close(clear=True)


def require_proxystore() -> None:
    """Fail clearly, naming what to install, when ProxyStore is absent."""
    try:
        import proxystore  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("proxystore", "peer", "the proxystore arm (--arm proxystore)",
                                     how="Install it with: pip install proxystore") from exc


def _after(submit: Callable[..., Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Submit ``fn`` once the futures among ``args`` are done, with their results."""
    outer: cf.Future[Any] = cf.Future()
    deps = [a for a in args if isinstance(a, cf.Future)]
    remaining = [len(deps)]
    lock = threading.Lock()

    def relay(inner: Any) -> None:
        try:
            outer.set_result(inner.result())
        except BaseException as exc:
            outer.set_exception(exc)

    def on_dep(_: Any) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        try:
            values = tuple(a.result() if isinstance(a, cf.Future) else a for a in args)
            submit(fn, *values).add_done_callback(relay)
        except BaseException as exc:
            outer.set_exception(exc)

    for dep in deps:
        dep.add_done_callback(on_dep)
    return outer


@contextmanager
def arms(
    sess: Session, stores: dict[str, Store], policy: Any, *, peer: bool = False,
    threshold: int = DEFAULT_THRESHOLD, ray: bool = False,
) -> Iterator[list[Arm]]:
    """The plain arm, one pxexec arm per store, and the ProxyStore and Ray arms when asked."""
    import gc
    import shutil
    import tempfile

    made: list[Arm] = [Arm(sess)]
    made += [PxexecArm(sess, name, store, policy) for name, store in stores.items()]
    peer_dir = None
    try:  # an arm that cannot start (its package missing) leaves nothing behind either
        if peer:
            import os

            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
            peer_dir = tempfile.mkdtemp(prefix="pxexec-peer-", dir=shm)
            made.append(ProxyStoreArm(sess, peer_dir, threshold))
        if ray:
            made.append(RayArm(sess))
        yield made
    finally:
        for arm in made:
            arm.close()
        if peer_dir is not None:
            # ProxyStore's owned proxies free their objects when collected, making the
            # store anew from its config, which creates the directory again: let them
            # go (the arms hold them) while it is still there, then remove it
            made.clear()
            gc.collect()
            shutil.rmtree(peer_dir, ignore_errors=True)


def real(value: Any) -> Any:
    """The object behind a pxexec or ProxyStore proxy (anything else as it is)."""
    from pxexec.proxy import Proxy, extract

    if isinstance(value, Proxy):
        return extract(value)
    if type(value).__module__.startswith("proxystore"):
        from proxystore.proxy import extract as ps_extract

        return ps_extract(value)
    return value


class RayArm(Arm):
    """Ray on the same machine (a peer to compare): its own workers and object store.

    Started with ``sess.workers`` CPUs and a bounded object store; shut down with the arm.
    Futures this arm returns carry their ObjectRef, so a later task gets it by reference.
    """

    name = "ray"
    peer = True
    #: bytes of shared memory Ray's object store may use
    OBJECT_STORE = 2 * 1024**3

    def __init__(self, sess: Session) -> None:
        super().__init__(sess)
        require_ray()
        import ray

        self._ray = ray
        ray.init(num_cpus=sess.workers, object_store_memory=self.OBJECT_STORE,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
        self._remote: dict[Any, Any] = {}
        # start the workers now, not in the first timed task
        ray.get([self._task(_warm).remote(i) for i in range(sess.workers * 2)])

    def _task(self, fn: Callable[..., Any]) -> Any:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self._ray.remote(num_cpus=1)(fn)
        return remote

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        refs = [a.ref if isinstance(a, _RayFuture) else a for a in args]
        ref = self._task(fn).remote(*refs)
        future = _RayFuture(ref)
        ref.future().add_done_callback(future.relay)
        return future

    def close(self) -> None:
        self._remote.clear()
        self._ray.shutdown()


class _RayFuture(cf.Future[Any]):
    def __init__(self, ref: Any) -> None:
        super().__init__()
        self.ref = ref

    def relay(self, inner: Any) -> None:
        try:
            self.set_result(inner.result())
        except BaseException as exc:
            self.set_exception(exc)


def _warm(i: int) -> int:
    return i


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def require_ray() -> None:
    """Fail clearly, naming what to install, when Ray is absent."""
    if not ray_available():
        raise MissingDependencyError("ray", "ray", "the ray arm (--arm ray)",
                                     how="Install it with: pip install 'pxexec[ray]'")
