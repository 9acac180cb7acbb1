"""The reading side of node-to-node transfer: pull, evict and check objects on a node.

One ``TransferClient`` per connector and process keeps idle connections per node
(a connection broken while idle in the pool is replaced and the idempotent request
sent again, once). Every wait is bounded by ``timeout`` seconds; a node that does not
answer in time raises ``NodeUnreachableError`` naming it. A large object comes over
``streams`` connections at once, each part received straight into its place.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pxexec.connectors.node_transfer.protocol as p
from pxexec.codec.frames import alloc
from pxexec.codec.streaming import StreamingDigests
from pxexec.connectors.node_transfer.seam import NodeLocalStore
from pxexec.errors import (
    DeserializationError,
    NodeUnreachableError,
    PxexecError,
    StoreConnectionError,
    StoreIOError,
)

__all__ = ["TransferClient"]

#: bytes received per recv_into call (the object streams in pieces of this size)
CHUNK = 4 << 20


def _host(tag: str) -> str:
    return tag.rpartition("~")[0] or tag


class TransferClient:
    """Talks to node servers of one store (see the package doc).

    >>> client = TransferClient(secret=None, timeout=1.0)
    >>> client.idle_connections()
    0
    """

    def __init__(self, secret: bytes | None, timeout: float, streams: int = 4) -> None:
        self.secret = secret
        self.timeout = timeout
        self.streams = streams
        self._idle: dict[str, list[socket.socket]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def idle_connections(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._idle.values())

    # -- connections ----------------------------------------------------------------

    def _connect(self, address: str) -> socket.socket:
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            p.kernel_timeouts(sock, self.timeout)
            p.handshake_client(sock, self.secret)
        except BaseException:
            sock.close()
            raise
        return sock

    def _take(self, address: str, fresh: bool = False) -> tuple[socket.socket, bool]:
        """A connection to ``address``: an idle pooled one (True) unless ``fresh``,
        which closes every idle one first (they are as stale as the one that broke:
        a node server that restarted, a link that went down)."""
        if self._pid != os.getpid():  # forked: the parent's connections are not ours
            self._idle, self._lock, self._pid = {}, threading.Lock(), os.getpid()
        with self._lock:
            if not fresh:
                idle = self._idle.get(address)
                if idle:
                    return idle.pop(), True
            stale = self._idle.pop(address, []) if fresh else []
        for sock in stale:
            sock.close()
        return self._connect(address), False

    def _give_back(self, address: str, sock: socket.socket) -> None:
        with self._lock:
            self._idle.setdefault(address, []).append(sock)
            self._prune_locked()

    def _prune_locked(self) -> None:
        """Close idle connections the other end has closed (readable while idle: its
        end of file), such as those to a node server that stopped."""
        idle = [s for socks in self._idle.values() for s in socks]
        try:
            ended = set(select.select(idle, [], [], 0)[0]) if idle else set()
        except (OSError, ValueError):
            return
        if not ended:
            return
        for address, socks in list(self._idle.items()):
            kept = [s for s in socks if s not in ended]
            if kept:
                self._idle[address] = kept
            else:
                del self._idle[address]
        for sock in ended:
            sock.close()

    @contextlib.contextmanager
    def _session(self, holder: str, address: str, action: str) -> Iterator[Any]:
        """Yields ``run(fn)``: ``fn(sock)`` on a pooled connection, retried once on a
        fresh one if the pooled connection turns out broken; errors name the node."""

        def run(fn: Any) -> Any:
            for attempt in (0, 1):
                try:
                    sock, pooled = self._take(address, fresh=attempt == 1)
                except p.AuthError as exc:
                    raise NodeUnreachableError(_host(holder), address, action, str(exc)
                                               ) from exc
                except OSError as exc:
                    raise NodeUnreachableError(_host(holder), address, action,
                                               _describe(exc, self.timeout)) from exc
                try:
                    result = fn(sock)
                except PxexecError:  # this host's own (a full disk, a bad object): as is
                    sock.close()
                    raise
                except (OSError, ConnectionError) as exc:
                    sock.close()
                    if pooled and attempt == 0 and not _timed_out(exc):
                        continue  # a stale idle connection: once more on a new one
                    raise NodeUnreachableError(_host(holder), address, action,
                                               _describe(exc, self.timeout)) from exc
                except BaseException:
                    sock.close()
                    raise
                self._give_back(address, sock)
                return result
            raise AssertionError("unreachable")

        yield run

    # -- requests -------------------------------------------------------------------

    def pull(self, holder: str, address: str, tokens: Sequence[str], into: NodeLocalStore,
             reply_to: str) -> list[bool]:
        """Copy ``tokens`` from the node at ``address`` into the local store ``into``
        (several requests pipelined on one connection; one large object in parts over
        ``streams`` connections); for each, whether it was there."""
        if len(tokens) == 1:
            return [self._pull_one(holder, address, tokens[0], into, reply_to)]

        def exchange(sock: socket.socket) -> list[bool]:
            sock.sendall(b"".join(p.request(p.GET, t, reply_to) for t in tokens))
            return [_receive(sock, token, into, holder, address) for token in tokens]

        with self._session(holder, address, f"fetch {len(tokens)} objects") as run:
            found: list[bool] = run(exchange)
            return found

    def _pull_one(self, holder: str, address: str, token: str, into: NodeLocalStore,
                  reply_to: str) -> bool:
        def exchange(sock: socket.socket) -> bool:
            status, nbytes, stripe = self._ask(sock, token, reply_to)
            if status != p.OK:
                return False
            return _into_store(token, into, nbytes, holder, address, lambda view, digests:
                               self._receive_parts(sock, view, stripe, holder, address, token,
                                                   digests))

        found: bool = self._run_striped(holder, address, token, exchange)
        return found

    def fetch(self, holder: str, address: str, token: str, reply_to: str
              ) -> memoryview | None:
        """Receive ``token`` from the node at ``address`` into fresh (huge-page)
        memory; None if that node does not have it. For stores whose new objects
        cost page faults to fill (one file per object), receiving here and writing
        the node's copy off the reader's path is faster than ``recv_into`` the file."""
        def exchange(sock: socket.socket) -> memoryview | None:
            status, nbytes, stripe = self._ask(sock, token, reply_to)
            if status != p.OK:
                return None
            view = alloc(nbytes)
            try:
                self._receive_parts(sock, view, stripe, holder, address, token, None)
            except _Vanished:
                return None
            return view

        got: memoryview | None = self._run_striped(holder, address, token, exchange)
        return got

    def _ask(self, sock: socket.socket, token: str, reply_to: str) -> tuple[int, int, int]:
        """Request ``token``: (status, length, stripe size; 0: all on ``sock``). One
        stream asks with the request every node server knows."""
        if self.streams == 1:
            sock.sendall(p.request(p.GET, token, reply_to))
            status, nbytes = p.ANSWER.unpack(p.read_exact(sock, p.ANSWER.size))
            return status, nbytes, 0
        sock.sendall(p.request(p.GET_SPLIT, token, f"{self.streams} {reply_to}"))
        return _split_answer(sock)

    def _run_striped(self, holder: str, address: str, token: str, exchange: Any) -> Any:
        """``exchange`` on a connection to the node at ``address``; a failure of
        another stream, or a node server too old for stripes, raised as such."""
        with self._session(holder, address, f"fetch object {token!r}") as run:
            try:
                return run(exchange)
            except _PartFailed as failed:
                raise failed.cause from None
            except _OldServer:
                raise StoreConnectionError(
                    f"The node server of host {_host(holder)!r} at {address} does not know "
                    f"striped transfers: an older pxexec started it. Run one pxexec version "
                    f"on every host (a node server stops once its store has been empty for "
                    f"its idle time, or stop its process), or give this store "
                    f"transfer_streams=1, which reads the old way."
                ) from None

    def _receive_parts(self, sock: socket.socket, view: memoryview, stripe: int, holder: str,
                       address: str, token: str, digests: StreamingDigests | None) -> None:
        """Fill ``view``: with ``stripe`` 0 all from ``sock``; else stream 0's stripes
        from ``sock`` and the other streams' over other connections at the same time,
        each stripe fed to ``digests`` in order as soon as it and those before it are
        in. Raises ``_Vanished`` if the object went meanwhile."""
        if not stripe:
            _receive_into(sock, view, digests)
            return
        arrived = _Arrivals(view.nbytes, stripe)
        threads = [threading.Thread(target=self._receive_stream,
                                    args=(holder, address, token, view, stripe, stream, arrived),
                                    name="pxexec-pull", daemon=True)
                   for stream in range(1, self.streams)]
        for thread in threads:
            thread.start()
        try:
            for start, n in p.stripes(view.nbytes, stripe, 0, self.streams):
                _receive_into(sock, view[start : start + n])
                arrived.mark(start)
                arrived.feed_ready(view, digests, wait=False)
            arrived.feed_ready(view, digests, wait=True)
        finally:
            for thread in threads:
                thread.join()
        if arrived.failures:  # carried past this connection's retry: not the one that failed
            failed = arrived.failures[0]
            raise failed if isinstance(failed, _Vanished) else _PartFailed(failed)

    def _receive_stream(self, holder: str, address: str, token: str, view: memoryview,
                        stripe: int, stream: int, arrived: _Arrivals) -> None:
        def exchange(sock: socket.socket) -> None:
            sock.sendall(p.request(p.PART, token, f"{stream} {self.streams} {stripe}"))
            status, length = p.ANSWER.unpack(p.read_exact(sock, p.ANSWER.size))
            if status != p.OK or length != view.nbytes:
                raise _Vanished(token)
            for start, n in p.stripes(view.nbytes, stripe, stream, self.streams):
                _receive_into(sock, view[start : start + n])
                arrived.mark(start)

        try:
            with self._session(holder, address, f"fetch object {token!r}") as run:
                run(exchange)
        except BaseException as exc:  # raised in the thread that waits for the stripes
            arrived.fail(exc)

    def evict(self, holder: str, address: str, token: str, sender: str) -> bool:
        """Free ``token`` on the node at ``address`` (which frees its copies too)."""
        def exchange(sock: socket.socket) -> bool:
            sock.sendall(p.request(p.EVICT, token, sender))
            return p.read_exact(sock, 1)[0] == p.OK

        with self._session(holder, address, f"free object {token!r}") as run:
            done: bool = run(exchange)
            return done

    def touch(self, holder: str, address: str, tokens: Sequence[str], owner: str = ""
              ) -> list[bool]:
        """Record ``owner`` (a process here) as holding ``tokens`` on the node at
        ``address`` and renew its heartbeat there (one round trip)."""
        return self.has(holder, address, tokens, op=p.TOUCH, argument=owner)

    def has(self, holder: str, address: str, tokens: Sequence[str], op: int = p.HAS,
            argument: str = "") -> list[bool]:
        """Whether the node at ``address`` still holds each of ``tokens``."""
        def exchange(sock: socket.socket) -> list[bool]:
            sock.sendall(b"".join(p.request(op, t, argument) for t in tokens))
            return [p.read_exact(sock, 1)[0] == p.OK for _ in tokens]

        with self._session(holder, address, f"check {len(tokens)} object(s)") as run:
            found: list[bool] = run(exchange)
            return found

    def close(self) -> None:
        with self._lock:
            for socks in self._idle.values():
                for sock in socks:
                    sock.close()
            self._idle.clear()


class _Arrivals:
    """Which stripes of an object have arrived; feeds them to the digests in order."""

    def __init__(self, nbytes: int, stripe: int) -> None:
        self.nbytes = nbytes
        self.stripe = stripe
        self._in = [False] * (-(-nbytes // stripe))
        self._fed = 0  # stripes fed to the digests so far
        self.failures: list[BaseException] = []
        self._changed = threading.Condition()

    def mark(self, start: int) -> None:
        with self._changed:
            self._in[start // self.stripe] = True
            self._changed.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._changed:
            self.failures.append(exc)
            self._changed.notify_all()

    def feed_ready(self, view: memoryview, digests: StreamingDigests | None, wait: bool) -> None:
        """Feed every stripe that has arrived after the last one fed; with ``wait``,
        wait for the rest (until all are in or a stream failed)."""
        while self._fed < len(self._in):
            with self._changed:
                while not self._in[self._fed]:
                    if self.failures or not wait:
                        return
                    self._changed.wait()
            start = self._fed * self.stripe
            if digests is not None:
                digests.feed(view[start : min(self.nbytes, start + self.stripe)])
            self._fed += 1


class _Vanished(Exception):
    """The object was freed on its node while its parts were on their way."""


class _OldServer(Exception):
    """The node server does not know ``GET_SPLIT`` (an older pxexec)."""


def _split_answer(sock: socket.socket) -> tuple[int, int, int]:
    """The answer to ``GET_SPLIT``: (status, length, stripe size). A server that does
    not know the request answers one byte (``UNKNOWN``; before that, OK and nothing
    more): ``_OldServer``."""
    status = p.read_exact(sock, 1)[0]
    if status == p.UNKNOWN:
        raise _OldServer
    try:
        rest = p.read_exact(sock, p.SPLIT_ANSWER.size - 1)
    except (BlockingIOError, TimeoutError):
        if status == p.OK:  # nothing after it, within the timeout
            raise _OldServer from None
        raise
    got: tuple[int, int, int] = p.SPLIT_ANSWER.unpack(bytes([status]) + rest)
    return got


class _PartFailed(Exception):
    """Receiving another part failed (``cause``): not this connection's fault."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _verified(digests: StreamingDigests, token: str, holder: str, address: str) -> bool:
    """Whether every digest of the received object matched (False: none to check);
    a mismatch raises ``DeserializationError`` naming the node that sent it."""
    try:
        return digests.result() is True
    except DeserializationError as exc:
        raise DeserializationError(
            f"The object {token!r} received from host {_host(holder)!r} at {address} "
            f"is corrupted ({exc}); it was not kept. Read it again: if the error "
            f"repeats, the copy on {_host(holder)!r} is damaged (store it again)."
        ) from None


