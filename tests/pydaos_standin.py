"""A stand-in for pydaos' Python container API (DCont / DDict), for the tests.

Same names and behaviour the DAOS connector relies on: ``DCont(pool, cont)``;
``cont.get(name)`` raises ``DObjNotFound`` for an unknown name and ``cont.dict(name)``
creates one (an error if it exists); a ``DDict`` takes string keys and bytes values;
``get`` raises ``KeyError`` for a missing key; ``bget`` fills a dict (``None`` for
missing keys); ``bput`` stores a dict (a ``None`` value deletes); ``pop`` removes and
returns (``KeyError`` if missing); iteration lists keys. Values over ``VALUE_LIMIT``
bytes are refused with ``PyDError``, as DAOS refuses oversized values.
State lives in this process (like a DAOS pool seen by one client).
"""

from __future__ import annotations

from typing import Any

VALUE_LIMIT = 16 * 1024 * 1024
_POOLS: dict[tuple[str, str], dict[str, DDict]] = {}


class PyDError(Exception):
    def __init__(self, message: str, rc: int = -1) -> None:
        super().__init__(f"{message}: rc={rc}")
        self.rc = rc


class DObjNotFound(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"Failed to find '{name}'")
        self.name = name


class DDict:
    def __init__(self, name: str) -> None:
        self.name = name
        self._data: dict[str, bytes] = {}
        self.calls = {"put": 0, "get": 0, "bput": 0, "bget": 0, "pop": 0}

    @staticmethod
    def _check(key: Any, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError("keys must be strings")
        if value is not None and not isinstance(value, (bytes, str)):
            raise TypeError("values must be bytes or str")
        if value is not None and len(value) > VALUE_LIMIT:
            raise PyDError("failed to store KV value (value too large)", -1002)

    def put(self, key: str, val: Any) -> None:
        self.calls["put"] += 1
        self._store(key, val)

    def _store(self, key: str, val: Any) -> None:
        self._check(key, val)
        if val is None or len(val) == 0:
            self._data.pop(key, None)
        else:
            self._data[key] = val.encode() if isinstance(val, str) else bytes(val)

    def get(self, key: str) -> bytes:
        self.calls["get"] += 1
        if key not in self._data:
            raise KeyError(key)
        return self._data[key]

    def __getitem__(self, key: str) -> bytes:
        return self.get(key)

    def __setitem__(self, key: str, val: Any) -> None:
        self.put(key, val)

    def bput(self, ddict: dict[str, Any]) -> None:
        self.calls["bput"] += 1
        for key, val in ddict.items():
            self._check(key, val)
        for key, val in ddict.items():
            self._store(key, val)

    def bget(self, ddict: dict[str, Any], value_size: int | None = None) -> None:
        self.calls["bget"] += 1
        for key in ddict:
            ddict[key] = self._data.get(key)

    def pop(self, key: str) -> bytes:
        self.calls["pop"] += 1
        if key not in self._data:
            raise KeyError(key)
        return self._data.pop(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Any:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)


class DCont:
    def __init__(self, pool: str | None = None, cont: str | None = None,
                 path: str | None = None) -> None:
        if path is None and (pool is None or cont is None):
            raise PyDError("invalid pool or container UUID", -1003)
        self._objects = _POOLS.setdefault((str(pool), str(cont)), {})

    def get(self, name: str) -> DDict:
        if name not in self._objects:
            raise DObjNotFound(name)
        return self._objects[name]

    def dict(self, name: str, v: dict[str, Any] | None = None) -> DDict:
        if name in self._objects:
            raise PyDError("failed to create DAOS dict (name exists)", -1004)
        d = DDict(name)
        if v:
            d.bput(v)
        self._objects[name] = d
        return d


def reset() -> None:
    _POOLS.clear()
