"""Counting the bytes XXH3 hashes (streamed digests), to check each is hashed once."""

from __future__ import annotations

from typing import Any


def count_hashed(monkeypatch: Any) -> list[int]:
    """From now on (for the test), the size of every piece fed to a streaming XXH3
    hasher (``xxhash.xxh3_64().update``) is appended to the returned list."""
    import xxhash

    hashed: list[int] = []
    real = xxhash.xxh3_64

    class Counted:
        def __init__(self) -> None:
            self.inner = real()

        def update(self, data: Any) -> None:
            hashed.append(memoryview(data).nbytes)
            self.inner.update(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    monkeypatch.setattr(xxhash, "xxh3_64", Counted)
    return hashed
