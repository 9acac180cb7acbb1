"""What a store holds: every object with its size, age, owners and lease.

``stored_objects(connector)`` lists the objects of one connector (for a MultiConnector,
of each active route); ``usage(objects)`` adds them up. ``pxexec ls`` and ``pxexec du``
print the same, per namespace, in human form or as JSON. Nothing here reads an object's
data: sizes come from the index (node, shm), file sizes (file, shm-files), ``STRLEN``
(Redis) or the stored bytes (local).

>>> from pxexec import Store
>>> from pxexec.connectors.local import LocalConnector
>>> store = Store("usage-demo", LocalConnector())
>>> key = store.put(bytes(1000))
>>> [(o.key == key, o.nbytes > 1000) for o in stored_objects(store.connector)]
[(True, True)]
>>> usage(stored_objects(store.connector)).objects
1
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pxexec.units import format_bytes

__all__ = ["StoredObject", "Usage", "format_age", "stored_objects", "usage"]


@dataclass(frozen=True)
class StoredObject:
    """One stored object as its backend describes it.

    ``age`` is seconds since it was written (``None`` where the backend cannot tell,
    as Redis); ``owners`` the processes holding a lease on it (``host-pid-token``);
    ``expires_in`` seconds until its lease or TTL runs out (``None``: never expires).

    >>> StoredObject("k", 2_000_000, age=3.0).describe()["size"]
    '2 MB'
    """

    key: str
    nbytes: int
    age: float | None = None
    owners: tuple[str, ...] = ()
    expires_in: float | None = None
    namespace: str = ""

    def describe(self) -> dict[str, Any]:
        """The object as a row: human-readable fields next to the raw ones."""
        return {**dataclasses.asdict(self), "owners": list(self.owners),
                "size": format_bytes(self.nbytes), "age_text": format_age(self.age),
                "lease": _lease_text(self.expires_in)}


@dataclass
class Usage:
    """Objects and bytes in total, per namespace and per owner.

    >>> u = usage([StoredObject("a", 10, age=5.0, owners=("p1",)), StoredObject("b", 5)])
    >>> u.objects, u.nbytes, u.oldest, u.by_owner
    (2, 15, 5.0, {'p1': [1, 10], '(no lease)': [1, 5]})
    """

    objects: int = 0
    nbytes: int = 0
    oldest: float | None = None
    by_namespace: dict[str, list[int]] = field(default_factory=dict)
    by_owner: dict[str, list[int]] = field(default_factory=dict)


def usage(objects: Iterable[StoredObject]) -> Usage:
    """Add ``objects`` up: counts and bytes in total, per namespace and per owner.

    >>> usage([StoredObject("a", 10, namespace="n1"), StoredObject("b", 5, namespace="n1")])
    ... # doctest: +ELLIPSIS
    Usage(objects=2, nbytes=15, oldest=None, by_namespace={'n1': [2, 15]}, ...)
    """
    total = Usage()
    for obj in objects:
        total.objects += 1
        total.nbytes += obj.nbytes
        if obj.age is not None and (total.oldest is None or obj.age > total.oldest):
            total.oldest = obj.age
        for table, name in ((total.by_namespace, obj.namespace),
                            *((total.by_owner, o) for o in obj.owners or ("(no lease)",))):
            entry = table.setdefault(name, [0, 0])
            entry[0] += 1
            entry[1] += obj.nbytes
    return total


def stored_objects(connector: Any, lease: float | None = None) -> list[StoredObject]:
    """Every object ``connector`` holds, with what its backend knows about it.

    File and shm connectors: file sizes and modification times; owners and lease
    deadlines from the lease directories. Redis: sizes (``STRLEN`` of every part) and
    TTLs in one pipeline. Local: the stored bytes. Multi: each active route, keys
    prefixed with the route's name as the route's keys are. ``lease``: the lease period
    of a file or shm store's processes, when the connector was made without it (a
    connector made with a lease reaps expired objects as it starts: a listing made that
    way would delete what it lists).

    >>> import tempfile
    >>> from pxexec.connectors.file import FileConnector
    >>> connector = FileConnector(tempfile.mkdtemp(), namespace="usage-doc")
    >>> key = connector.put([bytes(2_000)])
    >>> [(o.nbytes, o.namespace, o.owners) for o in stored_objects(connector)]
    [(2000, 'usage-doc', ())]
    """
    from pxexec.connectors.file import FileConnector
    from pxexec.connectors.local import LocalConnector
    from pxexec.connectors.multi import MultiConnector
    from pxexec.connectors.node import NodeConnector
    from pxexec.connectors.redis import RedisConnector

    if isinstance(connector, NodeConnector):
        return _node_objects(connector, connector.lease if lease is None else lease)
    if isinstance(connector, FileConnector):
        return _file_objects(connector, connector.lease if lease is None else lease)
    if isinstance(connector, RedisConnector):
        return _redis_objects(connector)
    if isinstance(connector, LocalConnector):
        return [StoredObject(k, len(v), namespace=connector.instance)
                for k, v in list(connector._data.items())]
    if isinstance(connector, MultiConnector):
        found = []
        for route in connector.routes:
            if route.active:
                found += [dataclasses.replace(o, key=f"{route.name}:{o.key}",
                                              namespace=f"{route.name}/{o.namespace}")
                          for o in stored_objects(route.connector)]
        return found
    listed = connector.keys()
    return [StoredObject(k, -1) for k in listed]  # sizes unknown: -1


def _file_objects(connector: Any, lease: float | None) -> list[StoredObject]:
    now = time.time()
    holders: dict[str, list[str]] = {}
    deadline: dict[str, float] = {}
    from pxexec.connectors.owners import OWNER, read_record
    from pxexec.connectors.private_dir import open_private_directory

    try:
        leases_fd = open_private_directory(connector.leases, create=False)
    except (OSError, PermissionError):
        leases_fd = None  # no owner records (yet): nobody holds anything
    if leases_fd is not None:
        try:
            for owner in os.listdir(leases_fd):
                if not OWNER.fullmatch(owner):
                    continue
                try:  # the record's modification time is its owner's heartbeat
                    beat = os.stat(owner, dir_fd=leases_fd, follow_symlinks=False).st_mtime
                except FileNotFoundError:
                    continue
                for name in read_record(owner, leases_fd):
                    holders.setdefault(name, []).append(owner)
                    deadline[name] = max(deadline.get(name, 0.0), beat + (lease or 0.0))
        finally:
            os.close(leases_fd)
    found = []
    listed = connector.keys()
    for key in listed:
        try:
            st = os.stat(connector.path_of(key))
        except FileNotFoundError:
            continue  # evicted meanwhile
        token = key.partition("@")[0]  # owner records list this host's tokens
        expires = None
        if lease is not None:
            expires = deadline.get(token, st.st_mtime + lease) - now
        found.append(StoredObject(key, st.st_size, now - st.st_mtime,
                                  tuple(sorted(holders.get(token, ()))), expires,
                                  connector.namespace))
    return found


def _node_objects(connector: Any, lease: float | None) -> list[StoredObject]:
    """The node store's sealed objects from its index: lengths, ages, holders, leases.

    A held object expires a lease after its newest holder's heartbeat, one nobody
    holds a lease after it was written (as ``NodeConnector.reap`` decides).
    """
    now = time.time()
    with connector.arena.index.transaction() as db:
        rows = db.execute("SELECT key, length, created FROM objects "
                          "WHERE state = 'sealed' AND key IS NOT NULL").fetchall()
        holds = db.execute("SELECT holds.key, holds.owner, owners.beat FROM holds "
                           "LEFT JOIN owners ON owners.owner = holds.owner").fetchall()
    holders: dict[str, list[str]] = {}
    beats: dict[str, float] = {}
    for key, owner, beat in holds:
        holders.setdefault(key, []).append(owner)
        if beat is not None:
            beats[key] = max(beats.get(key, 0.0), float(beat))
    suffix_of = getattr(connector, "key_suffix", None)  # keys name their node (HostKeys)
    suffix = suffix_of() if callable(suffix_of) else ""
    found = []
    for key, length, created in rows:
        expires = None
        if lease is not None:
            expires = beats.get(key, float(created)) + lease - now
        found.append(StoredObject(key + suffix, int(length), now - float(created),
                                  tuple(sorted(holders.get(key, ()))), expires,
                                  connector.namespace))
    return found


def _redis_objects(connector: Any) -> list[StoredObject]:
    keys = connector.keys()
    if not keys:
        return []
    parts = [connector._parts(k) for k in keys]
    with connector._errors("describe objects"):
        pipe = connector.client.pipeline(transaction=False)
        for names in parts:
            for name in names:
                pipe.strlen(name)
            pipe.pttl(names[0])
        answers = pipe.execute()
    found = []
    i = 0
    for key, names in zip(keys, parts):
        sizes = answers[i:i + len(names)]
        ttl = answers[i + len(names)]
        i += len(names) + 1
        found.append(StoredObject(key, int(sum(sizes)), None, (),
                                  ttl / 1000 if ttl is not None and ttl >= 0 else None,
                                  connector.prefix))
    return found


def format_age(seconds: float | None) -> str:
    """``12 s``, ``3.5 min``, ``2.1 h``, ``4.0 d``; ``-`` when unknown.

    >>> format_age(12.3), format_age(210), format_age(7560), format_age(None)
    ('12 s', '3.5 min', '2.1 h', '-')
    """
    if seconds is None:
        return "-"
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds:.0f} s"


def _lease_text(expires_in: float | None) -> str:
    if expires_in is None:
        return "none"
    if expires_in < 0:
        return f"expired {format_age(-expires_in)} ago"
    return f"{format_age(expires_in)} left"


def rows(objects: Sequence[StoredObject]) -> list[list[str]]:
    """``pxexec ls`` rows: key, size, age, owners, lease."""
    return [[o.namespace, o.key, format_bytes(o.nbytes) if o.nbytes >= 0 else "?",
             format_age(o.age), ",".join(o.owners) or "-", _lease_text(o.expires_in)]
            for o in objects]
