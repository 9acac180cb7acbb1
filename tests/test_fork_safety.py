"""fork: children neither deadlock on inherited locks nor free what their parent owns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.connectors import connector_from_config
from pxexec.connectors.file import FileConnector
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector

KINDS = ["shm", "file", "redis"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _connector(kind: str, shm_dir: str, tmp_path: Any, redis_url: str) -> Any:
    if kind == "shm":
        return SharedMemoryConnector(shm_dir, namespace="fork")
    if kind == "file":
        return FileConnector(str(tmp_path), namespace="fork")
    return RedisConnector(redis_url, prefix=f"fork{uuid.uuid4().hex[:8]}")


@pytest.mark.parametrize("kind", KINDS)
def test_fork_pool_with_eight_submitting_threads(kind: str, shm_dir: str, tmp_path: Any,
                                                 redis_url: str) -> None:
    connector = _connector(kind, shm_dir, tmp_path, redis_url)
    config = json.dumps(connector_from_config(connector.config()).config())
    proc = subprocess.Popen([sys.executable, "-m", "tests.fork_workload", config], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the workload and its forked children
        out, _ = proc.communicate()
        pytest.fail(f"the fork workload on {kind} deadlocked (killed after 150 s):\n{out}")
    assert proc.returncode == 0 and "ok" in out, out
    assert connector.keys() == []  # every input and result was freed


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["del", "free", "exit"])
def test_a_forked_child_never_frees_what_its_parent_owns(kind: str, how: str, shm_dir: str,
                                                         tmp_path: Any, redis_url: str) -> None:
    store = Store(f"fork-own-{kind}", _connector(kind, shm_dir, tmp_path, redis_url))
    owner = store.owned_proxy(np.arange(1000))
    key = owner.__px_factory__.key
    assert float(owner.sum()) == 499500.0  # resolved (and cached for Redis) in the parent
    pid = os.fork()
    if pid == 0:  # the child drops the inherited owner, then exits as a program would
        status = 0
        try:
            if how == "del":
                del owner
                import gc
                gc.collect()
            elif how == "free":
                owner.free()
        except BaseException:
            status = 1
        finally:
            if how == "exit":  # what an exiting interpreter runs: atexit and finalizers
                import atexit
                atexit._run_exitfuncs()
            os._exit(status)
    _, raw = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(raw) == 0
    assert store.exists(key), "the child evicted its parent's object"
    assert float(Store(f"fork-own-{kind}-reader", store.connector, cache_size=0).get(key).sum()) \
        == 499500.0
    owner.free()
    assert not store.exists(key)
