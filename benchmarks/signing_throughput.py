"""Sign + verify throughput (GB/s) of the signature formats, old and new, interleaved.

Run: ``python benchmarks/signing_throughput.py [--old OLD_SIGNING_PY] [--reps 9]``
(under ``flock /tmp/pxexec-bench.lock``). ``--old`` names a copy of a previous
``pxexec/codec/signing.py`` (``git show REV:pxexec/codec/signing.py > old.py``) to compare with;
its arms are "old-poly1305" and "old-hmac". Arms take turns, in blocks, per size.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pxexec.codec.signing import FRAME_SIZE, Signer

SECRET = b"benchmark secret"


def arms(old_path: str | None) -> dict[str, tuple[Callable[[Any], bytes], Callable[[Any], Any]]]:
    made: dict[str, tuple[Callable[[Any], bytes], Callable[[Any], Any]]] = {}
    for name, fast in (("chacha20-poly1305", None), ("hmac-sha256", False)):
        signer = Signer(SECRET, fast=fast)
        made[name] = (
            lambda frames, s=signer: s.sign(frames, store="bench", key="k" * 32, version=1),
            lambda buf, s=signer: s.verify(buf, store="bench", key="k" * 32),
        )
    if old_path:
        spec = importlib.util.spec_from_file_location("old_signing", old_path)
        assert spec is not None and spec.loader is not None
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        for name, fast in (("old-poly1305", None), ("old-hmac", False)):
            signer = old.Signer(SECRET, fast=fast)
            made[name] = (lambda frames, s=signer: s.sign(frames),
                          lambda buf, s=signer: s.verify(buf))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--old", default=None)
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    made = arms(args.old)
    for nbytes in (1_000_000, 100_000_000):
        payload = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
        frames = [b"h" * 64, memoryview(payload)]
        buffers = {}
        for name, (sign, verify) in made.items():
            buf = bytearray(FRAME_SIZE + 64 + nbytes)
            buf[:FRAME_SIZE] = sign(frames)
            buf[FRAME_SIZE:FRAME_SIZE + 64] = frames[0]
            buf[FRAME_SIZE + 64:] = payload.tobytes()
            assert verify(buf) is not None, name
            buffers[name] = buf
        samples: dict[str, list[float]] = {name: [] for name in made}
        for rep in range(args.reps + 1):
            order = list(made) if rep % 2 == 0 else list(reversed(made))
            for name in order:
                sign, verify = made[name]
                start = time.perf_counter()
                sign(frames)
                verify(buffers[name])
                if rep:  # the first block warms up
                    samples[name].append(time.perf_counter() - start)
        print(f"## {nbytes / 1e6:g} MB: sign + verify, median of {args.reps}")
        base = statistics.median(samples[next(iter(made))])
        for name, times in samples.items():
            median = statistics.median(times)
            rate = 2 * nbytes / median / 1e9
            print(f"{name:<20} {median * 1e3:8.2f} ms  {rate:6.2f} GB/s  "
                  f"(x{base / median:.2f} of {next(iter(made))})")


if __name__ == "__main__":
    main()
