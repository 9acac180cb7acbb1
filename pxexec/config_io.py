"""Config from the environment, and configs written back to TOML.

- ``PXEXEC_CONFIG``: the config file to read when none is named
  (``StoreExecutor.from_config(engine)``, ``pxexec.config.load()``).
- ``PXEXEC_<SECTION>__<KEY>[__<KEY>...]``: a value that overrides the file's (as Dask's
  ``DASK_DISTRIBUTED__...`` variables do): ``PXEXEC_STORE__CONNECTOR=redis://host:6379/0``,
  ``PXEXEC_POLICY__NBYTES=10MB``, ``PXEXEC_EXECUTOR__OWNERSHIP=false``. A value is read
  as TOML when it parses as one (numbers, booleans, quoted strings, arrays, inline
  tables), else as a plain string. Variables without a double underscore
  (``PXEXEC_SECRET``, ``PXEXEC_SHM_DIR``) are not config values.
- ``to_toml(data)`` writes a config table as TOML; ``Config.to_toml()`` writes a
  loaded config (store, policy, executor options) so that ``load`` reads it back.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from pxexec.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ENV_CONFIG", "config_path", "env_overrides", "merged", "policy_table", "to_toml"]

#: the environment variable naming the config file to read when none is given
ENV_CONFIG = "PXEXEC_CONFIG"
_PREFIX = "PXEXEC_"


def config_path(path: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``path``, else the file ``PXEXEC_CONFIG`` names.

    >>> config_path("pxexec.toml")
    'pxexec.toml'
    """
    if path:
        return path
    named = (os.environ if environ is None else environ).get(ENV_CONFIG)
    if named:
        return named
    raise ConfigError(f"No config file given: pass its path, or set {ENV_CONFIG} to it.")


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The config values the ``PXEXEC_<SECTION>__<KEY>`` variables set, as nested tables.

    >>> env_overrides({"PXEXEC_STORE__CONNECTOR": "shm", "PXEXEC_EXECUTOR__OWNERSHIP": "false",
    ...                "PXEXEC_POLICY__NBYTES": "10MB", "PXEXEC_SECRET": "not config"})
    {'store': {'connector': 'shm'}, 'executor': {'ownership': False}, 'policy': {'nbytes': '10MB'}}
    """
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for name, text in environ.items():
        if not name.startswith(_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(_PREFIX):].split("__")]
        if not all(path):
            raise ConfigError(f"{name}: write PXEXEC_<SECTION>__<KEY>, e.g. "
                              "PXEXEC_STORE__CONNECTOR=shm.")
        table = found
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{name} sets a key inside {part!r}, which another "
                                  "variable sets to a value.")
        table[path[-1]] = _value(text)
    return found


def _value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied, table by table (an override's value wins).

    >>> merged({"store": {"name": "a", "connector": "shm"}}, {"store": {"connector": "local"}})
    {'store': {'name': 'a', 'connector': 'local'}}
    """
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def policy_table(policy: Any) -> Any:
    """The config value that builds ``policy`` again (built-in policies and combinations).

    >>> from pxexec.policies import SizeAtLeast, TypeIn
    >>> policy_table(TypeIn("pandas:DataFrame") | SizeAtLeast(10))
    {'type': 'any', 'policies': [{'type': 'type_in', 'types': ['pandas:DataFrame']}, \
{'type': 'size_at_least', 'nbytes': 10}]}
    """
    from pxexec.policies import Always, And, Never, Not, Or, SizeAtLeast, TypeIn

    if isinstance(policy, Always):
        return {"type": "always"}
    if isinstance(policy, Never):
        return {"type": "never"}
    if isinstance(policy, SizeAtLeast):
        return {"type": "size_at_least", "nbytes": policy.nbytes}
    if isinstance(policy, TypeIn):
        return {"type": "type_in", "types": [f"{m}:{n}" for m, n in policy.names]}
    if isinstance(policy, (And, Or)):
        return {"type": "all" if isinstance(policy, And) else "any",
                "policies": [policy_table(p) for p in policy.policies]}
    if isinstance(policy, Not):
        return {"type": "not", "policy": policy_table(policy.policy)}
    where = f"{getattr(policy, '__module__', '?')}:{getattr(policy, '__qualname__', '?')}"
    raise ConfigError(
        f"The policy {policy!r} cannot be written to a config file: only built-in policies "
        f"and their combinations can. Name it as a 'module:attribute' string (such as "
        f"{where!r}) in the file instead."
    )


_BARE = re.compile(r"[A-Za-z0-9_-]+")


def to_toml(data: Mapping[str, Any]) -> str:
    """``data`` (tables of TOML values) as TOML text; ``None`` values are left out.

    >>> print(to_toml({"store": {"name": "x", "connector": {"type": "shm", "lease": None}},
    ...                "executor": {"ownership": True}}), end="")
    [store]
    name = "x"
    <BLANKLINE>
    [store.connector]
    type = "shm"
    <BLANKLINE>
    [executor]
    ownership = true
    """
    lines: list[str] = []
    _table(lines, [], data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(lines: list[str], path: list[str], table: Mapping[str, Any]) -> None:
    plain = {k: v for k, v in table.items() if v is not None and not isinstance(v, dict)}
    nested = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path and plain:  # (an empty table is left out)
        lines += ["", f"[{'.'.join(_key(p) for p in path)}]"]
    lines += [f"{_key(k)} = {_toml(v)}" for k, v in plain.items()]
    for key, value in nested.items():
        _table(lines, [*path, key], value)


def _key(key: str) -> str:
    return key if _BARE.fullmatch(key) else _toml(key)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items() if v is not None)
        return "{" + items + "}"
    raise ConfigError(f"{value!r} ({type(value).__name__}) cannot be written to TOML.")
