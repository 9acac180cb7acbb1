"""The wire format of node-to-node transfer: a handshake, then length-prefixed requests.

Handshake: the server sends ``b"PXT1"`` (a secret is required) or ``b"PXT0"`` and a
16-byte nonce. With a secret the client answers HMAC-SHA256(secret, b"c" + nonce) and
a nonce of its own; the server checks it (closing the connection if wrong) and
answers HMAC-SHA256(secret, b"s" + client nonce), which the client checks.

A request is ``op`` (1 byte), then two length-prefixed strings (u16 length each): a
token and an argument (the requester's node-server address, or empty). Answers:
``GET`` -> status (1 byte) and length (u64), then the object's bytes; ``EVICT``,
``HAS``, ``PING``, ``TOUCH`` (renew the lease of an object an owner on another node
holds) -> status (1 byte). Status 0 is yes/ok, 1 is missing, 2 is an operation this
server does not know (servers before ``GET_SPLIT`` answered 0 to those).

A large object comes over several connections at once (one TCP stream is bound by
one core's copying; the parts' copies run in parallel), in stripes: with ``k``
streams, stream ``j`` carries stripes ``j``, ``j + k``, ``j + 2k``, ... of ``stripe``
bytes each, so the bytes arrive nearly in order and the reader hashes them as they
come. ``GET_SPLIT`` (argument ``"<streams> <requester address>"``) -> status, the
object's length and the stripe size (u64 each), then stripe 0's stream (the whole
object when the stripe size is 0: below ``SPLIT_AT``, or one stream asked for);
``PART`` (argument ``"<stream> <streams> <stripe size>"``) -> status and the object's
length (u64), then that stream's stripes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct

__all__ = ["AuthError", "handshake_client", "handshake_server", "kernel_timeouts", "read_exact",
           "request", "send_range", "stripe_size", "stripes"]

GET, EVICT, HAS, PING, TOUCH, GET_SPLIT, PART = 1, 2, 3, 4, 5, 6, 7
OK, MISSING, UNKNOWN = 0, 1, 2
ANSWER = struct.Struct("!BQ")
SPLIT_ANSWER = struct.Struct("!BQQ")
_STR = struct.Struct("!H")

#: objects from this size are sent in stripes over several connections
SPLIT_AT = 16 << 20
#: the stripe size of an object sent over several connections
STRIPE = 2 << 20
#: the most connections one object is sent over
MAX_STREAMS = 64


def stripe_size(length: int, streams: int) -> int:
    """The stripe size for sending a ``length``-byte object over ``streams``
    connections: 0 (all on one connection) when it is small or one stream is asked for.

    >>> stripe_size(100 << 20, 4) == STRIPE, stripe_size(1 << 20, 4), stripe_size(100 << 20, 1)
    (True, 0, 0)
    """
    return STRIPE if 1 < streams <= MAX_STREAMS and length >= SPLIT_AT else 0


def stripes(length: int, stripe: int, stream: int, streams: int) -> list[tuple[int, int]]:
    """(offset, length) of the stripes stream ``stream`` of ``streams`` carries.

    >>> stripes(10, 3, 0, 2), stripes(10, 3, 1, 2)
    ([(0, 3), (6, 3)], [(3, 3), (9, 1)])
    """
    return [(start, min(stripe, length - start))
            for start in range(stream * stripe, length, streams * stripe)]


def parse_numbers(argument: str, count: int) -> list[int] | None:
    """``count`` non-negative integers at the start of ``argument`` (space separated),
    or None if it does not hold them."""
    fields = argument.split(" ", count)
    try:
        numbers = [int(f) for f in fields[:count]]
    except ValueError:
        return None
    return numbers if len(numbers) == count and min(numbers) >= 0 else None


class AuthError(ConnectionError):
    """The other end does not know the store secret (or demands one we lack)."""


def kernel_timeouts(sock: socket.socket, seconds: float, receive: float | None = None
                    ) -> None:
    """Bound every send on ``sock`` by ``seconds`` and every receive by ``receive``
    (default ``seconds``) in the kernel (SO_SNDTIMEO/SO_RCVTIMEO), and make it blocking:
    Python's own socket timeouts poll before each call, which costs much on an object
    received in hundreds of pieces. A wait that runs out raises ``BlockingIOError``
    (EAGAIN). Bytes sent and not acknowledged for ``seconds`` also end the connection
    (TCP_USER_TIMEOUT, where there is one): a peer gone mid-object does not hold it."""
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(seconds))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    _timeval(seconds if receive is None else receive))
    user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    if user_timeout is not None:
        sock.setsockopt(socket.IPPROTO_TCP, user_timeout,
                        min(2**31 - 1, max(1, int(seconds * 1000))))


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1e6))


def send_range(sock: socket.socket, fd: int, offset: int, length: int) -> None:
    """Send ``length`` bytes of file ``fd`` from ``offset`` with ``os.sendfile``."""
    sent = 0
    while sent < length:
        n = os.sendfile(sock.fileno(), fd, offset + sent, length - sent)
        if n == 0:
            raise ConnectionError("the object's file ended before its length")
        sent += n


def read_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the connection was closed by the other end")
        data += chunk
    return bytes(data)


def request(op: int, token: str, argument: str = "") -> bytes:
    t, a = token.encode(), argument.encode()
    return bytes([op]) + _STR.pack(len(t)) + t + _STR.pack(len(a)) + a


def read_request(sock: socket.socket) -> tuple[int, str, str] | None:
    """The next request, or None when the client closed the connection cleanly."""
    head = sock.recv(1)
    if not head:
        return None
    (tlen,) = _STR.unpack(read_exact(sock, 2))
    token = read_exact(sock, tlen).decode()
    (alen,) = _STR.unpack(read_exact(sock, 2))
    return head[0], token, read_exact(sock, alen).decode()


def _mac(secret: bytes, side: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, side + nonce, hashlib.sha256).digest()


def handshake_server(sock: socket.socket, secret: bytes | None) -> None:
    nonce = os.urandom(16)
    sock.sendall((b"PXT1" if secret else b"PXT0") + nonce)
    if secret is None:
        return
    answer = read_exact(sock, 48)
    if not hmac.compare_digest(answer[:32], _mac(secret, b"c", nonce)):
        raise AuthError("a client failed authentication")
    sock.sendall(_mac(secret, b"s", answer[32:]))


def handshake_client(sock: socket.socket, secret: bytes | None) -> None:
    hello = read_exact(sock, 20)
    kind, nonce = hello[:4], hello[4:]
    if kind == b"PXT0":
        return
    if kind != b"PXT1":
        raise ConnectionError("the other end is not a pxexec node server")
    if secret is None:
        raise AuthError(
            "the node server requires the store secret, and this process has none: set "
            "the connector's secret_env variable to the same value on every host"
        )
    mine = os.urandom(16)
    sock.sendall(_mac(secret, b"c", nonce) + mine)
    try:
        proof = read_exact(sock, 32)
    except ConnectionError:
        raise AuthError("the node server refused this process's secret") from None
    if not hmac.compare_digest(proof, _mac(secret, b"s", mine)):
        raise AuthError("the node server does not know the store secret")
