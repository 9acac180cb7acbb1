"""Digests checked while a payload streams in (pxexec.codec.streaming), and the node
transfer's receive that uses it (a corrupted object is never sealed)."""

from __future__ import annotations

import os
import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.codec import integrity
from pxexec.codec.frames import _FIXED, join, parse_buffer
from pxexec.codec.serialize import serialize
from pxexec.codec.signing import Signer
from pxexec.codec.streaming import StreamingDigests
from pxexec.connectors.node import NodeConnector
from pxexec.connectors.node_transfer import protocol as p
from pxexec.connectors.node_transfer.client import _receive
from pxexec.errors import DeserializationError
from tests.hashing import count_hashed

xxhash = pytest.importorskip("xxhash",
                             reason="the integrity extra (pip install 'pxexec[integrity]')")


def _object() -> dict[str, Any]:
    """Three large buffers (lengths not multiples of the 64-byte alignment: padding
    between them), a small one and a pickle stream, once serialized."""
    rng = np.random.default_rng(5)
    return {"a": rng.random(30_001), "b": rng.integers(0, 255, 70_003, dtype=np.uint8),
            "c": rng.random(9_999), "small": np.arange(10), "name": "x"}


OBJECT = _object()
PAYLOAD = join(serialize(OBJECT))


def _layout(payload: bytes) -> tuple[int, list[tuple[int, int]], list[int | None]]:
    """(header length, (start, end) of every data frame, their digests)."""
    _codec, meta, frames, _ = parse_buffer(payload)
    base = memoryview(payload)
    spans = []
    for frame in frames:
        start = np.frombuffer(frame, np.uint8).ctypes.data - np.frombuffer(
            base, np.uint8).ctypes.data
        spans.append((start, start + frame.nbytes))
    return spans[0][0], spans, meta[integrity.DIGESTS]


def _check(payload: bytes, cuts: list[int]) -> bool | None:
    digests = StreamingDigests(len(payload))
    view = memoryview(payload)
    for start, end in zip([0, *cuts], [*cuts, len(payload)]):
        digests.feed(view[start:end])
    return digests.result()


def test_the_payload_has_what_the_splits_need() -> None:
    _, spans, digests = _layout(PAYLOAD)
    large = [d for d in digests if d is not None]
    assert len(large) == 3 and None in digests
    # the streaming digest of each frame is the one-shot digest the writer wrote
    for (start, end), digest in zip(spans, digests):
        if digest is not None:
            hasher = xxhash.xxh3_64()
            for i in range(start, end, 4099):
                hasher.update(PAYLOAD[i : min(end, i + 4099)])
            assert hasher.intdigest() == digest == xxhash.xxh3_64_intdigest(PAYLOAD[start:end])
    assert any(spans[i][1] < spans[i + 1][0] for i in range(len(spans) - 1))  # padding


def test_every_split_of_the_header_gives_true() -> None:
    header_len, _, _ = _layout(PAYLOAD)
    for cut in range(0, header_len + 2):
        assert _check(PAYLOAD, [cut]) is True, cut
    assert _check(PAYLOAD, list(range(1, header_len + 70))) is True  # byte by byte


def test_splits_inside_frames_and_padding_give_true() -> None:
    _, spans, _ = _layout(PAYLOAD)
    awkward = set()
    for (start, end), (next_start, _) in zip(spans, [*spans[1:], (len(PAYLOAD), 0)]):
        awkward.update({start - 1, start, start + 1, (start + end) // 2, end - 1, end,
                        end + 1, (end + next_start) // 2, next_start - 1})
    awkward = {c for c in awkward if 0 < c < len(PAYLOAD)}
    for cut in sorted(awkward):
        assert _check(PAYLOAD, [cut]) is True, cut
    assert _check(PAYLOAD, sorted(awkward)) is True  # all at once: many tiny pieces
    rng = random.Random(3)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(PAYLOAD)), rng.randint(1, 40)))
        assert _check(PAYLOAD, cuts) is True


