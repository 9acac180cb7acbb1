"""A large object pulled from another node in stripes over several connections at once
(``transfer_streams``): every byte lands in place and is verified once, in order; a
stripe that is corrupted, missing or late fails the whole pull and nothing is kept."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pxexec.codec.frames import join
from pxexec.codec.serialize import serialize
from pxexec.connectors.node import NodeConnector
from pxexec.connectors.node_transfer import protocol as p
from pxexec.connectors.node_transfer.client import TransferClient
from pxexec.connectors.node_transfer.server import NodeServer
from pxexec.errors import (
    ConfigError,
    DeserializationError,
    NodeUnreachableError,
    StoreConnectionError,
)
from tests.hashing import count_hashed

xxhash = pytest.importorskip("xxhash",
                             reason="the integrity extra (pip install 'pxexec[integrity]')")

HOLDER = "n1~abc"


def _payload() -> bytes:
    """About 34 MB in two large frames (so the parts' borders fall inside frames)."""
    rng = np.random.default_rng(9)
    return join(serialize({"a": rng.random(3_000_001),
                           "b": rng.integers(0, 255, 10_000_003, dtype=np.uint8),
                           "name": "x"}))


PAYLOAD = _payload()


class Origin:
    """A node store serving its objects from a NodeServer in this process."""

    def __init__(self, directory: str) -> None:
        self.store = NodeConnector(directory, namespace="origin", chunk=1 << 26)
        self.token = self.store.put([PAYLOAD]).partition("@")[0]
        listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{listener.getsockname()[1]}"
        self.server = NodeServer(self.store, listener, self.address)
        self.requests: list[int] = []
        answer = self.server._answer

        def counted(conn: socket.socket, op: int, token: str, argument: str) -> None:
            self.requests.append(op)
            answer(conn, op, token, argument)

        self.server._answer = counted  # type: ignore[method-assign]
        self.listener = listener
        threading.Thread(target=self.server.serve, daemon=True).start()

    def close(self) -> None:
        self.server.stopped.set()
        self.listener.close()
        self.store.remove_local(self.token)


@pytest.fixture
def origin(shm_dir: str) -> Iterator[Origin]:
    served = Origin(shm_dir)
    yield served
    served.close()


@pytest.fixture
def local(shm_dir: str) -> Iterator[NodeConnector]:
    connector = NodeConnector(shm_dir, namespace="here", chunk=1 << 26)
    yield connector
    assert connector.stats()["objects"] == 0


def test_a_large_object_comes_in_parts_over_several_connections(
        origin: Origin, local: NodeConnector, monkeypatch: Any) -> None:
    hashed = count_hashed(monkeypatch)
    client = TransferClient(None, 5.0, streams=4)
    assert client.pull(HOLDER, origin.address, [origin.token], local, "") == [True]
    assert sorted(origin.requests) == [p.GET_SPLIT, p.PART, p.PART, p.PART]
    assert client.idle_connections() == 4  # one per part, all given back
    buffer, _ident, checked = local.get_identified(origin.token)
    assert bytes(buffer) == PAYLOAD and checked is True
    # every byte of the two large frames hashed once, whichever part brought it
    assert 13_000_000 < sum(hashed) < len(PAYLOAD)
    del buffer
    local.remove_local(origin.token)
    client.close()


def test_after_one_stale_pooled_connection_the_retry_does_not_take_another(
        origin: Origin, local: NodeConnector) -> None:
    """A node server that restarted (or a link that went down) leaves every idle
    connection to it broken: the one retry goes on a new connection, and the other
    stale ones are dropped, so the request succeeds."""
    client = TransferClient(None, 5.0, streams=4)
    assert client.pull(HOLDER, origin.address, [origin.token], local, "") == [True]
    local.remove_local(origin.token)
    assert client.idle_connections() == 4
    for sock in client._idle[origin.address]:
        sock.shutdown(socket.SHUT_WR)  # broken as seen from here: a send fails
    assert client.has(HOLDER, origin.address, [origin.token]) == [True]
    assert client.idle_connections() == 1  # the new one; the stale ones are closed
    client.close()


def test_idle_connections_whose_server_closed_them_are_dropped_from_the_pool(
        origin: Origin) -> None:
    """A pooled connection the other end closed (a node server that stopped) is closed
    when the pool next takes one back, not kept for good."""
    client = TransferClient(None, 5.0, streams=1)
    gone = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{gone.getsockname()[1]}"
    peer = socket.create_connection(("127.0.0.1", gone.getsockname()[1]))
    accepted, _ = gone.accept()
    client._give_back(address, peer)
    accepted.close()  # the server's end goes
    gone.close()
    assert client.has(HOLDER, origin.address, [origin.token]) == [True]  # gives one back
    assert client.idle_connections() == 1 and address not in client._idle
    assert peer.fileno() == -1  # closed
    client.close()


def test_one_stream_pulls_the_whole_object_with_the_request_every_server_knows(
        origin: Origin, local: NodeConnector) -> None:
    client = TransferClient(None, 5.0, streams=1)
    assert client.pull(HOLDER, origin.address, [origin.token], local, "") == [True]
    assert origin.requests == [p.GET] and client.idle_connections() == 1
    assert bytes(local.get_identified(origin.token)[0]) == PAYLOAD
    local.remove_local(origin.token)
    got = client.fetch(HOLDER, origin.address, origin.token, "")
    assert got is not None and bytes(got) == PAYLOAD and origin.requests == [p.GET, p.GET]
    client.close()


@pytest.mark.parametrize("answer", [p.OK, p.UNKNOWN])
def test_a_node_server_that_predates_stripes_is_named_with_what_to_do(
        origin: Origin, local: NodeConnector, answer: int) -> None:
    # servers before stripes answered OK (one byte) to a request they did not know;
    # newer ones answer UNKNOWN
    served = origin.server._answer

    def older(conn: socket.socket, op: int, token: str, argument: str) -> None:
        if op in (p.GET_SPLIT, p.PART):
            conn.sendall(bytes([answer]))
        else:
            served(conn, op, token, argument)

    origin.server._answer = older  # type: ignore[method-assign]
    client = TransferClient(None, 1.0, streams=4)
    start = time.monotonic()
    with pytest.raises(StoreConnectionError, match=r"host 'n1' at 127\.0\.0\.1:\d+ does not "
                                                   r"know striped transfers.*transfer_streams=1"):
        client.pull(HOLDER, origin.address, [origin.token], local, "")
    assert time.monotonic() - start < 2.5 and not local.has_local(origin.token)
    with pytest.raises(StoreConnectionError, match="older pxexec"):
        client.fetch(HOLDER, origin.address, origin.token, "")
    one = TransferClient(None, 1.0, streams=1)  # what the error advises: it works
    assert one.pull(HOLDER, origin.address, [origin.token], local, "") == [True]
    local.remove_local(origin.token)
    one.close()
    client.close()


def test_an_operation_the_server_does_not_know_is_answered_unknown(origin: Origin) -> None:
    host, port = origin.address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        p.handshake_client(sock, None)
        sock.sendall(p.request(99, "x"))
        assert p.read_exact(sock, 1)[0] == p.UNKNOWN
        sock.sendall(p.request(p.PING, ""))
        assert p.read_exact(sock, 1)[0] == p.OK


def test_fetch_into_memory_comes_in_parts_too(origin: Origin) -> None:
    client = TransferClient(None, 5.0, streams=3)
    got = client.fetch(HOLDER, origin.address, origin.token, "")
    assert got is not None and bytes(got) == PAYLOAD
    assert sorted(origin.requests) == [p.GET_SPLIT, p.PART, p.PART]
    assert client.fetch(HOLDER, origin.address, "f" * 32, "") is None
    client.close()


def test_a_part_corrupted_on_its_way_is_refused_naming_the_host(
        origin: Origin, local: NodeConnector, monkeypatch: Any) -> None:
    where = origin.store.locate(origin.token)
    assert where is not None
    base = where[1]
    real = p.send_range

    def send(sock: socket.socket, fd: int, offset: int, length: int) -> None:
        target = base + len(PAYLOAD) - 1000  # in the last part: hashed after the others
        if offset <= target < offset + length:
            data = bytearray(os.pread(fd, length, offset))
            data[target - offset] ^= 0x01
            sock.sendall(data)
        else:
            real(sock, fd, offset, length)

    monkeypatch.setattr(p, "send_range", send)
    client = TransferClient(None, 5.0, streams=4)
    with pytest.raises(DeserializationError, match=r"from host 'n1' at 127\.0\.0\.1:\d+ is "
                                                   r"corrupted.*not kept"):
        client.pull(HOLDER, origin.address, [origin.token], local, "")
    assert not local.has_local(origin.token)
    client.close()


def test_an_object_freed_between_its_parts_is_missing_and_nothing_is_kept(
        origin: Origin, local: NodeConnector, monkeypatch: Any) -> None:
    real = origin.store.sealed_range
    calls: list[str] = []

    def once(token: str) -> Any:
        calls.append(token)
        return real(token) if len(calls) == 1 else None  # freed after the first answer

    monkeypatch.setattr(origin.store, "sealed_range", once)
    client = TransferClient(None, 5.0, streams=4)
    assert client.pull(HOLDER, origin.address, [origin.token], local, "") == [False]
    assert not local.has_local(origin.token) and len(calls) == 4
    assert client.fetch(HOLDER, origin.address, origin.token, "") is None
    client.close()


def test_a_part_that_stops_coming_names_the_host_in_bounded_time(
        origin: Origin, local: NodeConnector, monkeypatch: Any) -> None:
    real = p.send_range
    where = origin.store.locate(origin.token)
    assert where is not None

    def stall(sock: socket.socket, fd: int, offset: int, length: int) -> None:
        if offset == where[1] + p.STRIPE:  # stream 1's first stripe: half, then silence
            real(sock, fd, offset, length // 2)
            time.sleep(3)
            return
        real(sock, fd, offset, length)

    monkeypatch.setattr(p, "send_range", stall)
    client = TransferClient(None, 1.0, streams=2)
    start = time.monotonic()
    with pytest.raises(NodeUnreachableError, match=r"from host 'n1' at 127\.0\.0\.1") as caught:
        client.pull(HOLDER, origin.address, [origin.token], local, "")
    assert time.monotonic() - start < 2.9 and caught.value.host == "n1"
    assert not local.has_local(origin.token)
    client.close()


@pytest.mark.parametrize("streams", [0, 65, 2.5, True, "4"])
def test_a_wrong_stream_count_is_refused_before_any_io(shm_dir: str, streams: Any) -> None:
    with pytest.raises(ConfigError, match="transfer_streams must be a whole number"):
        NodeConnector(os.path.join(shm_dir, "never"), transfer=True, transfer_streams=streams)
    assert not os.path.exists(os.path.join(shm_dir, "never"))


def test_the_stream_count_travels_in_the_config(shm_dir: str) -> None:
    connector = NodeConnector(shm_dir, namespace="cfg", transfer=True, transfer_streams=2)
    again = NodeConnector.from_config(connector.config())
    assert again.transfer_streams == 2 and again.transfer_client().streams == 2
