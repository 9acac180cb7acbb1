"""DAOS connector (pydaos): objects in a named dictionary of a DAOS container.

Uses pydaos' Python container API: ``DCont(pool, cont)``, a named ``DDict`` opened
with ``cont.get(name)`` (created with ``cont.dict(name)`` the first time), and its
``put``/``get``/``bput``/``bget``/``pop``. Keys are namespaced (``namespace:token``);
values over ``max_value`` bytes are split into parts. With ``lease`` set, objects
carry lease metadata like the file connector's: an owner heartbeat entry, renewed
once per interval, and a reaper that removes objects of owners that stopped.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from typing import Any

from pxexec.connectors.base import BaseConnector, Buffer, ConnectorConfig, check_options, new_token
from pxexec.errors import ConfigError, MissingDependencyError, MissingKeyError, StoreConnectionError

MAX_VALUE = 64 * 1024 * 1024  # stay well under DAOS per-value and RPC limits
_HOW = (
    "pydaos ships with DAOS and is not on PyPI: load the DAOS environment of your system "
    "(e.g. module load daos) so that 'import pydaos' works."
)


#: DAOS handles inherited through fork: never used nor closed by the child
_INHERITED: list[Any] = []


def _pydaos() -> Any:
    try:
        import pydaos
    except ImportError as exc:
        raise MissingDependencyError("pydaos", "daos", "The DAOS connector", _HOW) from exc
    return pydaos


__all__ = ["DAOSConnector"]


class DAOSConnector(BaseConnector):
    """Stores objects in the DDict ``dict_name`` of container ``container`` in ``pool``.

    Needs ``pydaos``, which ships with DAOS (not on PyPI). Values larger than
    ``max_value`` are split over several entries.

    >>> from pxexec import Store
    >>> store = Store("daos-demo", DAOSConnector("tank", "pxexec-objects"))  # doctest: +SKIP
    >>> store.get(store.put({"a": 1}))                                       # doctest: +SKIP
    {'a': 1}
    """

    type_name = "daos"

    def __init__(
        self, pool: str, container: str, *, namespace: str = "pxexec",
        dict_name: str = "pxexec", max_value: int = MAX_VALUE, lease: float | None = None,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", namespace):
            raise ConfigError(f"DAOS namespace {namespace!r} must be a plain name.")
        if max_value < 1024:
            raise ConfigError("max_value must be at least 1024 bytes.")
        self.pool, self.container = pool, container
        self.namespace, self.dict_name = namespace, dict_name
        self.max_value = max_value
        if lease is not None and (isinstance(lease, bool) or not isinstance(lease, (int, float))
                                  or not 0 < lease < float("inf")):
            raise ConfigError(f"lease must be a positive number of seconds, got {lease!r}.")
        self.lease = lease
        self._dict: Any = None
        self._pid = os.getpid()

    @property
    def lease_seconds(self) -> float | None:
        return self.lease

    @property
    def tracks_owners(self) -> bool:
        """Holders are recorded (in lease entries) only with a lease."""
        return self.lease is not None

    @property
    def ddict(self) -> Any:
        """The pydaos dictionary, opened on first use (created if missing).

        A forked child opens its own and never closes its parent's (kept referenced).
        """
        if self._dict is not None and self._pid != os.getpid():
            _INHERITED.append(self._dict)
            self._dict = None
        if self._dict is None:
            self._pid = os.getpid()
            pydaos = _pydaos()
            try:
                cont = pydaos.DCont(self.pool, self.container)
            except Exception as exc:
                raise StoreConnectionError(
                    f"Could not open DAOS container {self.container!r} in pool "
                    f"{self.pool!r}: {exc}. Check that the pool and container exist and "
                    "that the DAOS agent is running on this node."
                ) from exc
            try:
                self._dict = cont.get(self.dict_name)
            except Exception:  # pydaos raises DObjNotFound for a missing name
                self._dict = cont.dict(self.dict_name)
        return self._dict

    # -- keys: "namespace:token", parts "namespace:token#i", the part count in a
    # small "namespace:token#n" entry only for split values -----------------------

    def _ours(self, key: str) -> bool:
        return key.startswith(self.namespace + ":") and "#" not in key

    def put(self, frames: Sequence[Buffer]) -> str:
        key = self.new_key(0)
        self._write(key, frames)
        return key

    def new_key(self, nbytes: int) -> str:
        return f"{self.namespace}:{new_token()}"

    def put_at(self, key: str, frames: Sequence[Buffer]) -> None:
        if not self._ours(key):
            raise KeyError(f"{key!r} is not a key of this DAOS connector.")
        self._write(key, frames)

    def _write(self, key: str, frames: Sequence[Buffer]) -> None:
        data = b"".join(frames)  # pydaos takes one bytes value per key
        if len(data) <= self.max_value:
            entries = {key: data}
        else:
            chunks = [data[i : i + self.max_value] for i in range(0, len(data), self.max_value)]
            entries = {f"{key}#{i}": c for i, c in enumerate(chunks)}
            entries[key] = b"PXPARTS" + str(len(chunks)).encode()
        if self.lease is not None:
            entries[f"{key}#t"] = str(time.time()).encode()
        self.ddict.bput(entries)

    def get(self, key: str) -> Buffer | None:
        if not self._ours(key):
            return None
        try:
            value = self.ddict.get(key)
        except KeyError:
            return None
        if value is None:
            return None
        if value.startswith(b"PXPARTS"):
            count = int(value[7:])
            parts: dict[str, bytes | None] = {f"{key}#{i}": None for i in range(count)}
            self.ddict.bget(parts)
            chunks = [parts[f"{key}#{i}"] for i in range(count)]
            if any(c is None for c in chunks):
                return None
            return b"".join(c for c in chunks if c is not None)
        return value

    def get_batch(self, keys: Sequence[str]) -> list[Buffer | None]:
        ours = {k: None for k in keys if self._ours(k)}
        if ours:
            self.ddict.bget(ours)
        results: list[Buffer | None] = []
        for key in keys:
            value = ours.get(key)
            if value is not None and value.startswith(b"PXPARTS"):
                value = self.get(key)
            results.append(value)
        return results

    def put_batch(self, payloads: Sequence[Sequence[Buffer]]) -> list[str]:
        return [self.put(frames) for frames in payloads]

    def exists(self, key: str) -> bool:
        return self.get(key) is not None if self._ours(key) else False

    def evict(self, key: str) -> None:
        self.evict_batch([key])

    def evict_batch(self, keys: Sequence[str]) -> None:
        names = [k for k in keys if self._ours(k)]
        if not names:
            return
        current = {k: None for k in names}
        self.ddict.bget(current)
        doomed = []
        for key, value in current.items():
            doomed += [key, f"{key}#t"]
            if value is not None and value.startswith(b"PXPARTS"):
                doomed += [f"{key}#{i}" for i in range(int(value[7:]))]
        for name in doomed:
            try:
                self.ddict.pop(name)
            except KeyError:
                pass

    def replace(self, key: str, frames: Sequence[Buffer]) -> None:
        if not self.exists(key):
            raise MissingKeyError(key, self._where())
        self.evict(key)
        self._write(key, frames)

    def keys(self) -> list[str]:
        """Keys of this namespace (iterates the dictionary; for tests and tools)."""
        prefix = self.namespace + ":"
        return sorted(k for k in self.ddict if k.startswith(prefix) and "#" not in k)

    # -- leases: "<namespace>:lease:<owner>" holds the owner's heartbeat time and keys

    def _lease_key(self, owner: str) -> str:
        return f"{self.namespace}#lease#{owner}"

    def adopt(self, owner: str, keys: Sequence[str]) -> None:
        if self.lease is None:
            return
        entry = self._lease_entry(owner)
        entry["keys"] = sorted(set(entry["keys"]) | {k for k in keys if self._ours(k)})
        entry["beat"] = time.time()
        self.ddict.put(self._lease_key(owner), json.dumps(entry).encode())

    def _lease_entry(self, owner: str) -> dict[str, Any]:
        try:
            raw = self.ddict.get(self._lease_key(owner))
        except KeyError:
            raw = None
        return json.loads(raw) if raw else {"keys": [], "beat": 0.0}

    def renew(self, owner: str, keys: Sequence[str], seconds: float) -> None:
        if self.lease is not None:  # one put per interval: the heartbeat and held keys
            entry = {"keys": sorted(k for k in keys if self._ours(k)), "beat": time.time()}
            self.ddict.put(self._lease_key(owner), json.dumps(entry).encode())

    def reap(self) -> int:
        if self.lease is None:
            return 0
        now = time.time()
        held: set[str] = set()
        removed = 0
        lease_prefix = f"{self.namespace}#lease#"
        for name in list(self.ddict):
            if not name.startswith(lease_prefix):
                continue
            entry = json.loads(self.ddict.get(name))
            if now - float(entry["beat"]) > self.lease:
                removed += len(entry["keys"])
                self.evict_batch(entry["keys"])
                self.ddict.pop(name)
            else:
                held.update(entry["keys"])
        for key in self.keys():
            if key in held:
                continue
            try:
                written = float(self.ddict.get(f"{key}#t"))
            except KeyError:
                written = 0.0
            if now - written > self.lease:
                self.evict(key)
                removed += 1
        return removed

    # -- config -----------------------------------------------------------------------

    def config(self) -> ConnectorConfig:
        return {
            "type": self.type_name, "pool": self.pool, "container": self.container,
            "namespace": self.namespace, "dict_name": self.dict_name,
            "max_value": self.max_value, "lease": self.lease,
        }

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> DAOSConnector:
        options: dict[str, Any] = check_options(
            cls.type_name, config,
            {"pool", "container", "namespace", "dict_name", "max_value", "lease"},
        )
        return cls(**options)

    def _where(self) -> str:
        return f"daos:{self.pool}/{self.container}/{self.dict_name}"

    def __repr__(self) -> str:
        return f"DAOSConnector(pool={self.pool!r}, container={self.container!r})"
