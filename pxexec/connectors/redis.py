"""Redis connector (redis-py): one string value per object, under a per-store prefix.

Large values are written and read on a pooled redis-py connection without joining
frames or copying the reply: frames are sent one after another as the bulk argument
of one SET, and a GET reply is received straight into a writable buffer. Values
over ``max_part`` bytes (Redis refuses strings over 512 MB) are split into parts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pxexec.codec.frames import alloc
from pxexec.connectors.base import BaseConnector, Buffer, ConnectorConfig, check_options, new_token
from pxexec.connectors.nodeid import this_node
from pxexec.errors import (
    ConfigError,
    MissingDependencyError,
    MissingKeyError,
    StoreConnectionError,
    StoreIOError,
)
from pxexec.forking import on_fork_child

try:
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependencyError("redis", "redis", "The Redis connector") from exc

log = logging.getLogger("pxexec")
MAX_PART = 500 * 1024 * 1024  # under Redis' 512 MB proto-max-bulk-len default
T = TypeVar("T")
_RAW_MIN = 64 * 1024  # below this, plain redis-py commands are as fast


def _redact(url: str) -> str:
    """The URL without credentials, for messages."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    return f"{parts.scheme}://{host}:{port}{parts.path or ''}"


def _redacted(url: str) -> str:
    """``url`` with any password masked (for a string that is not a URL yet)."""
    head, at, tail = url.rpartition("@")
    return f"{head.partition(':')[0]}:***@{tail}" if at else url


#: what must follow each scheme's '://'
_FORMS = {
    "redis": "host:port/db (redis://localhost:6379/0)",
    "rediss": "host:port/db (rediss://host:6380/0)",
    "unix": "the socket's absolute path (unix:///run/redis.sock)",
}


__all__ = ["RedisConnector"]


