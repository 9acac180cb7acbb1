"""The benchmarks' own redis-server: ``pxexec bench --connector redis``, the scripts in
``benchmarks/`` and the routing example start one for a run, and stop it after.

(The test suite has its own private server in ``tests/redis_server.py``: test
infrastructure does not ship, and the shipped harness does not import the tests.)
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class RunningRedis:
    """A redis-server started by ``private_redis``: its URL, port and process."""

    url: str
    port: int
    process: subprocess.Popen[bytes]


@contextmanager
def private_redis(port: int = 0) -> Iterator[RunningRedis]:
    """A non-persistent redis-server on 127.0.0.1 for the block (``port`` 0: a free one).

    >>> with private_redis() as redis:     # doctest: +SKIP
    ...     redis.url
    'redis://127.0.0.1:41234/0'
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed. Install it (Debian: apt-get "
                           "install redis-server) or give a redis:// URL of a running server.")
    if not port:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="pxexec-bench-redis-") as folder:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", folder, "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _until_listening(process, port)
            yield RunningRedis(f"redis://127.0.0.1:{port}/0", port, process)
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def redis_url(url: str | None) -> Iterator[str]:
    """``url`` when given, else the URL of a private redis-server for the block."""
    if url is not None:
        yield url
        return
    with private_redis() as redis:
        yield redis.url


def _until_listening(process: subprocess.Popen[bytes], port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited at start with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not listen on port {port} within {seconds:g} s")
