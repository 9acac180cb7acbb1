"""Copies of other nodes' objects in this node's store: pulled once, freed with their origin.

Works on any store that provides the seam (``pxexec.connectors.node_transfer.seam``)
plus ``transfer_client()``, ``server_address()`` and ``known_address()``. State lives in
the store's private directory ``path``:

- ``.pulls/<token>``: a lock file held while this node copies ``token`` (other local
  readers wait on it, then map the copy; frees wait on it too);
- ``.replicas/<token>``: this node holds a copy of ``token``; the file says the origin
  (``holder-tag address``), and its modification time is the copy's last renewal;
- ``.copies/<token>``: on the origin, the node servers that pulled a copy of ``token``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from typing import Any

from pxexec.codec.frames import writable_copy
from pxexec.connectors.private_dir import ensure_private_directory
from pxexec.errors import StoreIOError

__all__ = ["after_pull", "drop_copy", "free_copies", "free_here", "free_local", "fresh",
           "pull", "pull_many"]

log = logging.getLogger("pxexec")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def pull(store: Any, token: str, holder: str, address: str) -> list[Any] | None:
    """Copy ``token`` from ``holder`` into ``store`` (this node), once per node.

    Returns ``[buffer]`` (the bytes, for this reader), ``[]`` when the holder does not
    have it, or None when another local reader made the copy meanwhile (read it from
    the store). A store with ``receive_in_place`` receives straight into a new object
    (``recv_into``); otherwise the bytes arrive in huge-page memory, the reader gets a
    copy of its own, and the node's copy is written from a background thread that holds
    the pull lock until it is sealed (filling a new file costs page faults)."""
    pulls = os.path.join(store.path, ".pulls")
    replicas = os.path.join(store.path, ".replicas")
    for directory in (pulls, replicas):
        ensure_private_directory(directory)  # 0700, ours, never a symlink
    reply_to = store.server_address()  # frees of the origin reach our copy
    lock_path = os.path.join(pulls, token)
    lock = open(lock_path, "a")  # noqa: SIM115 - may be handed to the writer thread
    handed = False
    sidecar = os.path.join(replicas, token)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if store.has_local(token):
            return None
        with open(sidecar, "w") as f:
            f.write(f"{holder} {address}")
        client = store.transfer_client()
        if getattr(store, "receive_in_place", False):
            try:
                found = client.pull(holder, address, [token], store, reply_to)[0]
            except StoreIOError as exc:  # no copy here (no room): this reader's only
                _unlink(sidecar)
                log.warning("pxexec: could not keep a copy of %s from %s on this node "
                            "(%s); read without keeping one", token, holder, exc)
                data = client.fetch(holder, address, token, "")
                return [] if data is None else [data]
            if not found:
                _unlink(sidecar)
                return []
            return None
        data = client.fetch(holder, address, token, reply_to)
        if data is None:
            _unlink(sidecar)
            return []
        mine = writable_copy(data)  # the reader may change its buffer at once
        _FRESH[(store.path, token)] = data.toreadonly()
        threading.Thread(target=_keep, args=(store, token, data, lock, lock_path),
                         name="pxexec-copy").start()
        handed = True
        return [mine]
    except BaseException:
        _unlink(sidecar)
        raise
    finally:
        if not handed:
            _unlink(lock_path)
            lock.close()


def pull_many(store: Any, tokens: list[str], holder: str, address: str) -> None:
    """Copy several objects of one node into ``store``, pipelined on one connection
    (``recv_into`` new objects: for small objects, page faults cost little). Objects
    the holder lacks are skipped; concurrent copies of one object are harmless (each
    is written to its own temporary file and renamed into place)."""
    replicas = os.path.join(store.path, ".replicas")
    ensure_private_directory(replicas)  # 0700, ours, never a symlink
    reply_to = store.server_address()
    for token in tokens:
        with open(os.path.join(replicas, token), "w") as f:
            f.write(f"{holder} {address}")
    try:
        found = store.transfer_client().pull(holder, address, tokens, store, reply_to)
    except BaseException as exc:
        for token in tokens:
            if not store.has_local(token):
                _unlink(os.path.join(replicas, token))
        if isinstance(exc, StoreIOError):  # no room here: each is read on its own
            log.warning("pxexec: could not keep copies of %d objects of %s here: %s",
                        len(tokens), holder, exc)
            return
        raise
    for token, there in zip(tokens, found):
        if not there:
            _unlink(os.path.join(replicas, token))


def _keep(store: Any, token: str, data: memoryview, lock: Any, lock_path: str) -> None:
    try:
        write = getattr(store, "write_object", None)
        if write is not None:
            write(token, [data])
        else:
            incoming = store.new_object(token, data.nbytes)
            try:
                incoming.buffer[:] = data
                incoming.seal()
            except BaseException:
                incoming.abort()
                raise
    except Exception as exc:
        _unlink(os.path.join(store.path, ".replicas", token))
        log.warning("pxexec: could not keep this node's copy of %s: %s", token, exc)
    finally:
        _FRESH.pop((store.path, token), None)
        _unlink(lock_path)
        lock.close()


#: bytes received by this process whose node copy is still being written: other
#: readers in this process copy them instead of waiting for the copy to be sealed
_FRESH: dict[tuple[str, str], memoryview] = {}


def fresh(store: Any, token: str) -> memoryview | None:
    """A private copy of ``token`` if this process is still writing the node's copy."""
    data = _FRESH.get((store.path, token))
    return None if data is None else writable_copy(data)


def after_pull(store: Any, token: str) -> None:
    """Wait until a copy of ``token`` being written on this node is sealed, so that a
    free cannot race the writer (and leave the copy behind)."""
    try:
        lock = open(os.path.join(store.path, ".pulls", token))  # noqa: SIM115
    except FileNotFoundError:
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)


def drop_copy(store: Any, token: str) -> None:
    """Remove this node's copy of another node's object, and its record."""
    after_pull(store, token)
    store.remove_local(token)
    _unlink(os.path.join(store.path, ".replicas", token))


def free_here(store: Any, token: str, skip: str = "") -> None:
    """Free ``token`` on this node and every copy other nodes pulled of it (except at
    ``skip``, the node that asked): ``free_local`` then ``free_copies``."""
    free_copies(store, token, free_local(store, token), skip)


def free_local(store: Any, token: str) -> set[str]:
    """Free ``token`` on this node; the addresses of the nodes that pulled a copy of it
    (their record goes with it)."""
    drop_copy(store, token)
    record = os.path.join(store.path, ".copies", token)
    try:
        with open(record) as f:
            copies = {line.strip() for line in f if line.strip()}
    except FileNotFoundError:
        return set()
    _unlink(record)
    return copies


def free_copies(store: Any, token: str, copies: set[str], skip: str = "") -> None:
    """Free the copies of ``token`` at ``copies`` (node server addresses; not ``skip``
    nor this node). Copies on nodes that do not answer are logged; they expire within
    their node's ``replica_lease`` (their origin no longer has them)."""
    me = store.known_address()
    for address in sorted(copies - {skip, me, ""}):
        try:
            store.transfer_client().evict(address, address, token, me)
        except ConnectionError as exc:
            log.warning("pxexec: could not free the copy of %s at %s: %s; it expires "
                        "within that node's replica_lease", token, address, exc)