def _receive(sock: socket.socket, token: str, into: NodeLocalStore, holder: str,
             address: str) -> bool:
    """Receive ``token`` (the answer to a ``GET``) into a new object of ``into``, see
    ``_into_store``; False if the node does not have it."""
    status, nbytes = p.ANSWER.unpack(p.read_exact(sock, p.ANSWER.size))
    if status != p.OK:
        return False
    return _into_store(token, into, nbytes, holder, address,
                       lambda view, digests: _receive_into(sock, view, digests))


def _into_store(token: str, into: NodeLocalStore, nbytes: int, holder: str, address: str,
                fill: Callable[[memoryview, StreamingDigests], None]) -> bool:
    """A new object of ``into``, filled by ``fill(buffer, digests)``, and sealed,
    verifying the large frames' XXH3 digests piece by piece as they arrive: a corrupted
    object is aborted (never sealed) and raises ``DeserializationError`` naming the
    node that sent it; one freed on its node meanwhile (``_Vanished``) gives False."""
    try:
        incoming = into.new_object(token, nbytes)
    except OSError as exc:
        if isinstance(exc, PxexecError):
            raise
        raise StoreIOError(
            f"Could not make a copy on this host of the object {token!r} of {nbytes} "
            f"bytes from host {_host(holder)!r}: {exc.strerror or exc}."
        ) from exc
    try:
        digests = StreamingDigests(nbytes)
        view = incoming.buffer
        fill(view, digests)
        del view
        incoming.seal(verified=_verified(digests, token, holder, address))
    except _Vanished:
        incoming.abort()
        return False
    except BaseException:
        incoming.abort()
        raise
    return True


def _timed_out(exc: BaseException) -> bool:
    # BlockingIOError: a kernel timeout (SO_RCVTIMEO/SO_SNDTIMEO) ran out
    return isinstance(exc, (socket.timeout, TimeoutError, BlockingIOError))


def _describe(exc: BaseException, timeout: float) -> str:
    if _timed_out(exc):
        return f"no answer within {timeout:g} s"
    return str(exc) or type(exc).__name__


def _receive_into(sock: Any, view: memoryview, digests: StreamingDigests | None = None
                  ) -> None:
    """Fill ``view`` from ``sock`` in chunks (recv_into: no intermediate copy), feeding
    each piece to ``digests`` right after it arrives (while it is in cache)."""
    pos, nbytes = 0, view.nbytes
    while pos < nbytes:
        got = sock.recv_into(view[pos : pos + CHUNK])
        if not got:
            raise ConnectionError("the node server closed the connection mid-object")
        if digests is not None:
            digests.feed(view[pos : pos + got])
        pos += got
