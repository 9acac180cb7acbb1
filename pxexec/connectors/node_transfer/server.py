"""The node server: one daemon per node and store directory (see the package doc).

``ensure_server(store)`` returns the address of this node's server, starting it if
none runs: under a lock file in the store directory, the caller binds the listening
socket (on the previous port when restarting, so keys made earlier stay valid) and
hands it to a new daemon process (``python -m pxexec.connectors.node_transfer.server``),
which then outlives the caller.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pxexec.connectors.node_transfer.protocol as p
from pxexec.connectors.node_transfer import replicas
from pxexec.connectors.private_dir import ensure_private_directory

__all__ = ["ensure_server", "server_pid", "stop_server"]

log = logging.getLogger("pxexec.node_server")
STATE = ".node-server.json"
LOCK = ".node-server.lock"
COPIES = ".copies"  # on the holder: token -> addresses of node servers holding a copy
REPLICAS = ".replicas"  # on a copy's node: token -> "holder-tag address" of its origin
#: seconds a pooled connection may stay idle between requests before the server closes it
IDLE_CONNECTION = 600.0
#: the least time a reader may take no bytes before the server gives up on it (a reader
#: reserves the object's space after the answer's header, which may take a while)
SEND_GRACE = 30.0


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    with open(os.path.join(path, LOCK), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read_state(path: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(path, STATE)) as f:
            state: dict[str, Any] = json.load(f)
            return state
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"node_transfer.server" in f.read()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return sys.platform != "linux"


def server_pid(path: str) -> int | None:
    """The pid of the node server of the store at ``path``, if one runs."""
    state = _read_state(path)
    if state and _alive(int(state["pid"])):
        return int(state["pid"])
    return None


def stop_server(path: str, timeout: float = 5.0) -> None:
    """Stop the node server of the store at ``path`` (tests and tools)."""
    pid = server_pid(path)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def ensure_server(store: Any, bind: str) -> str:
    """The ``ip:port`` of this node's server for ``store``, started if none runs."""
    path = store.path
    state = _read_state(path)
    if state and _alive(int(state["pid"])):
        return str(state["address"])
    with _locked(path):
        state = _read_state(path)
        if state and _alive(int(state["pid"])):
            return str(state["address"])
        port = 0
        if state and str(state.get("address", "")).startswith(bind + ":"):
            port = int(state["address"].rpartition(":")[2])
        try:
            listener = socket.create_server((bind, port), backlog=128)
        except OSError:
            listener = socket.create_server((bind, 0), backlog=128)
        address = f"{bind}:{listener.getsockname()[1]}"
        try:
            logfile = open(os.path.join(path, ".node-server.log"), "ab")  # noqa: SIM115
            proc = subprocess.Popen(
                [sys.executable, "-m", "pxexec.connectors.node_transfer.server",
                 json.dumps(store.config()), str(listener.fileno()), address],
                pass_fds=[listener.fileno()], stdin=subprocess.DEVNULL, stdout=logfile,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )
            logfile.close()
        finally:
            listener.close()
        temp = os.path.join(path, f"{STATE}.{os.getpid()}.tmp")
        with open(temp, "w") as f:
            json.dump({"pid": proc.pid, "address": address}, f)
        os.replace(temp, os.path.join(path, STATE))
        return address


# -- the daemon -------------------------------------------------------------------------

