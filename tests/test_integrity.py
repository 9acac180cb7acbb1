"""Large frames carry an XXH3 digest (with the integrity extra): corruption is an error."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.codec import integrity
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.errors import DeserializationError

pytest.importorskip("xxhash", reason="the integrity extra (pip install 'pxexec[integrity]')")


def _corrupt_middle(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("payload", [
    np.arange(2_000_000, dtype=np.float64),   # a numpy frame
    bytes(range(256)) * 20_000,                # a large bytes frame
    {"weights": np.ones((500, 500)), "name": "model"},  # a pickle-5 buffer in a dict
])
def test_a_corrupted_large_frame_is_refused(payload: Any, shm_dir: str) -> None:
    connector = SharedMemoryConnector(shm_dir, namespace="integrity")
    with Store("integrity", connector, cache_size=0) as store:
        key = store.put(payload)
        _corrupt_middle(connector.path_of(key))
        with pytest.raises(DeserializationError, match="XXH3"):
            store.get(key)
        store.evict(key)


def test_an_intact_payload_reads_back(shm_dir: str) -> None:
    with Store("intact", SharedMemoryConnector(shm_dir, namespace="intact")) as store:
        array = np.random.default_rng(1).random(1_000_000)
        key = store.put(array)
        assert np.array_equal(store.get(key), array)
        store.evict(key)


def test_a_reader_without_xxhash_reads_unchecked(shm_dir: str, monkeypatch: Any) -> None:
    with Store("no-xxhash", SharedMemoryConnector(shm_dir, namespace="nox")) as store:
        key = store.put(np.ones(100_000))
        monkeypatch.setattr(integrity, "HAVE_XXHASH", False)
        assert float(store.get(key).sum()) == 100_000.0
        store.evict(key)
