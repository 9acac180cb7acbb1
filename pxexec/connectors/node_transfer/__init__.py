"""Direct node-to-node transfer for node-local stores.

A proxy's key names the node that holds its object and the address of that node's
*node server* (``token@host~boot@ip:port``). A reader on the holding node maps the
object as before. A reader on another node pulls it once, straight from the holding
node, into its own node's store (other readers there then map that local copy): the
holder streams the object out of its store with ``sendfile``; the reader receives it
with ``recv_into`` straight into a new object of its own store, then seals it. No
central server carries the bytes.

**The node server** is one daemon per node and store directory, started on demand by
the first process of the node that stores an object (it binds the listening socket
itself, so the address is known at once, and hands it to the daemon). It serves the
node's objects, forwards evictions to the nodes that hold copies, expires copies whose
origin is gone or unreachable for longer than ``replica_lease``, and reaps expired
leases. It outlives the process that started it (objects owned by others stay
readable) and stops on its own once the store directory is removed, or when the
store has been empty for ``idle`` seconds.

**Protocol** (``protocol``): length-prefixed requests over TCP; with a store secret,
each connection starts with a mutual HMAC-SHA256 challenge. Requests on one
connection are answered in order, so many small objects are pipelined.

**The seam to the local store** (what a node-local connector provides; the
file-per-object ``shm-files``/``file`` connectors do, and so does the node store
``shm``/``node``, see ``pxexec.connectors.node.hosts``):

- ``sealed_file(token) -> (fd, offset, length) | None``: a sealed object's bytes as a
  file range (for ``sendfile``); the caller closes ``fd``. Or, preferred when present,
  ``sealed_range(token) -> (fd, offset, length, hold) | None``: the same plus ``hold``,
  which keeps the range from being reused until dropped (an arena's pin); ``fd`` -1
  means: send ``hold``'s bytes (a small object copied out);
- ``new_object(token, nbytes) -> Incoming``: a writable buffer of ``nbytes``
  (``Incoming.buffer``) to ``recv_into``, then ``Incoming.seal()`` publishes it under
  ``token`` atomically (for files: a temporary file renamed into place) or
  ``Incoming.abort()`` drops it. ``TransferClient.pull`` checks the XXH3 digests of
  large frames as the pieces arrive (``pxexec.codec.streaming``): a corrupted object
  is aborted, a verified one sealed with ``seal(verified=True)``;
- ``remove_local(token)``: unlink the local object; ``has_local(token)``;
- ``path``: a private directory of the store for the node server's state files;
- optional: ``write_object(token, frames)`` (a faster way to publish received bytes)
  and ``receive_in_place`` (True: ``recv_into`` ``new_object`` directly, for stores whose
  new objects are already-mapped memory, such as an arena; False: receive into
  huge-page memory, hand the reader a copy, write the node's copy in the background);
- ``transfer_client()``, ``server_address()``, ``known_address()``: given by
  ``FileConnector`` for its subclasses.

``replicas`` holds the logic on top of the seam (pull once per node, free with the
origin, the records of copies); ``server`` and ``client`` the two ends of the wire.

Ownership spans nodes: freeing an object anywhere frees it and every copy.
"""

from __future__ import annotations

from pxexec.connectors.node_transfer.client import TransferClient
from pxexec.connectors.node_transfer.seam import Incoming, NodeLocalStore

__all__ = ["Incoming", "NodeLocalStore", "TransferClient"]