class RedisConnector(BaseConnector):
    """Stores objects in a Redis server.

    ``url`` is a redis-py URL: ``redis://[user:password@]host:port/db``, ``rediss://``
    for TLS, or ``unix:///path/redis.sock``. ``password_env`` names an environment
    variable holding the password, so that configs and proxies never carry it.
    ``ttl`` (seconds) makes every object expire on its own.

    Waits are bounded by default: ``connect_timeout`` (2 s) to connect, ``timeout``
    (5 s) for any one socket operation; a pooled connection idle for
    ``health_check_interval`` seconds is checked (PING) before use. Every command is
    idempotent (SET of a new random key, GET, DELETE, PEXPIRE), and a connection error
    is retried ``retries`` times (default 1: a stale pooled connection after a server
    restart or a network cut gets one fresh attempt) by redis-py's ``Retry`` with
    exponential backoff; the raw streaming SET/GET use the same policy. Errors name
    this host and the server address tried.

    >>> import os
    >>> url = os.environ.get("PXEXEC_DOCTEST_REDIS", "redis://localhost:6379/0")
    >>> connector = RedisConnector(url, prefix="doc", ttl=60)
    >>> key = connector.put([b"frame-1", b"frame-2"])
    >>> bytes(connector.get(key))
    b'frame-1frame-2'
    >>> connector.evict(key)
    """

    type_name = "redis"

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "pxexec",
        ttl: float | None = None,
        connect_timeout: float = 2.0,
        timeout: float = 5.0,
        retries: int = 1,
        password_env: str | None = None,
        max_part: int = MAX_PART,
        health_check_interval: float = 5.0,
    ) -> None:
        self.check_url(url)
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))
                                or not 0.001 <= ttl < float("inf")):
            raise ConfigError(
                f"Redis ttl must be a positive number of seconds (at least 0.001), got "
                f"{ttl!r}; leave it unset for objects that never expire."
            )
        if ":" in prefix or not prefix:
            raise ConfigError(f"Redis key prefix {prefix!r} must be non-empty without ':'.")
        if max_part < 1024:
            raise ConfigError("max_part must be at least 1024 bytes.")
        for name, value in (("connect_timeout", connect_timeout), ("timeout", timeout)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(
                    f"Redis {name} must be a positive number of seconds, got {value!r}: an "
                    "unbounded wait would hang tasks when the server or network stalls."
                )
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigError(f"Redis retries must be a whole number >= 0, got {retries!r}.")
        if not isinstance(health_check_interval, (int, float)) or health_check_interval < 0:
            raise ConfigError("health_check_interval must be a number of seconds >= 0 "
                              f"(0: never), got {health_check_interval!r}.")
        self.health_check_interval = health_check_interval
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.retries = retries
        self.password_env = password_env
        self.max_part = max_part
        self.address = _redact(url)
        self._client: Any = None
        self._pid = -1
        #: the server's maxmemory-policy, read at connect (None: not known yet)
        self.eviction_policy: str | None = None
        #: keys of writes that failed part-way: deleted as soon as the server answers
        self._doubtful: list[str] = []

    @staticmethod
    def check_url(url: str) -> None:
        """Refuse a URL redis-py would misread (before any I/O), saying how to write it."""
        if not isinstance(url, str) or "://" not in url:
            scheme = url.partition(":")[0] if isinstance(url, str) else ""
            scheme = scheme if scheme in _FORMS else "redis"
            raise ConfigError(
                f"Connector URL {_redacted(str(url))!r} is not a URL: write {scheme}:// "
                f"followed by {_FORMS[scheme]}."
            )
        parts = urlsplit(url)
        if parts.scheme not in _FORMS:
            raise ConfigError(
                f"Redis URL {_redact(url)!r} must start with redis://, rediss:// or unix://."
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ConfigError(
                f"Redis URL {parts.scheme}://{parts.netloc.rpartition('@')[2]} has a port that "
                "is not a number from 0 to 65535, e.g. redis://localhost:6379/0."
            ) from None
        if parts.scheme == "unix" and not parts.path.startswith("/"):
            raise ConfigError(f"Redis socket URL {url!r} needs an absolute path after unix://.")
        if parts.scheme != "unix" and not parts.hostname:
            raise ConfigError(f"Redis URL {_redact(url)!r} needs a host, e.g. "
                              "redis://localhost:6379/0.")

    @classmethod
    def options_from_url(cls, url: str) -> dict[str, Any]:
        """``redis://[user:pw@]host:port/db``, ``rediss://...``, ``unix:///sock``; the
        bare name ``redis`` is ``redis://localhost:6379/0``.

        >>> RedisConnector.options_from_url("unix:///run/redis.sock")
        {'url': 'unix:///run/redis.sock'}
        """
        if url == cls.type_name:
            return {}
        cls.check_url(url)
        return {"url": url}

    # -- client -----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The redis-py client, created on first use (once per process).

        A forked child never uses, closes or resets its parent's client (its pool
        lock may be held by a thread the child does not have): it abandons it and
        makes its own.
        """
        if self._client is None or self._pid != os.getpid():
            if self._client is not None:
                _abandon(self)
            options: dict[str, Any] = {
                "socket_connect_timeout": self.connect_timeout,
                "socket_timeout": self.timeout,
                "retry": self._retry(),
                "health_check_interval": self.health_check_interval,
                "protocol": 2,
            }
            if self.password_env:
                password = os.environ.get(self.password_env)
                if password is None:
                    raise ConfigError(
                        f"The Redis password variable {self.password_env!r} is not set in "
                        "this process's environment."
                    )
                options["password"] = password
            if urlsplit(self.url).scheme == "rediss":
                options["connection_class"] = _HandshakeTimeoutSSLConnection
            self._client = redis.Redis.from_url(self.url, **options)
            self._pid = os.getpid()
            on_fork_child(_abandon_inherited_clients)
            _WITH_CLIENTS.add(self)
            self._check_eviction(self._client)
        return self._client

    def _check_eviction(self, client: Any) -> None:
        """Warn when the server evicts keys pxexec relies on (its maxmemory-policy)."""
        try:
            policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        except Exception:  # down (the next call reports it), or CONFIG not allowed
            return
        self.eviction_policy = policy
        if _evicts(policy, self.ttl):
            warnings.warn(
                f"Redis at {self.address} evicts keys when memory is full "
                f"(maxmemory-policy {policy}): it may delete objects that pxexec still "
                "owns, and their readers then fail. Set maxmemory-policy noeviction (or "
                "raise maxmemory) for pxexec's data.", StoreEvictionWarning, stacklevel=3)

    def missing_detail(self, key: str) -> str:
        """Why ``key`` may be missing besides being freed (for MissingKeyError)."""
        if _evicts(self.eviction_policy, self.ttl):
            return (f"Redis at {self.address} evicts keys when memory is full "
                    f"(maxmemory-policy {self.eviction_policy}), which may have removed it.")
        return ""

    def _retry(self) -> Any:
        """The one retry policy of this connector (redis-py's ``Retry``)."""
        # Connection errors only: a stale pooled connection (reset, broken pipe, closed)
        # gets a fresh attempt; a timeout is not retried, so waits stay bounded by it.
        return Retry(ExponentialBackoff(cap=2.0, base=0.05), self.retries,
                     supported_errors=(redis.ConnectionError,))

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.OutOfMemoryError as exc:
            raise StoreIOError(
                f"Redis at {self.address} could not {action}: it is out of memory "
                f"(maxmemory reached; {exc}). Free objects, raise the server's maxmemory, "
                "or send large objects to another store."
            ) from exc
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            host = this_node().hostname
            raise StoreConnectionError(
                f"Redis at {self.address} could not {action} from host {host!r}: {exc}. "
                f"Check that the server is running and reachable from {host!r}, and that "
                "the URL, password and TLS settings are right (waits are bounded by "
                f"connect_timeout={self.connect_timeout:g} s and timeout={self.timeout:g} s, "
                f"with {self.retries} retry(ies))."
            ) from exc

    def _ex(self) -> list[bytes]:
        if self.ttl is None:
            return []
        return [b"PX", str(max(1, int(self.ttl * 1000))).encode()]

    # -- keys -------------------------------------------------------------------------

    def _new_key(self, nbytes: int) -> str:
        key = f"{self.prefix}:{new_token()}"
        nparts = -(-nbytes // self.max_part)
        return f"{key}:p{nparts}" if nparts > 1 else key

    def _check(self, key: str) -> bool:
        return key.startswith(self.prefix + ":")

    def _parts(self, key: str) -> list[str]:
        head, _, tail = key.rpartition(":p")
        if head and tail.isdigit() and len(tail) < 12:
            count = int(tail)
            if 1 < count <= -(-MAX_OBJECT // self.max_part):  # bounded by the largest object
                return [f"{key}#{i}" for i in range(count)]
            return []  # not a key this connector writes
        return [key]

    # -- single objects ---------------------------------------------------------------

    def put(self, frames: Sequence[Buffer]) -> str:
        views = [v for v in (memoryview(f).cast("B") for f in frames) if v.nbytes]
        key = self._new_key(sum(v.nbytes for v in views))
        self._put_views(key, views)
        return key

    def new_key(self, nbytes: int) -> str:
        return self._new_key(nbytes)

    def put_at(self, key: str, frames: Sequence[Buffer]) -> None:
        views = [v for v in (memoryview(f).cast("B") for f in frames) if v.nbytes]
        if not self._check(key) or len(self._parts(key)) != len(
                list(_split(views, self.max_part))):
            raise KeyError(f"{key!r} is not a key for an object of this size.")
        self._put_views(key, views)

    def _put_views(self, key: str, views: list[memoryview]) -> None:
        total = sum(v.nbytes for v in views)
        parts = self._parts(key)
        self._delete_doubtful()
        try:
            with self._errors("store an object"):
                if len(parts) == 1 and total < _RAW_MIN:
                    self.client.execute_command("SET", key, b"".join(views), *self._ex())
                else:
                    for name, chunk in zip(parts, _split(views, self.max_part)):
                        self._raw_set(name, chunk)
        except StoreConnectionError:
            # The server may still apply a write we gave up on (a stalled server that
            # resumes): delete it once the server answers again, so nothing is orphaned.
            self._doubtful.extend(parts)
            log.warning("pxexec: a write of %s to Redis at %s failed; it is deleted as soon "
                        "as the server answers this process again", key, self.address)
            raise

    def _delete_doubtful(self) -> None:
        if not self._doubtful:
            return
        names, self._doubtful = self._doubtful, []
        try:
            self.client.delete(*names)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            self._doubtful.extend(names)  # still down: try again with the next call

    def _raw_set(self, key: str, views: list[memoryview]) -> None:
        size = sum(v.nbytes for v in views)
        name = key.encode()
        extra = self._ex()
        head = b"*%d\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (3 + len(extra), len(name), name, size)
        tail = b"\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in extra)

        def send() -> None:
            with self._connection() as conn:
                conn.send_packed_command([head, *views, tail])
                conn.read_response()

        self._retrying(send)

    def _retrying(self, operation: Callable[[], T]) -> T:
        """Run an idempotent raw operation under the client's retry policy (the raw
        SET and GET that stream frames go around redis-py's commands)."""

        def attempt() -> T:
            try:
                return operation()
            except TimeoutError as exc:  # a raw socket's: not retried
                raise redis.TimeoutError(f"Timeout reading from the server: {exc}") from exc
            except OSError as exc:  # reset, broken pipe: a fresh connection may work
                raise redis.ConnectionError(f"Connection error: {exc}") from exc

        result: T = self.client.get_retry().call_with_retry(attempt, lambda _exc: None)
        return result

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            yield conn
        except BaseException:
            conn.disconnect()  # never hand a half-read connection back to the pool
            raise
        finally:
            pool.release(conn)

    def get(self, key: str) -> Buffer | None:
        if not self._check(key):
            return None
        parts = self._parts(key)
        if not parts:
            return None
        chunks: list[memoryview] = []
        with self._errors("read an object"):
            for i, name in enumerate(parts):
                chunk = self._raw_get(name)
                if chunk is None:  # a part is missing: stop (a forged part count costs
                    return None    # one read, never one per claimed part)
                if i < len(parts) - 1 and chunk.nbytes != self.max_part:
                    return None  # every part but the last is full: not an object of ours
                chunks.append(chunk)
        if len(chunks) == 1:
            return chunks[0]
        out = alloc(sum(c.nbytes for c in chunks if c is not None))
        pos = 0
        for c in chunks:
            assert c is not None
            out[pos : pos + c.nbytes] = c
            pos += c.nbytes
        return out

    def _raw_get(self, key: str) -> memoryview | None:
        def receive() -> memoryview | None:
            with self._connection() as conn:
                conn.send_command("GET", key)
                return _read_bulk(conn._sock)

        return self._retrying(receive)

    def exists(self, key: str) -> bool:
        if not self._check(key):
            return False
        with self._errors("check an object"):
            parts = self._parts(key)
            return bool(parts) and bool(self.client.exists(parts[0]))

    def evict(self, key: str) -> None:
        if self._check(key):
            with self._errors("evict an object"):
                parts = self._parts(key)
                if parts:
                    self.client.delete(*parts)

    def replace(self, key: str, frames: Sequence[Buffer]) -> None:
        views = [v for v in (memoryview(f).cast("B") for f in frames) if v.nbytes]
        parts = self._parts(key)
        if not self._check(key) or not parts or not self.exists(key):
            raise MissingKeyError(key, f"{self.address} (prefix {self.prefix!r})",
                                  self.missing_detail(key))
        chunks = list(_split(views, self.max_part))
        if len(chunks) != len(parts):
            raise KeyError(f"{key!r} cannot hold an object of this size; store a new one.")
        with self._errors("replace an object"):
            for name, chunk in zip(parts, chunks):
                self._raw_set(name, chunk)

    # -- leases: native TTLs ----------------------------------------------------------

    @property
    def lease_seconds(self) -> float | None:
        return self.ttl

    #: expiry is the server's (key TTLs): no holder is recorded
    tracks_owners = False

    def adopt(self, owner: str, keys: Sequence[str]) -> None:
        """Nothing to record: a held object lives while ``renew`` extends its TTL."""

    def reap(self) -> int:
        """Nothing to do: Redis expires keys itself."""
        return 0

    def renew(self, owner: str, keys: Sequence[str], seconds: float) -> None:
        names = [n for k in keys if self._check(k) for n in self._parts(k)]
        if not names:
            return
        with self._errors("renew leases"):
            pipe = self.client.pipeline(transaction=False)
            millis = max(1, int(seconds * 1000))
            for name in names:
                pipe.pexpire(name, millis)
            pipe.execute()

    # -- batches ----------------------------------------------------------------------

    def put_batch(self, payloads: Sequence[Sequence[Buffer]]) -> list[str]:
        sizes = [sum(memoryview(f).nbytes for f in frames) for frames in payloads]
        if any(size >= _RAW_MIN for size in sizes):
            return [self.put(frames) for frames in payloads]
        keys = [self._new_key(size) for size in sizes]
        with self._errors("store objects"):
            pipe = self.client.pipeline(transaction=False)
            for key, frames in zip(keys, payloads):
                pipe.execute_command("SET", key, b"".join(frames), *self._ex())
            pipe.execute()
        return keys

    def get_batch(self, keys: Sequence[str]) -> list[Buffer | None]:
        simple = [k for k in keys if self._check(k) and len(self._parts(k)) == 1]
        found: dict[str, Buffer | None] = {}
        if simple:
            with self._errors("read objects"):
                found = dict(zip(simple, self.client.mget(simple)))
        return [found[k] if k in found else self.get(k) for k in keys]

    def evict_batch(self, keys: Sequence[str]) -> None:
        names = [name for k in keys if self._check(k) for name in self._parts(k)]
        self._delete_doubtful()
        if names:
            with self._errors("evict objects"):
                self.client.delete(*names)

    def keys(self) -> list[str]:
        """Keys stored under this connector's prefix (SCAN; for tests and tools)."""
        with self._errors("list objects"):
            names = [k.decode() for k in self.client.scan_iter(match=f"{self.prefix}:*")]
        whole = {n.partition("#")[0] for n in names}
        return sorted(whole)

    # -- config -----------------------------------------------------------------------

    def config(self) -> ConnectorConfig:
        return {
            "type": self.type_name,
            "url": self.url,
            "prefix": self.prefix,
            "ttl": self.ttl,
            "connect_timeout": self.connect_timeout,
            "timeout": self.timeout,
            "retries": self.retries,
            "password_env": self.password_env,
            "max_part": self.max_part,
            "health_check_interval": self.health_check_interval,
        }

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> RedisConnector:
        allowed = {
            "url", "prefix", "ttl", "connect_timeout", "timeout", "retries", "password_env",
            "max_part", "health_check_interval",
        }
        options: dict[str, Any] = check_options(cls.type_name, config, allowed)
        return cls(**options)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __repr__(self) -> str:
        return f"RedisConnector({self.address!r}, prefix={self.prefix!r})"


#: connectors that made a client in this process (a forked child abandons them)
_WITH_CLIENTS: weakref.WeakSet[RedisConnector] = weakref.WeakSet()
#: clients inherited through fork: kept referenced forever, so that their
#: ``__del__`` (which resets the parent's pool under its lock) never runs
_ABANDONED: list[Any] = []


def _abandon(connector: RedisConnector) -> None:
    client, connector._client, connector._pid = connector._client, None, -1
    if client is None:
        return
    _ABANDONED.append(client)
    pool = getattr(client, "connection_pool", None)
    connections = [*getattr(pool, "_available_connections", ()),
                   *getattr(pool, "_in_use_connections", ())]
    for conn in connections:  # close this process's copies of the sockets, lock-free
        sock = getattr(conn, "_sock", None)
        if sock is None:
            continue
        try:
            os.close(sock.detach())
        except (OSError, ValueError):
            pass


def _abandon_inherited_clients() -> None:
    for connector in list(_WITH_CLIENTS):
        _abandon(connector)


class StoreEvictionWarning(UserWarning):
    """The Redis server may evict objects pxexec owns (its maxmemory-policy)."""


#: the largest object the connector writes (bounds a key's part count)
MAX_OBJECT = 1 << 40


def _evicts(policy: str | None, ttl: float | None) -> bool:
    if not policy:
        return False
    return policy.startswith("allkeys-") or (ttl is not None and policy.startswith("volatile-"))


class _HandshakeTimeoutSSLConnection(redis.SSLConnection):  # type: ignore[misc]
    """The TLS handshake is part of connecting: the connect timeout governs it.

    (redis-py runs it under the socket timeout, so ``rediss://`` against a plain
    server waited a minute.)
    """

    def _wrap_socket_with_ssl(self, sock: Any) -> Any:
        sock.settimeout(self.socket_connect_timeout)
        wrapped = super()._wrap_socket_with_ssl(sock)  # type: ignore[no-untyped-call]
        wrapped.settimeout(self.socket_timeout)
        return wrapped


def _split(views: list[memoryview], limit: int) -> Iterator[list[memoryview]]:
    """Cut a sequence of buffers into consecutive chunks of at most ``limit`` bytes."""
    chunk: list[memoryview] = []
    room = limit
    for view in views:
        while view.nbytes:
            take = view[:room]
            chunk.append(take)
            room -= take.nbytes
            view = view[take.nbytes :]
            if room == 0:
                yield chunk
                chunk, room = [], limit
    if chunk:
        yield chunk


def _read_bulk(sock: Any) -> memoryview | None:
    """Read one RESP2 bulk-string reply into a fresh writable buffer."""
    head = bytearray()
    while b"\r\n" not in head:
        data = sock.recv(65536)
        if not data:
            raise redis.ConnectionError("Connection closed by server.")
        head += data
    line, _, rest = bytes(head).partition(b"\r\n")
    if line.startswith(b"-"):
        raise redis.ResponseError(line[1:].decode(errors="replace"))
    if line in (b"$-1", b"_"):
        return None
    if not line.startswith(b"$"):
        raise redis.ConnectionError(f"Unexpected Redis reply {line[:40]!r}.")
    size = int(line[1:])
    view = alloc(size + 2)
    have = min(len(rest), size + 2)
    view[:have] = rest[:have]
    while have < size + 2:
        got = sock.recv_into(view[have:])
        if got == 0:
            raise redis.ConnectionError("Connection closed by server mid-reply.")
        have += got
    return view[:size]
