"""TOML config files: the store (connector and options), the policy, executor options.

::

    [store]
    name = "my-workflow"
    connector = "redis://localhost:6379/0"   # a URL, or a table: {type = "file", directory = "..."}
    cache_size = 16
    secret_env = "PXEXEC_SECRET"             # sign objects with this variable's value

    [policy]                                 # or: policy = "mypkg.policies:large_arrays"
    type = "size_at_least"
    nbytes = 1_000_000

    [executor]
    ownership = true
    proxy_containers = false

Without ``secret_env`` a store is unsigned: a reader unpickles whatever is stored,
so anyone who can write to the backend can run code in every reader. Set
``secret_env`` (one line) wherever another user or workflow can reach the backend.
Sizes may carry units (``nbytes = "10MB"``, ``max_size = "1MiB"``). ``load()`` without a
path reads the file ``PXEXEC_CONFIG`` names; ``PXEXEC_<SECTION>__<KEY>`` variables
override the file's values (see ``pxexec.config_io``); ``Config.to_toml()`` writes a
config back.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, TypedDict, cast

from pxexec.config_io import ENV_CONFIG, config_path, env_overrides, merged, policy_table, to_toml
from pxexec.connectors import connector_from_config, connector_from_url
from pxexec.errors import ConfigError, PxexecError
from pxexec.policies import DEFAULT_THRESHOLD, SizeAtLeast, load_policy
from pxexec.store.store import Store

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib



class StoreTable(TypedDict, total=False):
    """The ``[store]`` table: the store's name, its connector and options.

    >>> table: StoreTable = {"name": "run-1", "connector": "shm", "cache_size": 8}
    >>> sorted(table)
    ['cache_size', 'connector', 'name']
    """

    name: str
    #: a URL (``"redis://host:6379/0"``) or a connector table (``{type = "file", ...}``)
    connector: str | dict[str, Any]
    cache_size: int
    secret_env: str


class ExecutorOptions(TypedDict, total=False):
    """The ``[executor]`` table: StoreExecutor options (all true/false but ``engine``).

    >>> options: ExecutorOptions = {"ownership": True, "engine": "dask"}
    >>> sorted(options)
    ['engine', 'ownership']
    """

    ownership: bool
    proxy_containers: bool
    proxy_results: bool
    close_engine: bool
    #: the engine's name, for an executor whose type does not tell
    engine: str


SECTIONS = {"store", "policy", "executor"}
STORE_KEYS = set(StoreTable.__annotations__)
EXECUTOR_KEYS = set(ExecutorOptions.__annotations__)


__all__ = ["Config", "ExecutorOptions", "StoreTable", "from_dict", "load"]


@dataclass
class Config:
    """What a config file describes: the store, the policy, executor options.

    >>> config = from_dict({"store": {"name": "cfg-demo", "connector": "local"},
    ...                     "policy": {"type": "size_at_least", "nbytes": 10}})
    >>> config.store.name, config.policy
    ('cfg-demo', SizeAtLeast(10))
    """

    store: Store
    policy: Any
    executor_options: ExecutorOptions = field(default_factory=lambda: ExecutorOptions())
    #: the tables it was built from (after environment overrides)
    data: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The config as tables that ``from_dict`` builds again.

        >>> config = from_dict({"store": {"name": "dict-demo", "connector": "local"}})
        >>> sorted(config.to_dict()), config.to_dict()["policy"]
        (['executor', 'policy', 'store'], {'type': 'size_at_least', 'nbytes': 1000000})
        """
        store = self.store
        return {
            "store": {"name": store.name, "connector": store.connector.config(),
                      "cache_size": store.cache_size, "secret_env": store.secret_env},
            "policy": self.data.get("policy") or policy_table(self.policy),
            "executor": dict(self.executor_options),
        }

    def to_toml(self) -> str:
        """The config as the text of a TOML file that ``load`` reads back.

        >>> config = from_dict({"store": {"name": "toml-out", "connector": "shm"},
        ...                     "policy": {"type": "size_at_least", "nbytes": "2MB"}})
        >>> print(config.to_toml(), end="")  # doctest: +ELLIPSIS
        [store]
        name = "toml-out"
        cache_size = 16
        <BLANKLINE>
        [store.connector]
        type = "shm"
        directory = "/dev/shm/..."
        ...
        [policy]
        type = "size_at_least"
        nbytes = "2MB"
        """
        return to_toml(self.to_dict())


