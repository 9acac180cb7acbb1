from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from pxexec.bench.redis_server import RedisServer
from pxexec.store import clear_registry


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("PXEXEC_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def shm_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="pxexec-test-", dir="/dev/shm")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    yield
    clear_registry()
