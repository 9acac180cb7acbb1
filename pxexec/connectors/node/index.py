"""The node's object index: one SQLite database every process of the node opens.

SQLite gives what a shared index needs across processes: transactions that are
atomic even when a process is SIGKILLed half-way (the journal rolls them back),
and locks that are POSIX file locks, released by the kernel when their holder dies,
so a crashed process never leaves a stuck lock. Each process opens the database
once (again after fork) and serializes its threads on one lock; work that must not
run where it was asked for (a finalizer firing inside a transaction) is deferred to
the end of the current transaction.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pxexec.connectors.node.files import check_index_file

__all__ = ["Index"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS segments(id INTEGER PRIMARY KEY AUTOINCREMENT, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS free(seg INTEGER NOT NULL, off INTEGER NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY(seg, off)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects(id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE,
    state TEXT NOT NULL, seg INTEGER, off INTEGER NOT NULL, alloc INTEGER NOT NULL,
    length INTEGER NOT NULL, pid INTEGER NOT NULL, start INTEGER NOT NULL, created REAL NOT NULL,
    path TEXT);
CREATE INDEX IF NOT EXISTS objects_state ON objects(state);
CREATE TABLE IF NOT EXISTS pins(obj INTEGER NOT NULL, pid INTEGER NOT NULL, start INTEGER NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY(obj, pid, start)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS owners(owner TEXT PRIMARY KEY, pid INTEGER NOT NULL,
    start INTEGER NOT NULL, beat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS holds(owner TEXT NOT NULL, key TEXT NOT NULL,
    PRIMARY KEY(owner, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_key ON holds(key);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

Job = Callable[[sqlite3.Connection], None]
#: connections inherited over fork: never closed in the child (the parent owns them)
_INHERITED: list[sqlite3.Connection] = []


class Index:
    """A per-process handle on the index database at ``path``.

    >>> import tempfile
    >>> index = Index(tempfile.mkdtemp() + "/index.sqlite")
    >>> with index.transaction() as db:
    ...     db.execute("SELECT COUNT(*) FROM objects").fetchone()
    (0,)
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._pid = -1
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._later: collections.deque[Job] = collections.deque()

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # first use, or a forked child
            if self._db is not None:
                _INHERITED.append(self._db)
            self._lock = threading.Lock()
            self._later = collections.deque()
            self._db = None
            self._pid = os.getpid()
        if self._db is None:
            check_index_file(self.path)
            db = sqlite3.connect(self.path, timeout=120, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")  # a process crash is safe; RAM is the medium
            db.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
            columns = {row[1] for row in db.execute("PRAGMA table_info(objects)")}
            if "path" not in columns:  # an index made before spill paths were recorded
                try:
                    db.execute("ALTER TABLE objects ADD COLUMN path TEXT")
                except sqlite3.OperationalError:  # another process added it meanwhile
                    pass
            self._db = db
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``) under this process's lock."""
        self._connection()
        with self._lock:
            db = self._connection()
            with _immediate(db):
                yield db
            self._drain(db)
        if self._later:
            self._try_drain()

    def defer(self, job: Job) -> None:
        """Run ``job`` in a transaction now if the index is free, else after the current one."""
        self._connection()
        self._later.append(job)
        self._try_drain()

    def _try_drain(self) -> None:
        if self._lock.acquire(blocking=False):
            try:
                self._drain(self._connection())
            finally:
                self._lock.release()

    def _drain(self, db: sqlite3.Connection) -> None:
        while self._later:
            job = self._later.popleft()
            with _immediate(db):
                job(db)

    def close(self) -> None:
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                self._drain(self._db)
                self._db.close()
            self._db = None


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (an I/O error)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
