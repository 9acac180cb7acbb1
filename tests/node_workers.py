"""Functions that pool workers run in the node store tests (importable by spawn)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np

from pxexec.codec.serialize import deserialize, serialize
from pxexec.connectors import connector_from_config


def payload(n: int, seed: int) -> np.ndarray:
    return np.full(n, seed % 251, dtype=np.uint8)


def churn(config: dict[str, Any], worker: int, rounds: int) -> int:
    """Put, read back, check and evict objects of mixed sizes; return how many."""
    connector = connector_from_config(config)
    done = 0
    for i in range(rounds):
        n = (1 + (i * 7 + worker) % 5) * 150_000 if i % 3 else 500 + i
        obj = payload(n, worker * 1000 + i)
        key = connector.put(serialize(obj))
        out = deserialize(connector.get(key))
        assert np.array_equal(out, obj), "read back something else"
        connector.evict(key)
        done += 1
    return done


def die_mid_write(config: dict[str, Any], nbytes: int) -> None:
    """Reserve an object, write half of it, and die (SIGKILL) before sealing."""
    connector = connector_from_config(config)
    _key, buffer = connector.allocate(nbytes)
    buffer[: nbytes // 2] = 7
    os.kill(os.getpid(), signal.SIGKILL)


def put_forever(config: dict[str, Any], nbytes: int, ready: str) -> None:
    """Put and evict large objects until killed (the test kills at a random moment)."""
    connector = connector_from_config(config)
    i = 0
    while True:
        key = connector.put(serialize(payload(nbytes, i)))
        if i == 3:
            open(ready, "w").close()
        if i % 2:
            connector.evict(key)
        i += 1


def die_holding_the_lock(config: dict[str, Any]) -> None:
    """Die inside an index transaction, after changing a row (must roll back)."""
    connector = connector_from_config(config)
    with connector.arena.index.transaction() as db:
        db.execute("INSERT INTO counters VALUES ('crash-test', 1)")
        os.kill(os.getpid(), signal.SIGKILL)


def die_mid_read(config: dict[str, Any], key: str) -> None:
    """Map an object zero-copy, start reading it, and die (SIGKILL)."""
    connector = connector_from_config(config)
    view = deserialize(connector.get(key))
    assert int(view[:1000].sum()) >= 0
    os.kill(os.getpid(), signal.SIGKILL)


def die_owning(config: dict[str, Any], count: int) -> list[str]:
    """Put ``count`` objects, hold them under this process's lease, then die."""
    from pxexec import Store
    from pxexec.store.leases import keeper

    store = Store("node-owner", connector_from_config(config))
    keys = [store.put(payload(20_000 + i, i)) for i in range(count)]
    keeper().hold(store, keys)
    time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)
    return keys


def use_and_close(config: dict[str, Any]) -> bool:
    """Open the store, use it, close the index handle (as an exiting process does)."""
    connector = connector_from_config(config)
    connector.evict(connector.put([b"x" * 100]))
    connector.arena.index.close()
    return True