def test_a_flipped_byte_in_a_large_frame_raises_naming_it() -> None:
    _, spans, digests = _layout(PAYLOAD)
    for number, ((start, end), digest) in enumerate(zip(spans, digests), 1):
        if digest is None:
            continue
        for where in (start, (start + end) // 2, end - 1):
            corrupt = bytearray(PAYLOAD)
            corrupt[where] ^= 0x01
            with pytest.raises(DeserializationError, match=rf"XXH3\) of frame {number} "):
                _check(bytes(corrupt), [where, where + 1])  # the byte alone, too


def test_a_corrupted_header_or_size_raises() -> None:
    header_len, _, _ = _layout(PAYLOAD)
    corrupt = bytearray(PAYLOAD)
    corrupt[_FIXED.size + 3] ^= 0x10  # a frame length: the header's CRC catches it
    with pytest.raises(DeserializationError, match="header"):
        _check(bytes(corrupt), [header_len // 2])
    with pytest.raises(DeserializationError, match="header describes"):
        _check(PAYLOAD[:-1], [])  # truncated
    digests = StreamingDigests()  # extra bytes beyond what the header describes
    digests.feed(PAYLOAD)
    digests.feed(b"x")
    with pytest.raises(DeserializationError, match="header describes"):
        digests.result()


def test_signed_foreign_small_or_unchecked_payloads_give_none(monkeypatch: Any) -> None:
    frames = serialize(np.ones(100_000))
    signed = Signer(b"secret").sign(frames, store="s", key="k", version=1) + join(frames)
    assert _check(signed, [10, 100]) is None  # the signature frame comes first
    assert _check(b"not a pxexec payload at all, just bytes" * 1000, [3]) is None
    assert _check(b"", []) is None and _check(b"PX", []) is None
    assert _check(join(serialize(np.ones(100))), [5]) is None  # small: no digests
    monkeypatch.setattr(integrity, "HAVE_XXHASH", False)  # PXEXEC_INTEGRITY=off
    corrupt = bytearray(PAYLOAD)
    corrupt[-5] ^= 0xFF
    assert _check(bytes(corrupt), [7]) is None


# -- the transfer's receive ----------------------------------------------------------


@pytest.fixture
def node(shm_dir: str) -> Iterator[NodeConnector]:
    connector = NodeConnector(shm_dir, namespace="rx", chunk=1 << 24)
    yield connector
    assert connector.stats()["objects"] == 0


def _send(payload: bytes) -> socket.socket:
    """A socket from which an answer with ``payload`` arrives, in small pieces."""
    ours, theirs = socket.socketpair()

    def serve() -> None:
        with theirs:
            theirs.sendall(p.ANSWER.pack(p.OK, len(payload)))
            for i in range(0, len(payload), 1000):
                theirs.sendall(payload[i : i + 1000])

    threading.Thread(target=serve, daemon=True).start()
    return ours


def test_a_received_object_is_verified_once_and_remembered(
        node: NodeConnector, monkeypatch: Any) -> None:
    token = os.urandom(16).hex()
    real = xxhash.xxh3_64
    hashed = count_hashed(monkeypatch)
    calls = []
    monkeypatch.setattr(xxhash, "xxh3_64_intdigest",
                        lambda data: calls.append(1) or real(data).intdigest())
    with _send(PAYLOAD) as sock:
        assert _receive(sock, token, node, "n1~abc", "10.0.0.2:1") is True
    _, spans, digests = _layout(PAYLOAD)
    assert sum(hashed) == sum(e - s for (s, e), d in zip(spans, digests) if d is not None)
    buffer, ident, checked = node.get_identified(token)
    assert bytes(buffer) == PAYLOAD and checked is True
    with Store("rx-store", node, cache_size=0) as store:
        got = store.get(token)  # decoded without hashing the large frames again
        assert calls == [] and got["name"] == "x"
        assert all(np.array_equal(got[k], OBJECT[k]) for k in ("a", "b", "c", "small"))
        assert store._checked.seen(token, ident)
        del got
    del buffer
    node.remove_local(token)


def test_a_corrupted_object_is_aborted_naming_its_host(node: NodeConnector) -> None:
    token = os.urandom(16).hex()
    _, spans, digests = _layout(PAYLOAD)
    start, end = spans[[d is not None for d in digests].index(True)]  # a large frame
    corrupt = bytearray(PAYLOAD)
    corrupt[(start + end) // 2] ^= 0x80
    with _send(bytes(corrupt)) as sock, pytest.raises(
            DeserializationError, match=r"received from host 'n1' at 10\.0\.0\.2:1 is "
                                        r"corrupted .*XXH3.*not kept"):
        _receive(sock, token, node, "n1~abc", "10.0.0.2:1")
    assert not node.has_local(token) and node.stats()["objects"] == 0
