"""A private redis-server on a free port, for the tests (test infrastructure: not shipped)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private, non-persistent redis-server on 127.0.0.1; ``stop()`` ends it."""

    def __init__(self, *extra_args: str, port: int | None = None, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed. Install it (Debian: apt-get install "
                "redis-server) or point pxexec at a running server with a redis:// URL."
            )
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="pxexec-redis-")
        self.args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self.dir, "--protected-mode", "no", *extra_args,
        ]
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait(timeout)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited early with code {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not listen on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def redis_url_or_private(url: str | None) -> Iterator[str]:
    """``url`` if given, else the URL of a private redis-server stopped on exit."""
    if url is not None:
        yield url
        return
    server = RedisServer()
    try:
        yield server.url
    finally:
        server.stop()
