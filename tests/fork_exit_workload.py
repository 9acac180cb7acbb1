"""A program forks after using pxexec; the child exits the normal way (run as a script).

``python -m tests.fork_exit_workload CONFIG_JSON`` builds a store from the connector
config, owns an object, runs a task through a StoreExecutor (so the freer, lease
keeper and exit hooks exist), then forks. The child ends with ``sys.exit``: the
interpreter's whole shutdown (atexit hooks, finalizers). The parent checks that the
child neither hung nor freed what the parent owns, frees it, and prints "ok".
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import sys
import time

import numpy as np

from pxexec import Store, StoreExecutor
from pxexec.connectors import connector_from_config
from pxexec.policies import SizeAtLeast
from tests import workers


def main() -> int:
    store = Store("fork-exit", connector_from_config(json.loads(sys.argv[1])))
    owner = store.owned_proxy(np.arange(1000))
    key = owner.__px_factory__.key
    assert float(owner.sum()) == 499500.0
    with StoreExecutor(cf.ThreadPoolExecutor(2), store, should_proxy=SizeAtLeast(1000)) as ex:
        assert float(ex.submit(workers.double, np.ones(2000)).result(timeout=60).sum()) == 4000
    pid = os.fork()
    if pid == 0:
        sys.exit(0)
    deadline = time.monotonic() + 60
    while True:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            print("the child hung at exit (killed after 60 s)")
            return 1
        time.sleep(0.05)
    if os.waitstatus_to_exitcode(raw) != 0:
        print(f"the child exited with {os.waitstatus_to_exitcode(raw)}")
        return 1
    if not store.exists(key):
        print("the child freed its parent's object")
        return 1
    reader = Store("fork-exit-reader", store.connector, cache_size=0)
    assert float(reader.get(key).sum()) == 499500.0
    owner.free()
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