def load(path: str | None = None, *, environ: dict[str, str] | None = None) -> Config:
    """Read and validate a TOML config file; build its store and policy.

    Without ``path``: the file ``PXEXEC_CONFIG`` names, or, when it is unset, the
    ``PXEXEC_<SECTION>__<KEY>`` variables alone (they must give ``[store]``). Those
    variables override the file's values either way.

    >>> import os, tempfile
    >>> path = tempfile.mkstemp(suffix=".toml")[1]
    >>> lines = ['[store]', 'name = "toml-demo"', 'connector = "local"',
    ...          '[executor]', 'ownership = false']
    >>> with open(path, "w") as f:
    ...     _ = f.write(os.linesep.join(lines))
    >>> load(path).executor_options
    {'ownership': False}
    """
    overrides = env_overrides(environ)
    named = (os.environ if environ is None else environ).get(ENV_CONFIG)
    if path is None and not named and "store" in overrides:
        return from_dict(overrides, source="the PXEXEC_* environment variables")
    path = config_path(path, environ)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"Config file {path!r} does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"Config path {path!r} is a directory; name a TOML file.") from None
    except OSError as exc:
        raise ConfigError(f"Config file {path!r} cannot be read: {exc.strerror or exc}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML (not UTF-8 text: {exc}).") from exc
    if overrides:
        data = merged(data, overrides)
        path = f"{path} (with PXEXEC_* overrides)"
    return from_dict(data, source=path)


def from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Build a Config from the parsed contents of a config file.

    >>> from_dict({"store": {"name": "x", "connector": "local"}, "extra": {}})
    Traceback (most recent call last):
    ...
    pxexec.errors.ConfigError: <config>: unknown section(s) ['extra']; allowed: [...].
    """
    unknown = set(data) - SECTIONS
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) {sorted(unknown)}; allowed: {sorted(SECTIONS)}."
        )
    store_table = data.get("store")
    if not isinstance(store_table, dict):
        raise ConfigError(f"{source}: a [store] table with 'name' and 'connector' is required.")
    store = _store(cast(StoreTable, store_table), source)  # its keys are checked there
    policy_value = data.get("policy")
    policy = (
        SizeAtLeast(DEFAULT_THRESHOLD) if policy_value is None
        else load_policy(policy_value, where=f"{source}: [policy]")
    )
    options = data.get("executor", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{source}: [executor] must be a table.")
    bad = set(options) - EXECUTOR_KEYS
    if bad:
        raise ConfigError(
            f"{source}: unknown key(s) {sorted(bad)} in [executor]; allowed: "
            f"{sorted(EXECUTOR_KEYS)}."
        )
    for key, value in options.items():
        if key != "engine" and not isinstance(value, bool):
            raise ConfigError(f"{source}: [executor].{key} must be true or false, got {value!r}.")
    return Config(store, policy, cast(ExecutorOptions, dict(options)), dict(data))


def _store(table: StoreTable, source: str) -> Store:
    bad = set(table) - STORE_KEYS
    if bad:
        raise ConfigError(
            f"{source}: unknown key(s) {sorted(bad)} in [store]; allowed: {sorted(STORE_KEYS)}."
        )
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: [store].name must be a non-empty string.")
    connector_value = table.get("connector")
    cache_size = table.get("cache_size", 16)
    if not isinstance(cache_size, int) or isinstance(cache_size, bool) or cache_size < 0:
        raise ConfigError(f"{source}: [store].cache_size must be a whole number >= 0.")
    try:
        if isinstance(connector_value, str):
            connector = connector_from_url(connector_value)
        elif isinstance(connector_value, dict):
            connector = connector_from_config(connector_value)
        else:
            raise ConfigError(
                "a connector URL (e.g. 'shm', 'redis://host:6379/0') or a table with a "
                "'type' is required"
            )
    except PxexecError as exc:
        raise ConfigError(f"{source}: [store].connector: {exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"{source}: [store].connector: bad option ({exc}).") from exc
    except (ValueError, ImportError, AttributeError) as exc:
        raise ConfigError(
            f"{source}: [store].connector: {connector_value!r} is not usable "
            f"({type(exc).__name__}: {exc})."
        ) from exc
    secret_env = table.get("secret_env")
    if secret_env is not None and (not isinstance(secret_env, str) or not secret_env):
        raise ConfigError(f"{source}: [store].secret_env must name an environment variable "
                          "(the secret itself never goes in a config file).")
    return Store(name, connector, cache_size=cache_size, secret_env=secret_env)