class NodeServer:
    """Serves one store's objects on a listening socket (runs in the daemon)."""

    def __init__(self, store: Any, listener: socket.socket, address: str) -> None:
        self.store = store
        self.listener = listener
        self.address = address
        self.secret = store.transfer_secret()
        self.send_timeout = max(SEND_GRACE, 4 * float(store.transfer_timeout))
        self.active = 0
        self._lock = threading.Lock()
        self.stopped = threading.Event()

    def serve(self) -> None:
        threading.Thread(target=self._accept, daemon=True, name="accept").start()
        self._housekeep()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # a peer that takes (or sends) no bytes for long mid-request has gone (a
            # reader gives up after its transfer timeout): what it pinned is let go
            p.kernel_timeouts(conn, self.send_timeout)
            with self._busy():
                p.handshake_server(conn, self.secret)
            # between requests a pooled connection may stay idle much longer
            p.kernel_timeouts(conn, self.send_timeout, receive=IDLE_CONNECTION)
            while True:
                req = p.read_request(conn)
                if req is None:
                    return
                with self._busy():
                    self._answer(conn, *req)
        except (OSError, ConnectionError) as exc:
            log.debug("connection ended: %s", exc)
        finally:
            conn.close()

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        """Counts a request being answered (an idle pooled connection is not one: it
        does not keep an empty store's server from stopping)."""
        with self._lock:
            self.active += 1
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1

    def _answer(self, conn: socket.socket, op: int, token: str, argument: str) -> None:
        if op in (p.GET, p.GET_SPLIT, p.PART):
            self._send_object(conn, op, token, argument)
        elif op == p.EVICT:
            self._evict(conn, token, argument)
        elif op == p.HAS:
            conn.sendall(bytes([p.OK if self.store.has_local(token) else p.MISSING]))
        elif op == p.TOUCH:  # an owner elsewhere holds it: recorded here, with heartbeat
            try:
                found = self.store.hold_for(argument, [token])[0]
            except (OSError, KeyError, ValueError) as exc:
                log.debug("could not record %s for %r: %s", token, argument, exc)
                found = False
            conn.sendall(bytes([p.OK if found else p.MISSING]))
        elif op == p.PING:
            conn.sendall(bytes([p.OK]))
        else:  # a newer client's request: say so (it falls back, or says what to do)
            conn.sendall(bytes([p.UNKNOWN]))

    def _evict(self, conn: socket.socket, token: str, skip: str) -> None:
        """Free ``token`` here and answer; its copies on other nodes are freed after, in
        another thread, so that one that does not answer holds up no request of this
        connection."""
        copies = replicas.free_local(self.store, token)
        conn.sendall(bytes([p.OK]))
        if copies:
            threading.Thread(target=self._free_copies, args=(token, copies, skip),
                             name="pxexec-free", daemon=True).start()

    def _free_copies(self, token: str, copies: set[str], skip: str) -> None:
        with self._busy():
            replicas.free_copies(self.store, token, copies, skip)

    def _send_object(self, conn: socket.socket, op: int, token: str, argument: str) -> None:
        """Answer ``GET`` (the whole object), ``GET_SPLIT`` (stream 0 of its stripes) or
        ``PART`` (another stream's stripes), see ``protocol``; a malformed request is
        answered MISSING."""
        split = op == p.GET_SPLIT
        missing = p.SPLIT_ANSWER.pack(p.MISSING, 0, 0) if split else p.ANSWER.pack(p.MISSING, 0)
        stream, streams, stripe, reply_to = 0, 1, 0, argument  # GET: all, on this connection
        if op != p.GET:
            numbers = p.parse_numbers(argument, 3 if op == p.PART else 1)
            if numbers is None:
                conn.sendall(missing)
                return
            if op == p.PART:
                (stream, streams, stripe), reply_to = numbers, ""
            else:
                streams, reply_to = numbers[0], argument.partition(" ")[2]
            if not 1 <= streams <= p.MAX_STREAMS or stream >= streams or (
                    op == p.PART and stripe <= 0):
                conn.sendall(missing)
                return
        ranged = getattr(self.store, "sealed_range", None)  # (fd, offset, length, hold)
        sealed = ranged(token) if ranged is not None else self.store.sealed_file(token)
        if sealed is None:
            conn.sendall(missing)
            return
        fd, offset, length = sealed[:3]
        try:
            if split:
                stripe = p.stripe_size(length, streams)
            if reply_to and reply_to != self.address:  # who to tell when it is freed
                _append_line(os.path.join(self.store.path, COPIES, token), reply_to)
            conn.sendall(p.SPLIT_ANSWER.pack(p.OK, length, stripe) if split
                         else p.ANSWER.pack(p.OK, length))
            ranges = p.stripes(length, stripe, stream, streams) if stripe else [(0, length)]
            for start, count in ranges:
                if fd < 0:  # a small object, copied out of the store: its bytes
                    conn.sendall(memoryview(sealed[3])[start : start + count])
                else:
                    p.send_range(conn, fd, offset + start, count)
        finally:
            if fd >= 0:
                os.close(fd)
            del sealed  # unpins the range (an arena's hold)

    def _housekeep(self) -> None:
        idle_since = time.monotonic()
        last_check = last_reap = 0.0
        lease = self.store.lease
        replica_lease = float(self.store.replica_lease)
        while not self.stopped.wait(0.5):
            if not os.path.isdir(self.store.path):
                return  # the store was removed: nothing left to serve
            now = time.monotonic()
            if now - last_check > replica_lease / 3:
                last_check = now
                self.check_replicas()
            if lease and now - last_reap > lease / 3:
                last_reap = now
                with contextlib.suppress(Exception):
                    self.store.reap()
            with self._lock:
                busy = self.active > 0
            if busy or self.store.keys():
                idle_since = now
            elif now - idle_since > self.store.idle:
                with _locked(self.store.path):
                    if _read_state(self.store.path) and not self.store.keys():
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(self.store.path, STATE))
                        return
                idle_since = now

    def check_replicas(self) -> None:
        """Drop copies whose origin no longer has them, or whose origin has not
        answered for longer than ``replica_lease``; renew the others."""
        directory = os.path.join(self.store.path, REPLICAS)
        by_origin: dict[tuple[str, str], list[str]] = {}
        for token in _listdir(directory):
            try:
                with open(os.path.join(directory, token)) as f:
                    holder, _, address = f.read().strip().partition(" ")
            except OSError:
                continue
            by_origin.setdefault((holder, address), []).append(token)
        client = self.store.transfer_client()
        for (holder, address), tokens in by_origin.items():
            try:
                present = client.has(holder, address, tokens)
            except ConnectionError as exc:
                for token in tokens:
                    sidecar = os.path.join(directory, token)
                    with contextlib.suppress(OSError):
                        if time.time() - os.stat(sidecar).st_mtime > self.store.replica_lease:
                            log.warning("copy %s expired: origin %s unreachable (%s)",
                                        token, holder, exc)
                            self.store.drop_copy(token)
                continue
            for token, there in zip(tokens, present):
                if there:
                    with contextlib.suppress(OSError):
                        os.utime(os.path.join(directory, token))
                else:
                    self.store.drop_copy(token)


def _append_line(path: str, line: str) -> None:
    ensure_private_directory(os.path.dirname(path))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def main(argv: list[str]) -> int:
    from pxexec.connectors import connector_from_config

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    config, fd, address = json.loads(argv[0]), int(argv[1]), argv[2]
    store = connector_from_config(config)
    store.serving = True
    listener = socket.socket(fileno=fd)
    server = NodeServer(store, listener, address)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: server.stopped.set())
    server.serve()
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
